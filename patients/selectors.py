"""Reads on patients."""

from patients.models import Consent, Patient, Purpose


def consent_snapshot(patient: Patient) -> dict[str, bool]:
    """The consent in force per purpose. A purpose with no record counts as not granted."""
    granted = dict(Consent.objects.filter(patient=patient).values_list("purpose", "granted"))
    return {purpose: bool(granted.get(purpose, False)) for purpose in Purpose.values}
