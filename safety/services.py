import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.db import transaction

from patients.models import Condition, Medication, Patient
from safety.groups import groups_for_codes
from safety.models import GroupMembership, MedicalGroup

GROUPS_FILE = Path(__file__).parent / "data" / "medical_groups.json"


@transaction.atomic
def medical_groups_load(*, path: Path = GROUPS_FILE) -> int:
    """Create or update the medical groups defined in the reviewed file; returns how many."""
    definitions = json.loads(path.read_text())
    for item in definitions:
        MedicalGroup.objects.update_or_create(
            slug=item["slug"],
            defaults={
                "name": item["name"],
                "icd10_prefixes": item["icd10_prefixes"],
                "atc_prefixes": item["atc_prefixes"],
            },
        )
    return len(definitions)


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
    return wanted


def patient_groups_refresh(*, patient: Patient) -> set[str]:
    """One patient: patients_groups_refresh for a single id."""
    return patients_groups_refresh(patient_ids=[patient.pk])[patient.pk]
