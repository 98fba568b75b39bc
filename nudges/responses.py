"""The patient API's hot responses (a decision, the inbox) written out by hand: the same JSON
as nudges.serializers.DecisionSerializer and NudgeSerializer, which stay the documented
schema (tests/test_responses.py holds the two to the same output), at a fraction of DRF's
per-field cost."""

from typing import Any

from django.utils import timezone

from nudges import lifecycle
from nudges.models import Decision, Delivery
from nudges.serializers import REASON_MESSAGES, STATE_MESSAGES
from nudges.services.catalogue import template_text


def _time(value: Any) -> str | None:
    """As DRF's DateTimeField writes an aware datetime with the default ISO 8601 format: in
    the current time zone, UTC as "Z"."""
    if value is None:
        return None
    text = value.astimezone(timezone.get_current_timezone()).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def nudge_body(delivery: Delivery) -> dict[str, Any]:
    if Delivery.template.is_cached(delivery):
        t = delivery.template
        title, body, goal, category = t.title, t.body, t.goal, t.category
    else:
        title, body, goal, category = template_text(delivery.template_id)
    return {
        "id": str(delivery.id),
        "title": title,
        "body": body,
        "goal": goal,
        "category": category,
        "state": str(delivery.state),
        "why": delivery.why,
        "note": delivery.note,
        "created_at": _time(delivery.created_at),
        "due_at": _time(delivery.due_at),
        "expires_at": _time(delivery.expires_at),
    }


def decision_body(decision: Decision) -> dict[str, Any]:
    delivery = getattr(decision, "delivery", None) if decision.template_id else None
    if delivery is not None and delivery.state in STATE_MESSAGES:
        message = STATE_MESSAGES[delivery.state]
    else:
        message = REASON_MESSAGES.get(decision.reason, decision.reason)
    visible = delivery is not None and delivery.state in lifecycle.VISIBLE
    point = decision.decision_point
    return {
        "decision_id": str(decision.id),
        "moment": _time(point.moment),
        "trigger": str(point.trigger),
        "outcome": str(decision.outcome),
        "reason": decision.reason,
        "message": message,
        "nudge": nudge_body(delivery) if visible else None,  # type: ignore[arg-type]
        "policy_name": decision.policy_name,
        "policy_version": decision.policy_version,
        "propensity": None if decision.propensity is None else float(decision.propensity),
        "receipt": decision.receipt,
    }
