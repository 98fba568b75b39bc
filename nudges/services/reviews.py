"""Opening review requests: a nudge that rules of the patient's groups send to review, and a
patient's report that a nudge is not right for them. Deciding on them is clinicians' work
(clinicians.services)."""

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction

from core.bulk import Part, object_rows
from nudges.decide import Snapshot
from nudges.models import Delivery, ReviewKind, ReviewRequest, ReviewState
from safety.models import GroupMembership, MedicalGroup, Rule
from safety.rules import Verdict


def rules_detail(codes: list[str], ruleset_version: int | None) -> list[dict[str, Any]]:
    """What a clinician needs to know of each matched rule, copied from the rule set."""
    if ruleset_version is None:  # no rule set: no rule matches (the query would find none)
        return []
    rules = Rule.objects.filter(rule_set__version=ruleset_version, code__in=codes).prefetch_related(
        "groups"
    )
    return [
        {
            "code": r.code,
            "action": r.action,
            "severity": r.severity,
            "groups": sorted(g.slug for g in r.groups.all()),
            "rationale": r.rationale,
            "source": r.source_title,
            "source_url": r.source_url,
            "verified": r.verified,
        }
        for r in sorted(rules, key=lambda r: r.code)
    ]


def review_deadline(now: dt.datetime) -> dt.datetime:
    """When a nudge waiting for review expires instead of being approved."""
    return now + dt.timedelta(hours=settings.NUDGE_REVIEW_DEADLINE_HOURS)


@transaction.atomic
def review_open(
    *, delivery: Delivery, verdict: Verdict, ruleset_version: int | None, now: dt.datetime
) -> ReviewRequest:
    """A request for approval before delivery, needing a decision for each group whose rules
    asked for review. The delivery waits (awaiting_review) until the review deadline, when it
    expires rather than being approved."""
    deadline = review_deadline(now)
    Delivery.objects.filter(pk=delivery.pk).update(expires_at=deadline)
    delivery.expires_at = deadline
    request = ReviewRequest.objects.create(
        delivery=delivery,
        patient_id=delivery.patient_id,
        kind=ReviewKind.BEFORE_DELIVERY,
        severity=verdict.severity or "",
        rules=rules_detail(list(verdict.rules), ruleset_version),
        ruleset_version=ruleset_version,
        deadline=deadline,
    )
    groups = list(verdict.groups)
    if not groups and verdict.error:
        # Fail-closed review (e.g. the patient's groups are unknown): any clinician may decide.
        request.rules = [
            {"code": verdict.error, "action": "review", "rationale": _ERRORS[verdict.error]}
        ]
        request.save(update_fields=["rules"])
    request.groups.set(MedicalGroup.objects.filter(slug__in=groups))
    return request


def review_rows(
    *,
    items: list[tuple[Any, Any, Verdict, Mapping[str, Any]]],
    snapshot: Snapshot,
    now: dt.datetime,
) -> list[Part]:
    """The review requests of new deliveries (a live round's, or a batch chunk's) as rows
    for core.bulk.insert_tables, with their links to the groups whose clinicians must decide:
    the same requests as review_open. Items are (delivery id, patient id, verdict, the
    patient's medical groups' keys by slug), the verdicts from `snapshot`'s rules; the
    deliveries must be written expiring at review_deadline(now). No query, unless a rule's
    detail is not yet kept on the snapshot."""
    if not items:
        return []
    deadline = review_deadline(now)
    codes = {code for _, _, verdict, _ in items for code in verdict.rules}
    detail = _snapshot_details(snapshot, codes)
    requests: list[ReviewRequest] = []
    links: list[Any] = []
    through = ReviewRequest.groups.through
    for delivery_id, patient_id, verdict, group_keys in items:
        rules = [detail[code] for code in sorted(set(verdict.rules)) if detail[code] is not None]
        if not verdict.groups and verdict.error:
            rules = [
                {"code": verdict.error, "action": "review", "rationale": _ERRORS[verdict.error]}
            ]
        request = ReviewRequest(
            created_at=now,
            delivery_id=delivery_id,
            patient_id=patient_id,
            kind=ReviewKind.BEFORE_DELIVERY,
            severity=verdict.severity or "",
            rules=rules,
            ruleset_version=snapshot.ruleset_version,
            deadline=deadline,
        )
        requests.append(request)
        # The verdict's groups are the patient's (verdicts are computed for their groups).
        links.extend(
            through(reviewrequest_id=request.pk, medicalgroup_id=group_keys[slug])
            for slug in verdict.groups
        )
    return [object_rows(objects) for objects in (requests, links) if objects]


def _snapshot_details(snapshot: Snapshot, codes: set[str]) -> dict[str, Any]:
    """rules_detail for these codes, read once per snapshot (its rules do not change) and
    kept on it; None for a code the rule set does not have."""
    known = snapshot.rule_details
    missing = sorted(codes - known.keys())
    if missing:
        found = {rule["code"]: rule for rule in rules_detail(missing, snapshot.ruleset_version)}
        for code in missing:
            known[code] = found.get(code)
    return {code: known[code] for code in codes}


_ERRORS = {
    "patient_groups_unknown": "The patient's medical groups could not be established.",
    "no_active_rule_set": "No rule set is active.",
    "evaluation_error": "The rules could not be evaluated for this nudge.",
}


@transaction.atomic
def feedback_review_open(*, delivery: Delivery, now: dt.datetime) -> ReviewRequest:
    """The patient said the nudge is not right for them: the clinicians of their groups get
    it to look at (no deadline)."""
    request, _ = ReviewRequest.objects.get_or_create(
        delivery=delivery,
        kind=ReviewKind.PATIENT_FEEDBACK,
        state=ReviewState.PENDING,
        defaults={
            "patient_id": delivery.patient_id,
            "severity": "",
            "rules": [],
            "ruleset_version": delivery.ruleset_version,
        },
    )
    request.groups.set(
        MedicalGroup.objects.filter(
            pk__in=GroupMembership.objects.filter(patient_id=delivery.patient_id).values("group_id")
        )
    )
    return request
