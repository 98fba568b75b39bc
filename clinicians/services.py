"""Clinicians' decisions on the review queue. Each decision is for one medical group of a
request; the request's row is locked while deciding, so when two clinicians decide at once one
wins and the other is told (409), and the unique (request, group) constraint backs that up."""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditAction
from audit.services import record
from clinicians.access import covered_groups, review_requests_for_clinician
from clinicians.models import ReasonCode, ReviewDecision, Verdict
from core.errors import ApplicationError, not_found
from nudges.models import DeliveryState, ReviewKind, ReviewRequest, ReviewState
from nudges.services.deliveries import delivery_after_review
from nudges.services.transitions import delivery_move
from safety.models import StandingApproval
from safety.selectors import active_rule_set, group_slugs_for_patient, groups_key

VERDICTS = {
    ReviewKind.BEFORE_DELIVERY: {Verdict.APPROVE, Verdict.REJECT},
    ReviewKind.PATIENT_FEEDBACK: {Verdict.ACKNOWLEDGE},
}
REASONS = {
    Verdict.APPROVE: {ReasonCode.APPROPRIATE, ReasonCode.MONITORED},
    Verdict.REJECT: {
        ReasonCode.CONTRAINDICATED,
        ReasonCode.INSUFFICIENT_INFO,
        ReasonCode.WRONG_TIMING,
    },
    Verdict.ACKNOWLEDGE: {ReasonCode.FEEDBACK_NOTED, ReasonCode.TEMPLATE_ISSUE},
}
MAX_STANDING_DAYS = 90


@dataclass(frozen=True)
class DecisionResult:
    request_id: Any
    groups: tuple[str, ...]  # the groups decided by this call
    request_state: str
    delivery_state: str


def review_decide(
    *,
    clinician: User,
    request_id: Any,
    verdict: str,
    reason: str,
    comment: str = "",
    standing_days: int | None = None,
    now: dt.datetime | None = None,
) -> DecisionResult:
    """Decide a review request for every group of it that the clinician covers and nobody
    has decided yet. A request the clinician may not see is not found (404); one already
    closed, or with nothing left for this clinician to decide, is a 409. A rejection blocks
    the nudge at once; when every group has approved, the nudge moves on through the safety
    gate. An approval may also stand for `standing_days` days for this template and patient;
    it lapses when another rule set is activated or the patient's groups change."""
    now = now or timezone.now()
    _check_choice(verdict, reason, comment, standing_days)
    try:
        with transaction.atomic():
            return _decide(clinician, request_id, verdict, reason, comment, standing_days, now)
    except IntegrityError:
        raise _already_decided() from None


def reviews_decide(
    *,
    clinician: User,
    request_ids: Sequence[Any],
    verdict: str,
    reason: str,
    comment: str = "",
) -> list[DecisionResult]:
    """The same decision on several requests, all or nothing: the clinician must be able to
    see each of them (else 404) and each must still need their decision (else 409)."""
    now = timezone.now()
    _check_choice(verdict, reason, comment, None)
    try:
        with transaction.atomic():
            return [
                _decide(clinician, pk, verdict, reason, comment, None, now)
                for pk in sorted(request_ids, key=str)  # a fixed order for the row locks
            ]
    except IntegrityError:
        raise _already_decided() from None


def _check_choice(verdict: str, reason: str, comment: str, standing_days: int | None) -> None:
    if verdict not in Verdict.values:
        raise ApplicationError("Unknown decision.", fields={"verdict": "unknown"})
    if reason not in {r.value for r in REASONS[Verdict(verdict)]}:
        raise ApplicationError(
            "This reason does not go with this decision.", fields={"reason": "not allowed"}
        )
    if len(comment) > 500:
        raise ApplicationError("The comment is too long.", fields={"comment": "max 500"})
    if standing_days is not None and (
        verdict != Verdict.APPROVE or not 1 <= standing_days <= MAX_STANDING_DAYS
    ):
        raise ApplicationError(
            f"A standing approval lasts 1 to {MAX_STANDING_DAYS} days and needs an approval.",
            fields={"standing_days": "invalid"},
        )


def _already_decided() -> ApplicationError:
    return ApplicationError(
        "Someone else decided this item first; reload it.", code="conflict", status=409
    )


def _decide(
    clinician: User,
    request_id: Any,
    verdict: str,
    reason: str,
    comment: str,
    standing_days: int | None,
    now: dt.datetime,
) -> DecisionResult:
    request = (
        review_requests_for_clinician(clinician)
        .select_for_update()
        .select_related("delivery__template", "delivery__patient")
        .filter(pk=request_id)
        .first()
    )
    if request is None:
        raise not_found("review item")
    if verdict not in VERDICTS[ReviewKind(request.kind)]:
        raise ApplicationError(
            "This decision does not apply to this kind of item.", fields={"verdict": "not allowed"}
        )
    if request.state != ReviewState.PENDING:
        raise _already_decided()
    mine = _groups_to_decide(clinician, request)
    for group in mine:
        ReviewDecision.objects.create(
            request=request,
            group=group,
            clinician=clinician,
            verdict=verdict,
            reason=reason,
            comment=comment,
            ruleset_version=request.ruleset_version,
            standing_days=standing_days,
        )
    delivery_state = _apply(request, verdict, now)
    detail = {"review": str(request.pk), "verdict": verdict, "reason": reason}
    record(AuditAction.REVIEW_DECISION, clinician, request.delivery.patient, detail)
    if standing_days:
        _standing_approvals(request, clinician, mine, standing_days, now)
    return DecisionResult(
        request_id=request.pk,
        groups=tuple(g.slug for g in mine if g is not None),
        request_state=request.state,
        delivery_state=delivery_state,
    )


def _groups_to_decide(clinician: User, request: ReviewRequest) -> list[Any]:
    required = list(request.groups.all())
    decided = set(request.decisions.values_list("group_id", flat=True))
    if not required:
        if None in decided:
            raise _already_decided()
        return [None]
    covered = set(covered_groups(clinician).values_list("pk", flat=True))
    mine = [g for g in required if g.pk in covered and g.pk not in decided]
    if not mine:
        raise _already_decided()
    return mine


def _apply(request: ReviewRequest, verdict: str, now: dt.datetime) -> str:
    delivery = request.delivery
    if verdict == Verdict.ACKNOWLEDGE:
        _close(request, ReviewState.ACKNOWLEDGED, now)
        return delivery.state
    if verdict == Verdict.REJECT:
        _close(request, ReviewState.REJECTED, now)
        if delivery.state == DeliveryState.AWAITING_REVIEW:
            delivery_move(
                delivery=delivery,
                to_state=DeliveryState.BLOCKED,
                actor="clinician",
                reason="rejected",
                closed_at=now,
            )
        return delivery.state
    required = set(request.groups.values_list("pk", flat=True))
    approved = set(
        request.decisions.filter(verdict=Verdict.APPROVE).values_list("group_id", flat=True)
    )
    if required and not required <= approved:
        return delivery.state  # waiting for the other groups' clinicians
    _close(request, ReviewState.APPROVED, now)
    if delivery.state != DeliveryState.AWAITING_REVIEW:
        return delivery.state
    return delivery_after_review(delivery=delivery, now=now)


def _close(request: ReviewRequest, state: str, now: dt.datetime) -> None:
    request.state = state
    request.closed_at = now
    request.save(update_fields=["state", "closed_at", "updated_at"])


def _standing_approvals(
    request: ReviewRequest,
    clinician: User,
    groups: list[Any],
    days: int,
    now: dt.datetime,
) -> None:
    """One per group this clinician decided; the gate needs one from each group."""
    active = active_rule_set()
    if active is None:
        return
    patient = request.delivery.patient
    key = groups_key(group_slugs_for_patient(patient))
    StandingApproval.objects.bulk_create(
        StandingApproval(
            patient=patient,
            template_slug=request.delivery.template.slug,
            group=group,
            granted_by=clinician,
            ruleset_version=active.version,
            groups_key=key,
            expires_at=now + dt.timedelta(days=days),
        )
        for group in groups
    )
