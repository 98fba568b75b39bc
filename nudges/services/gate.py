"""The safety gate. Every move that brings a nudge closer to the patient (held -> ready, an
approval, ready -> delivered by push or by the app fetching it, feedback on a ready nudge)
re-checks the nudge in its own transaction, under the shared safety lock (core.locks),
against what holds at that moment: the active rule set and the patient's current medical
groups, the template's stop flag, and the patient's declines. A rule change or an emergency
stop that lands in between wins: the nudge is blocked, or goes (back) to review."""

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core import raw
from core.bulk import DbFormat
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
from nudges.services.catalogue import signed_versions
from nudges.services.reviews import review_open
from nudges.services.transitions import delivery_move
from safety.models import GroupMembership, MedicalGroup, RuleSet, RuleSetStatus, StandingApproval
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
    safety_lock_shared()  # before the reads: they must see a stop that committed meanwhile
    now = now or timezone.now()
    facts = _gate_facts(deliveries, now)
    rules = _rules(facts.rule_set_id, now.astimezone(dt.UTC).date()) if facts.rule_set_id else None
    versions = signed_versions(facts.status)  # the status itself is read fresh, in the facts
    results = {}
    for delivery in deliveries:
        template = versions[delivery.template_id].facts
        patient_groups = frozenset(facts.groups[delivery.patient_id])
        results[delivery.pk] = _judge(
            template,
            facts.status[delivery.template_id],
            patient_groups,
            rules,
            facts.version,
            declined=(delivery.patient_id, template.slug) in facts.declined,
            approved_groups=facts.approved.get(delivery.pk, set()),
            standing=facts.standing.get(
                (delivery.patient_id, template.slug, groups_key(patient_groups)), set()
            ),
        )
    return results


def _judge(
    template: TemplateInfo,
    status: str,
    groups: frozenset[str],
    rules: CompiledRules | None,
    version: int | None,
    *,
    declined: bool,
    approved_groups: set[str],
    standing: set[str],
) -> GateResult:
    if status != TemplateStatus.ACTIVE:
        return GateResult("block", "template_stopped", None, version)
    if declined:
        return GateResult("block", "declined_by_patient", None, version)
    verdict = evaluate(groups=groups, template=template, rules=rules)
    if verdict.action == Action.BLOCK:
        return GateResult("block", "rule_block", verdict, version)
    if verdict.action == Action.REVIEW:
        covered = approval_covers(verdict.groups, frozenset(approved_groups | standing))
        if not covered:
            return GateResult("review", "rule_review", verdict, version)
    return GateResult("pass", "", verdict, version)


@functools.lru_cache(maxsize=16)
def _rules(rule_set_id: Any, day: dt.date) -> CompiledRules | None:
    """An active rule set never changes, so its compiled form is kept. The key is the set's
    primary key, never reused, unlike its version number (a rolled-back activation can leave
    a number that the next draft takes again)."""
    return compiled_rules(RuleSet.objects.filter(pk=rule_set_id).first(), day=day)


@dataclass
class _GateFacts:
    rule_set_id: Any  # the active rule set, None when there is none
    version: int | None
    groups: dict[Any, set[str]]  # patient -> the slugs of their medical groups
    declined: set[tuple[Any, str]]  # (patient, template slug)
    approved: dict[Any, set[str]]  # delivery -> groups whose clinicians approved it ("": any)
    standing: dict[tuple, set[str]]  # (patient, template slug, groups key) -> groups
    status: dict[Any, str]  # template -> its status now


def _gate_facts(deliveries: list[Delivery], now: dt.datetime) -> _GateFacts:
    """What the gate judges against, in one query (a consistent view): the active rule set,
    the patients' groups and declines, the approvals of these deliveries' review requests
    under the active rule set (a request without groups counts as "", any group), the
    patients' standing approvals under it that have not expired, and the status of the
    deliveries' templates."""
    db = DbFormat()
    patients = {d.patient_id for d in deliveries}
    out = _GateFacts(None, None, {p: set() for p in patients}, set(), {}, {}, {})
    p_ids = [db.id(p) for p in patients]
    d_ids = [db.id(d.pk) for d in deliveries]
    t_ids = [db.id(t) for t in {d.template_id for d in deliveries}]
    sql = _gate_query(len(p_ids), len(d_ids), len(t_ids))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*p_ids, *p_ids, *d_ids, *p_ids, db.datetime(now), *t_ids])
        rows = cursor.fetchall()
    # Every column is text; keys come back as the database writes a UUID as text.
    for kind, key, name, extra, more in rows:
        pk = uuid.UUID(key)
        if kind == "r":
            out.rule_set_id, out.version = pk, int(more)
        elif kind == "m":
            out.groups[pk].add(name)
        elif kind == "d":
            out.declined.add((pk, name))
        elif kind == "v":
            out.approved.setdefault(pk, set()).add(name or "")
        elif kind == "t":
            out.status[pk] = name
        else:
            out.standing.setdefault((pk, name, extra), set()).add(more or "")
    return out


@functools.lru_cache(maxsize=64)
def _gate_query(patients: int, deliveries: int, templates: int) -> str:
    """The gate's facts as one UNION of text columns (kind, key, name, extra, more): the
    active rule set (r: its id, -, -, its version), memberships (m: patient, group), declines
    (d: patient, slug), approved review groups (v: delivery, group), valid standing
    approvals (a: patient, slug, groups key, group) and template statuses (t: template,
    status). Parameters: the patient ids twice, the delivery ids, the patient ids, now, the
    template ids. Cached per size."""
    q = connection.ops.quote_name

    def table(model: Any) -> str:
        return q(model._meta.db_table)

    p_ids = raw.marks(patients)
    d_ids = raw.marks(deliveries)
    t_ids = raw.marks(templates)
    rule_set, member, group = table(RuleSet), table(GroupMembership), table(MedicalGroup)
    decline, request = table(TemplateDecline), table(ReviewRequest)
    approval, links = table(StandingApproval), table(ReviewRequest.groups.through)
    template = table(Template)
    text, in_force = "TEXT", RuleSetStatus.ACTIVE.value
    active = f"(SELECT version FROM {rule_set} WHERE status = '{in_force}')"  # noqa: S608
    # Names from the models' metadata and fixed choices; every value is a bound parameter.
    return f"""
        SELECT 'r', CAST(id AS {text}), NULL, NULL, CAST(version AS {text}) FROM {rule_set}
         WHERE status = '{in_force}'
        UNION ALL
        SELECT 'm', CAST(m.patient_id AS {text}), g.slug, NULL, NULL
          FROM {member} m JOIN {group} g ON g.id = m.group_id WHERE m.patient_id IN ({p_ids})
        UNION ALL
        SELECT 'd', CAST(patient_id AS {text}), slug, NULL, NULL FROM {decline}
         WHERE patient_id IN ({p_ids})
        UNION ALL
        SELECT 'v', CAST(r.delivery_id AS {text}), g.slug, NULL, NULL
          FROM {request} r LEFT JOIN {links} l ON l.reviewrequest_id = r.id
          LEFT JOIN {group} g ON g.id = l.medicalgroup_id
         WHERE r.delivery_id IN ({d_ids}) AND r.kind = '{ReviewKind.BEFORE_DELIVERY.value}'
           AND r.state = '{ReviewState.APPROVED.value}' AND r.ruleset_version = {active}
        UNION ALL
        SELECT 'a', CAST(a.patient_id AS {text}), a.template_slug, a.groups_key, g.slug
          FROM {approval} a LEFT JOIN {group} g ON g.id = a.group_id
         WHERE a.patient_id IN ({p_ids}) AND a.ruleset_version = {active} AND a.expires_at > %s
        UNION ALL
        SELECT 't', CAST(id AS {text}), status, NULL, NULL FROM {template} WHERE id IN ({t_ids})
    """  # noqa: S608


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
