"""Reads on medical groups."""

from patients.models import Patient
from safety.models import GroupMembership


def group_slugs_for_patient(patient: Patient) -> frozenset[str]:
    """The medical groups the patient's coded record puts them in (derived memberships)."""
    return frozenset(
        GroupMembership.objects.filter(patient=patient).values_list("group__slug", flat=True)
    )
