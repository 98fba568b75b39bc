import json
from pathlib import Path

from django.db import transaction

from patients.models import Patient
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
def patient_groups_refresh(*, patient: Patient) -> set[str]:
    """Make the patient's group memberships exactly those their coded record implies."""
    slugs = groups_for_codes(
        conditions=patient.conditions.values_list("code", flat=True),
        medications=patient.medications.values_list("code", flat=True),
        definitions=_definitions(),
    )
    groups = {g.slug: g for g in MedicalGroup.objects.filter(slug__in=slugs)}
    GroupMembership.objects.filter(patient=patient).exclude(group__slug__in=slugs).delete()
    existing = set(
        GroupMembership.objects.filter(patient=patient).values_list("group__slug", flat=True)
    )
    GroupMembership.objects.bulk_create(
        GroupMembership(patient=patient, group=groups[s]) for s in slugs - existing
    )
    return slugs
