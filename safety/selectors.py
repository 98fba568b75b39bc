"""Reads on medical groups and rules."""

import datetime as dt

from patients.models import Patient
from safety.models import GroupMembership, Rule, RuleSet, RuleSetStatus, StandingApproval
from safety.rules import ACTIONS_BY_NAME, CompiledRules, RuleSpec


def group_slugs_for_patient(patient: Patient) -> frozenset[str]:
    """The medical groups the patient's coded record puts them in (derived memberships)."""
    return frozenset(
        GroupMembership.objects.filter(patient=patient).values_list("group__slug", flat=True)
    )


def groups_key(groups: frozenset[str]) -> str:
    """A stable text form of a set of groups (for standing approvals)."""
    return ",".join(sorted(groups))


def standing_approvals(
    patient: Patient,
    *,
    groups: frozenset[str] | None,
    ruleset_version: int | None,
    now: dt.datetime,
) -> dict[str, frozenset[str]]:
    """Template slug -> the medical groups whose clinicians approved it for this patient for
    a while, counting only approvals still valid: unexpired, given under the active rule set
    and for the patient's current groups."""
    if groups is None or ruleset_version is None:
        return {}
    found: dict[str, set[str]] = {}
    for slug, group in StandingApproval.objects.filter(
        patient=patient,
        ruleset_version=ruleset_version,
        groups_key=groups_key(groups),
        expires_at__gt=now,
    ).values_list("template_slug", "group__slug"):
        found.setdefault(slug, set()).add(group or "")
    return {slug: frozenset(g) for slug, g in found.items()}


def rule_specs(rule_set: RuleSet) -> list[RuleSpec]:
    rules = Rule.objects.filter(rule_set=rule_set).prefetch_related("groups")
    return [
        RuleSpec(
            code=r.code,
            groups=frozenset(g.slug for g in r.groups.all()),
            action=ACTIONS_BY_NAME[r.action],
            severity=r.severity,
            tags=frozenset(r.tags),
            categories=frozenset(r.categories),
            goals=frozenset(r.goals),
            intensities=frozenset(r.intensities),
            verified=r.verified,
            note_to_patient=r.note_to_patient,
            effective_from=r.effective_from,
            effective_to=r.effective_to,
        )
        for r in rules
    ]


def active_rule_set() -> RuleSet | None:
    return RuleSet.objects.filter(status=RuleSetStatus.ACTIVE).first()


def compiled_rules(rule_set: RuleSet | None, *, day: dt.date) -> CompiledRules | None:
    """The rules of `rule_set` in force on `day`; None when there is no rule set (which
    blocks everything: evaluation fails closed)."""
    if rule_set is None:
        return None
    return CompiledRules.build(rule_set.version, rule_specs(rule_set), day=day)
