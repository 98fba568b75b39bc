"""Writes on medical groups and contraindication rules. Rules change only inside a draft rule
set; activating a proposed set is clinicians.governance's job (it needs a second person and
re-checks pending deliveries), which calls ruleset_switch here."""

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from core.errors import ApplicationError
from core.stamps import stamp_bump
from patients.codes import is_atc, is_icd10cm
from patients.models import Condition, Medication, Patient
from safety.groups import groups_for_codes
from safety.models import (
    GroupMembership,
    MedicalGroup,
    Rule,
    RuleRevision,
    RuleSet,
    RuleSetStatus,
)
from safety.rules import RuleFormatError, rule_fields, validate_rule

GROUPS_FILE = Path(__file__).parent / "data" / "medical_groups.json"
RULES_FILE = Path(__file__).parent / "data" / "rules.json"
RULES_STAMP = "rules"
RULE_FIELDS = (
    "tags",
    "categories",
    "goals",
    "intensities",
    "action",
    "severity",
    "rationale",
    "note_to_patient",
    "source_title",
    "source_publisher",
    "source_url",
    "source_summary",
    "verified",
    "effective_from",
    "effective_to",
)


@transaction.atomic
def medical_groups_load(*, path: Path = GROUPS_FILE) -> int:
    """Create or update the medical groups defined in the reviewed file; returns how many.
    Every prefix must be a valid ICD-10-CM code or category, or an ATC code of any level."""
    definitions = json.loads(path.read_text())
    for item in definitions:
        bad = [p for p in item["icd10_prefixes"] if not is_icd10cm(p)] + [
            p for p in item["atc_prefixes"] if not is_atc(p)
        ]
        if bad:
            raise ApplicationError(
                f"Medical group {item['slug']}: invalid code prefixes {bad}.",
                fields={"prefixes": "invalid"},
            )
        MedicalGroup.objects.update_or_create(
            slug=item["slug"],
            defaults={
                "name": item["name"],
                "icd10_prefixes": item["icd10_prefixes"],
                "atc_prefixes": item["atc_prefixes"],
            },
        )
    return len(definitions)


# Rules -------------------------------------------------------------------------------------


def _parsed(record: dict[str, Any]) -> dict[str, Any]:
    try:
        return rule_fields(record)
    except RuleFormatError as error:
        code = record.get("id", "") or "(no id)"
        raise ApplicationError(
            f"Rule {code}: {error}", code="invalid_rule", fields={error.field: str(error)}
        ) from None


def _check_rule(code: str, groups: Sequence[str], fields: dict[str, Any]) -> None:
    known = MedicalGroup.objects.values_list("slug", flat=True)
    errors = validate_rule(
        groups=groups,
        known_groups=known,
        tags=fields["tags"],
        categories=fields["categories"],
        goals=fields["goals"],
        intensities=fields["intensities"],
        action=fields["action"],
        severity=fields["severity"],
        note_to_patient=fields["note_to_patient"],
        effective_from=fields["effective_from"],
        effective_to=fields["effective_to"],
        verified=fields["verified"],
        source_url=fields["source_url"],
    )
    if not code or len(code) > 40:
        errors["code"] = "A rule needs an id of at most 40 characters."
    if not str(fields["rationale"]).strip():
        errors["rationale"] = "A rule needs its rationale."
    if errors:
        first = next(iter(errors))
        raise ApplicationError(
            f"Rule {code or '(no id)'}: {errors[first]}", code="invalid_rule", fields=errors
        )


def _snapshot(rule: Rule) -> dict[str, Any]:
    out = {name: getattr(rule, name) for name in RULE_FIELDS}
    out["effective_from"] = str(rule.effective_from)
    out["effective_to"] = str(rule.effective_to) if rule.effective_to else None
    out["groups"] = sorted(rule.groups.values_list("slug", flat=True))
    return out


def _next_version() -> int:
    return (RuleSet.objects.aggregate(v=Max("version"))["v"] or 0) + 1


@transaction.atomic
def ruleset_load_file(*, path: Path = RULES_FILE, by: User | None = None) -> RuleSet | None:
    """Load the reviewed catalogue file. The first load becomes the active rule set (the file's
    review is its sign-off). Later, a file that differs from the active set's file becomes a
    new draft, to be proposed and signed off like any change; an unchanged file does nothing.
    Every rule is validated; one bad rule refuses the whole file."""
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    active = RuleSet.objects.filter(status=RuleSetStatus.ACTIVE).first()
    if active is not None and active.source_file_sha256 == digest:
        return None
    records = json.loads(raw)["rules"]
    codes = [r.get("id", "") for r in records]
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        raise ApplicationError(
            f"Rule ids must be unique; repeated: {', '.join(repeated)}.",
            code="invalid_rule",
            fields={"id": f"duplicate: {', '.join(repeated)}"},
        )
    status = RuleSetStatus.DRAFT if active else RuleSetStatus.ACTIVE
    rule_set = RuleSet.objects.create(
        version=_next_version(),
        status=status,
        note=f"Loaded from {path.name}",
        source_file_sha256=digest,
        created_by=by,
        activated_at=timezone.now() if status == RuleSetStatus.ACTIVE else None,
    )
    for record in records:
        _rule_create(rule_set, record.get("id", ""), record.get("groups", []), _parsed(record), by)
    if status == RuleSetStatus.ACTIVE:
        stamp_bump(RULES_STAMP)
    return rule_set


def _rule_create(
    rule_set: RuleSet, code: str, groups: Sequence[str], fields: dict[str, Any], by: User | None
) -> Rule:
    _check_rule(code, groups, fields)
    rule = Rule.objects.create(rule_set=rule_set, code=code, **fields)
    rule.groups.set(MedicalGroup.objects.filter(slug__in=groups))
    RuleRevision.objects.create(
        rule_set=rule_set, code=code, changed_by=by, change="created", after=_snapshot(rule)
    )
    return rule


@transaction.atomic
def ruleset_draft_create(*, by: User) -> RuleSet:
    """A new draft that starts as a copy of the active rule set. One draft at a time."""
    if RuleSet.objects.filter(status__in=[RuleSetStatus.DRAFT, RuleSetStatus.PROPOSED]).exists():
        raise ApplicationError(
            "A draft or proposed rule set already exists; finish or discard it first.",
            code="conflict",
            status=409,
        )
    active = RuleSet.objects.filter(status=RuleSetStatus.ACTIVE).first()
    draft = RuleSet.objects.create(
        version=_next_version(), status=RuleSetStatus.DRAFT, created_by=by, note="Draft"
    )
    if active is not None:
        for rule in active.rules.prefetch_related("groups"):
            groups = [g.slug for g in rule.groups.all()]
            copy = Rule.objects.create(
                rule_set=draft,
                code=rule.code,
                revision=rule.revision,
                **{name: getattr(rule, name) for name in RULE_FIELDS},
            )
            copy.groups.set(MedicalGroup.objects.filter(slug__in=groups))
    return draft


def _editable(rule_set: RuleSet) -> None:
    if rule_set.status != RuleSetStatus.DRAFT:
        raise ApplicationError(
            "Only a draft rule set can be edited; create a draft from the active set.",
            code="not_editable",
            status=409,
        )


@transaction.atomic
def rule_save(
    *,
    rule_set: RuleSet,
    code: str,
    groups: Sequence[str],
    fields: dict[str, Any],
    by: User,
) -> Rule:
    """Create or change one rule of a draft, validated, with its revision recorded."""
    rule_set = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
    _editable(rule_set)
    existing = Rule.objects.filter(rule_set=rule_set, code=code).first()
    if existing is None:
        return _rule_create(rule_set, code, groups, fields, by)
    _check_rule(code, groups, fields)
    before = _snapshot(existing)
    for name, value in fields.items():
        setattr(existing, name, value)
    existing.revision += 1
    existing.save()
    existing.groups.set(MedicalGroup.objects.filter(slug__in=groups))
    after = _snapshot(existing)
    if after != before:
        RuleRevision.objects.create(
            rule_set=rule_set, code=code, changed_by=by, change="edited", before=before, after=after
        )
    return existing


@transaction.atomic
def rule_delete(*, rule: Rule, by: User) -> None:
    _editable(rule.rule_set)
    RuleRevision.objects.create(
        rule_set=rule.rule_set,
        code=rule.code,
        changed_by=by,
        change="deleted",
        before=_snapshot(rule),
    )
    rule.delete()


@transaction.atomic
def ruleset_propose(*, rule_set: RuleSet, by: User, dry_run: dict[str, Any]) -> RuleSet:
    """Freeze a draft for a second person's sign-off, with its dry-run impact recorded."""
    rule_set = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
    _editable(rule_set)
    if not rule_set.rules.exists():
        raise ApplicationError("An empty rule set cannot be proposed.", fields={"rules": "empty"})
    rule_set.status = RuleSetStatus.PROPOSED
    rule_set.proposed_by = by
    rule_set.proposed_at = timezone.now()
    rule_set.dry_run = dry_run
    rule_set.save()
    return rule_set


def ruleset_editors(rule_set: RuleSet) -> set[Any]:
    """Everyone who changed the draft or proposed it: none of them may sign it off."""
    editors: set[int | None] = set(rule_set.revisions.values_list("changed_by_id", flat=True))
    editors.update({rule_set.created_by_id, rule_set.proposed_by_id})
    editors.discard(None)
    return editors


@transaction.atomic
def ruleset_switch(*, rule_set: RuleSet, by: User) -> RuleSet:
    """Make a proposed set the active one and retire the old one. The active row is locked
    first, so a delivery checking the rules (FOR SHARE on that row) either finishes before
    the switch or sees the new set. The caller checks the sign-off rules."""
    current = RuleSet.objects.select_for_update().filter(status=RuleSetStatus.ACTIVE).first()
    rule_set = RuleSet.objects.select_for_update().get(pk=rule_set.pk)
    if rule_set.status != RuleSetStatus.PROPOSED:
        raise ApplicationError(
            "Only a proposed rule set can be activated.", code="not_proposed", status=409
        )
    if current is not None:
        current.status = RuleSetStatus.RETIRED
        current.save(update_fields=["status", "updated_at"])
    rule_set.status = RuleSetStatus.ACTIVE
    rule_set.activated_by = by
    rule_set.activated_at = timezone.now()
    rule_set.save()
    stamp_bump(RULES_STAMP)
    return rule_set


@transaction.atomic
def ruleset_discard(*, rule_set: RuleSet, by: User) -> None:
    """Drop a draft or proposed set that will not be activated (kept as retired)."""
    if rule_set.status not in (RuleSetStatus.DRAFT, RuleSetStatus.PROPOSED):
        raise ApplicationError("Only a draft or proposed set can be discarded.", status=409)
    rule_set.status = RuleSetStatus.RETIRED
    rule_set.note = (rule_set.note + " (discarded)")[:300]
    rule_set.save(update_fields=["status", "note", "updated_at"])


def _definitions() -> dict[str, tuple[list[str], list[str]]]:
    return {
        slug: (icd, atc)
        for slug, icd, atc in MedicalGroup.objects.values_list(
            "slug", "icd10_prefixes", "atc_prefixes"
        )
    }


@transaction.atomic
def patients_groups_refresh(*, patient_ids: Sequence[Any]) -> dict[Any, set[str]]:
    """Make each patient's group memberships exactly those their coded record implies.
    Returns each patient's group slugs."""
    definitions = _definitions()
    conditions: dict[Any, list[str]] = defaultdict(list)
    medications: dict[Any, list[str]] = defaultdict(list)
    for pid, code in Condition.objects.filter(patient_id__in=patient_ids).values_list(
        "patient_id", "code"
    ):
        conditions[pid].append(code)
    for pid, code in Medication.objects.filter(patient_id__in=patient_ids).values_list(
        "patient_id", "code"
    ):
        medications[pid].append(code)
    wanted = {
        pid: groups_for_codes(
            conditions=conditions[pid], medications=medications[pid], definitions=definitions
        )
        for pid in patient_ids
    }
    existing: dict[Any, set[str]] = defaultdict(set)
    stale = []
    for membership_id, pid, slug in GroupMembership.objects.filter(
        patient_id__in=patient_ids
    ).values_list("id", "patient_id", "group__slug"):
        if slug in wanted[pid]:
            existing[pid].add(slug)
        else:
            stale.append(membership_id)
    GroupMembership.objects.filter(id__in=stale).delete()
    group_ids = dict(MedicalGroup.objects.values_list("slug", "id"))
    GroupMembership.objects.bulk_create(
        [
            GroupMembership(patient_id=pid, group_id=group_ids[slug])
            for pid, slugs in wanted.items()
            for slug in sorted(slugs - existing[pid])
        ],
        batch_size=2000,
    )
    Patient.objects.filter(pk__in=patient_ids).update(groups_refreshed_at=timezone.now())
    return wanted


def patient_groups_refresh(*, patient: Patient) -> set[str]:
    """One patient: patients_groups_refresh for a single id."""
    return patients_groups_refresh(patient_ids=[patient.pk])[patient.pk]
