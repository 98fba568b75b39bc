"""Writes on patients. Each service is one transaction and keeps the invariant in its
docstring."""

import datetime as dt
from collections.abc import Iterable, Mapping

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from core.errors import ApplicationError
from patients.models import (
    CarePlanGoal,
    Condition,
    Consent,
    ConsentEvent,
    Medication,
    Patient,
    Purpose,
    validate_timezone,
)


@transaction.atomic
def patient_create(
    *,
    pseudonym: str,
    age_band: str,
    sex: str,
    timezone: str = "UTC",
    goals: Mapping[str, float],
    conditions: Iterable[str] = (),
    medications: Iterable[str] = (),
    consents: Mapping[str, bool] | None = None,
) -> tuple[Patient, str]:
    """Create a patient, their app login (token) and agenda in one step. The login's username
    is the pseudonym: nothing identifying is stored. Returns the patient and their API token."""
    _check_timezone(timezone)
    user = get_user_model().objects.create_user(username=pseudonym)
    user.set_unusable_password()
    user.save(update_fields=["password"])
    patient = Patient.objects.create(
        pseudonym=pseudonym, user=user, age_band=age_band, sex=sex, timezone=timezone
    )
    CarePlanGoal.objects.bulk_create(
        CarePlanGoal(patient=patient, goal=goal, weight=weight) for goal, weight in goals.items()
    )
    Condition.objects.bulk_create(Condition(patient=patient, code=c) for c in set(conditions))
    Medication.objects.bulk_create(Medication(patient=patient, code=m) for m in set(medications))
    for purpose in Purpose.values:
        consent_set(
            patient=patient,
            purpose=purpose,
            granted=(consents or {}).get(purpose, True),
            source="enrolment",
        )
    token = Token.objects.create(user=user)
    return patient, token.key


@transaction.atomic
def consent_set(*, patient: Patient, purpose: str, granted: bool, source: str = "app") -> Consent:
    """Set the consent in force for a purpose and append the change to its history."""
    if purpose not in Purpose.values:
        raise ApplicationError("Unknown consent purpose.", fields={"purpose": "unknown"})
    consent, _ = Consent.objects.update_or_create(
        patient=patient, purpose=purpose, defaults={"granted": granted}
    )
    ConsentEvent.objects.create(patient=patient, purpose=purpose, granted=granted, source=source)
    return consent


_UNSET = object()


@transaction.atomic
def patient_update_preferences(
    *,
    patient: Patient,
    timezone: str | None = None,
    quiet_start: dt.time | None = None,
    quiet_end: dt.time | None = None,
    snoozed_until: dt.datetime | None | object = _UNSET,
) -> Patient:
    """Change the patient's delivery preferences. A time zone must be a known IANA zone."""
    fields = []
    if timezone is not None:
        _check_timezone(timezone)
        patient.timezone = timezone
        fields.append("timezone")
    if quiet_start is not None:
        patient.quiet_start = quiet_start
        fields.append("quiet_start")
    if quiet_end is not None:
        patient.quiet_end = quiet_end
        fields.append("quiet_end")
    if snoozed_until is not _UNSET:
        patient.snoozed_until = snoozed_until  # type: ignore[assignment]
        fields.append("snoozed_until")
    if fields:
        patient.save(update_fields=[*fields, "updated_at"])
    return patient


def _check_timezone(value: str) -> None:
    try:
        validate_timezone(value)
    except Exception:
        raise ApplicationError(
            "Unknown time zone; use an IANA name such as Europe/London.",
            fields={"timezone": "unknown time zone"},
        ) from None
