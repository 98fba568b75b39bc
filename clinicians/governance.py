"""Clinical governance of the rules: what a proposed rule set would change (the dry run), and
its activation, which needs a second safety lead and re-checks every nudge not yet acted on
at once. It lives here, above both safety (the rules) and nudges (the deliveries), because
it changes both."""

import datetime as dt
from collections import Counter
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from clinicians.roles import SAFETY_LEAD
from core.errors import ApplicationError
from core.locks import safety_lock_exclusive
from nudges import lifecycle
from nudges.models import Delivery, DeliveryState
from nudges.services.catalogue import template_facts
from nudges.services.gate import gate_check, gate_enforce
from nudges.services.transitions import deliveries_block
from safety.models import GroupMembership, RuleSet
from safety.rules import Action, evaluate
from safety.selectors import active_rule_set, compiled_rules
from safety.services import ruleset_editors, ruleset_propose, ruleset_switch

OPEN_STATES = lifecycle.PENDING | lifecycle.RECALLABLE


def ruleset_dry_run(*, rule_set: RuleSet, now: dt.datetime | None = None) -> dict[str, Any]:
    """What activating `rule_set` would do to the nudges not yet acted on (pending ones and
    those in the app unopened): how many, and of how many patients, it would block or send to
    review that the active set does not, how many it would free, and which rules do it."""
    day = (now or timezone.now()).astimezone(dt.UTC).date()
    current = compiled_rules(active_rule_set(), day=day)
    proposed = compiled_rules(rule_set, day=day)
    deliveries = list(Delivery.objects.filter(state__in=OPEN_STATES).select_related("template"))
    groups: dict[Any, set[str]] = {}
    for pid, slug in GroupMembership.objects.filter(
        patient_id__in={d.patient_id for d in deliveries}
    ).values_list("patient_id", "group__slug"):
        groups.setdefault(pid, set()).add(slug)
    counts: Counter[str] = Counter()
    patients: dict[str, set[Any]] = {"block": set(), "review": set()}
    by_rule: Counter[str] = Counter()
    for delivery in deliveries:
        patient_groups = frozenset(groups.get(delivery.patient_id, ()))
        facts = template_facts(delivery.template)
        before = evaluate(groups=patient_groups, template=facts, rules=current).action
        after = evaluate(groups=patient_groups, template=facts, rules=proposed)
        if after.action > before and after.action >= Action.REVIEW:
            kind = "block" if after.action == Action.BLOCK else "review"
            counts[f"would_{kind}"] += 1
            patients[kind].add(delivery.patient_id)
            by_rule.update(after.rules)
        elif after.action < before and before >= Action.REVIEW:
            counts["would_free"] += 1
    return {
        "open_nudges": len(deliveries),
        "would_block": counts["would_block"],
        "would_review": counts["would_review"],
        "would_free": counts["would_free"],
        "patients_blocked": len(patients["block"]),
        "patients_reviewed": len(patients["review"]),
        "by_rule": dict(by_rule.most_common()),
        "computed_at": timezone.now().isoformat(),
    }


def _require_safety_lead(user: User) -> None:
    if not (user.is_active and user.groups.filter(name=SAFETY_LEAD).exists()):
        raise ApplicationError(
            "Only a safety lead may do this.", code="permission_denied", status=403
        )


def ruleset_submit(*, rule_set: RuleSet, by: User) -> RuleSet:
    """A safety lead proposes a draft for activation, with its dry run recorded."""
    _require_safety_lead(by)
    return ruleset_propose(rule_set=rule_set, by=by, dry_run=ruleset_dry_run(rule_set=rule_set))


def ruleset_activate(*, rule_set: RuleSet, by: User) -> dict[str, int]:
    """A second safety lead signs a proposed set off: it becomes active and every nudge not
    yet acted on is re-checked at once, under the exclusive safety lock: those the new rules
    block are blocked (recalled from the app if already there), pending ones that now need a
    review go to review, and standing approvals given under the old set lapse (they name its
    version). The person who created, edited or proposed the set may not sign it off."""
    _require_safety_lead(by)
    now = timezone.now()
    with transaction.atomic():
        safety_lock_exclusive()
        rule_set = RuleSet.objects.select_for_update().get(pk=rule_set.pk)  # not the caller's copy
        if by.pk in ruleset_editors(rule_set):
            raise ApplicationError(
                "A rule set must be signed off by a safety lead who did not write or propose it.",
                code="second_person_required",
                status=403,
            )
        ruleset_switch(rule_set=rule_set, by=by)
        return _recheck_open_nudges(now)


def _recheck_open_nudges(now: dt.datetime) -> dict[str, int]:
    deliveries = list(Delivery.objects.filter(state__in=OPEN_STATES).select_related("patient"))
    results = gate_check(deliveries, now=now)
    counts = {"checked": len(deliveries), "blocked": 0, "to_review": 0}
    recalled = []
    for delivery in deliveries:
        result = results[delivery.pk]
        if result.passes:
            continue
        if delivery.state in lifecycle.RECALLABLE:
            recalled.append(delivery.pk)  # already in the app: recall rather than review
        elif result.action == "review" and delivery.state == DeliveryState.AWAITING_REVIEW:
            continue  # stays in the queue; the approval will be checked against the new set
        else:
            gate_enforce(delivery, result, actor="ruleset_activation", now=now)
            counts["blocked" if result.action == "block" else "to_review"] += 1
    counts["blocked"] += deliveries_block(
        delivery_ids=recalled,
        from_states=lifecycle.RECALLABLE,
        actor="ruleset_activation",
        reason="recalled",
    )
    return counts
