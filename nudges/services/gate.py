"""The safety gate. Every move that brings a nudge closer to the patient (held -> ready, an
approval, ready -> delivered by push or by the app fetching it, feedback on a ready nudge)
re-checks the nudge in its own transaction, under the shared safety lock (core.locks),
against what holds at that moment: the active rule set and the patient's current medical
groups, the template's stop flag, and the patient's declines. A rule change or an emergency
stop that lands in between wins: the nudge is blocked, or goes (back) to review."""

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.locks import safety_lock_shared
from nudges.decide import TemplateInfo
from nudges.models import (
    Delivery,
    DeliveryState,
    ReviewKind,
    ReviewRequest,
    ReviewState,
    Template,
    TemplateDecline,
    TemplateStatus,
)
from nudges.services.reviews import review_open
from nudges.services.transitions import delivery_move
from safety.models import GroupMembership, RuleSet, RuleSetStatus, StandingApproval
from safety.rules import Action, CompiledRules, Verdict, approval_covers, evaluate
from safety.selectors import compiled_rules, groups_key


@dataclass(frozen=True)
class GateResult:
    action: str  # pass, block, review
    reason: str  # why not pass: template_stopped, declined_by_patient, rule_block, rule_review
    verdict: Verdict | None
    ruleset_version: int | None

    @property
    def passes(self) -> bool:
        return self.action == "pass"


def gate_check(
    deliveries: list[Delivery], *, now: dt.datetime | None = None
) -> dict[Any, GateResult]:
    """The gate's result for each delivery (by pk). Must run inside the transaction that then
    moves the deliveries: it takes the shared safety lock, held until that commits."""
    if not deliveries:
        return {}
    safety_lock_shared()
    now = now or timezone.now()
    active = (
        RuleSet.objects.filter(status=RuleSetStatus.ACTIVE).values_list("pk", "version").first()
    )
    version = active[1] if active else None
    rules = _rules(active[0], now.astimezone(dt.UTC).date()) if active else None
    templates = {
        t.pk: t for t in Template.objects.filter(pk__in={d.template_id for d in deliveries})
    }
    patients = {d.patient_id for d in deliveries}
    groups: dict[Any, set[str]] = {p: set() for p in patients}
    for pid, slug in GroupMembership.objects.filter(patient_id__in=patients).values_list(
        "patient_id", "group__slug"
    ):
        groups[pid].add(slug)
    declined = set(
        TemplateDecline.objects.filter(patient_id__in=patients).values_list("patient_id", "slug")
    )
    approved = _approved_reviews(deliveries, version)
    standing = _standing_approvals(patients, version, now)
    results = {}
    for delivery in deliveries:
        template = templates[delivery.template_id]
        patient_groups = frozenset(groups[delivery.patient_id])
        results[delivery.pk] = _judge(
            template,
            patient_groups,
            rules,
            version,
            declined=(delivery.patient_id, template.slug) in declined,
            approved_groups=approved.get(delivery.pk, set()),
            standing=standing.get(
                (delivery.patient_id, template.slug, groups_key(patient_groups)), set()
            ),
        )
    return results


def _judge(
    template: Template,
    groups: frozenset[str],
    rules: CompiledRules | None,
    version: int | None,
    *,
    declined: bool,
    approved_groups: set[str],
    standing: set[str],
) -> GateResult:
    if template.status != TemplateStatus.ACTIVE:
        return GateResult("block", "template_stopped", None, version)
    if declined:
        return GateResult("block", "declined_by_patient", None, version)
    verdict = evaluate(groups=groups, template=template_facts(template), rules=rules)
    if verdict.action == Action.BLOCK:
        return GateResult("block", "rule_block", verdict, version)
    if verdict.action == Action.REVIEW:
        covered = approval_covers(verdict.groups, frozenset(approved_groups | standing))
        if not covered:
            return GateResult("review", "rule_review", verdict, version)
    return GateResult("pass", "", verdict, version)


def template_facts(template: Template) -> TemplateInfo:
    return TemplateInfo(
        id=template.pk,
        slug=template.slug,
        version=template.version,
        goal=template.goal,
        category=template.category,
        intensity=template.intensity,
        tags=frozenset(template.tags),
    )


@functools.lru_cache(maxsize=16)
def _rules(rule_set_id: Any, day: dt.date) -> CompiledRules | None:
    """An active rule set never changes, so its compiled form is kept. The key is the set's
    primary key, never reused, unlike its version number (a rolled-back activation can leave
    a number that the next draft takes again)."""
    return compiled_rules(RuleSet.objects.filter(pk=rule_set_id).first(), day=day)


def _approved_reviews(deliveries: list[Delivery], version: int | None) -> dict[Any, set[str]]:
    """For each delivery, the groups whose clinicians approved it under this rule set."""
    out: dict[Any, set[str]] = {}
    requests = ReviewRequest.objects.filter(
        delivery__in=deliveries,
        kind=ReviewKind.BEFORE_DELIVERY,
        state=ReviewState.APPROVED,
        ruleset_version=version,
    ).prefetch_related("groups")
    for request in requests:
        groups = {g.slug for g in request.groups.all()} or {""}
        out.setdefault(request.delivery_id, set()).update(groups)
    return out


def _standing_approvals(
    patients: set[Any], version: int | None, now: dt.datetime
) -> dict[tuple, set[str]]:
    """(patient, template slug, groups key) -> the groups of the standing approvals still
    valid: unexpired and given under the active rule set (the groups key is compared by the
    caller)."""
    out: dict[tuple, set[str]] = {}
    for patient, slug, key, group in StandingApproval.objects.filter(
        patient_id__in=patients, ruleset_version=version, expires_at__gt=now
    ).values_list("patient_id", "template_slug", "groups_key", "group__slug"):
        out.setdefault((patient, slug, key), set()).add(group or "")
    return out


def gate_enforce(delivery: Delivery, result: GateResult, *, actor: str, now: dt.datetime) -> bool:
    """Act on a result that does not pass: block the delivery, or send it (back) to review.
    Returns whether the delivery passed."""
    if result.passes:
        return True
    if result.action == "block":
        delivery_move(
            delivery=delivery,
            to_state=DeliveryState.BLOCKED,
            actor=actor,
            reason=result.reason,
            closed_at=now,
        )
        ReviewRequest.objects.filter(delivery=delivery, state=ReviewState.PENDING).update(
            state=ReviewState.WITHDRAWN, closed_at=now, updated_at=now
        )
        return False
    assert result.verdict is not None
    with transaction.atomic():
        delivery_move(
            delivery=delivery,
            to_state=DeliveryState.AWAITING_REVIEW,
            actor=actor,
            reason=result.reason,
            ruleset_version=result.ruleset_version,
            safety_action=result.verdict.name,
            safety_rules=list(result.verdict.rules),
        )
        review_open(
            delivery=delivery,
            verdict=result.verdict,
            ruleset_version=result.ruleset_version,
            now=now,
        )
    return False
