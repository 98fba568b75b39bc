"""Enrolment from the clinic's system: the patient service pseudonymises and stores the
record (patients.enrolment), then the patient's medical groups are derived from their codes
(safety), in one transaction, so a new patient's nudges are checked against their groups
from the first decision. Here because it spans both apps (privacy sits above them)."""

from collections.abc import Sequence

from django.db import transaction

from patients.enrolment import Enrolled, Enrolment, patients_enrol
from safety.services import patients_groups_refresh


@transaction.atomic
def enrolments_create(*, records: Sequence[Enrolment]) -> list[Enrolled]:
    """Enrol `records` (patients_enrol: validated, idempotent, all or none) and derive the
    medical groups of those this call created."""
    enrolled = patients_enrol(records=records)
    patients_groups_refresh(patient_ids=[e.patient.pk for e in enrolled if e.created])
    return enrolled
