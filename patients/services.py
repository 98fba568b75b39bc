"""Writes on patients. Each service is one transaction and keeps the invariant in its
docstring."""

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import models, transaction
from rest_framework.authtoken.models import Token

from core.errors import ApplicationError
from patients.codes import invalid_codes, normalise
from patients.models import (
    CarePlanGoal,
    Condition,
    Consent,
    ConsentEvent,
    Goal,
    Medication,
    Patient,
    PatientKey,
    Purpose,
    key_context,
    validate_timezone,
)
from patients.sealed import Sensitive, sealed_columns
from privacy import crypto


@dataclass(frozen=True)
class NewPatient:
    pseudonym: str
    age_band: str
    sex: str
    goals: Mapping[str, float]
    timezone: str = "UTC"
    conditions: Sequence[str] = ()
    medications: Sequence[str] = ()
    consents: Mapping[str, bool] = field(default_factory=dict)
    sensitive: Sensitive = Sensitive()


def patient_record_check(record: NewPatient) -> None:
    """Raise an ApplicationError naming the field for a record patients_create would refuse."""
    _check_timezone(record.timezone)
    _check_goals(record.goals)
    errors = invalid_codes(conditions=list(record.conditions), medications=list(record.medications))
    if errors:
        raise ApplicationError("Invalid codes in the record.", fields=errors)
    unknown = set(record.consents) - set(Purpose.values)
    if unknown:
        raise ApplicationError("Unknown consent purpose.", fields={"consents": "unknown purpose"})


@transaction.atomic
def patients_create(*, records: Sequence[NewPatient]) -> list[tuple[Patient, str]]:
    """Create patients, their app logins (tokens), data keys and agendas, all or none. A
    login's username is the pseudonym: nothing identifying is stored. Every patient gets
    their own data key, stored wrapped under the master key; sensitive fields are stored
    only encrypted under it. Consent defaults to granted for every purpose unless the record
    says otherwise, and each grant starts the consent history. Returns each patient with
    their API token, in the order given."""
    for record in records:
        patient_record_check(record)
    user_model = get_user_model()
    users = [user_model(username=r.pseudonym, password=make_password(None)) for r in records]
    user_model.objects.bulk_create(users)
    patients = [
        Patient(pseudonym=r.pseudonym, user=u, age_band=r.age_band, sex=r.sex, timezone=r.timezone)
        for r, u in zip(records, users, strict=True)
    ]
    keys = []
    version = crypto.current_version()
    for record, patient in zip(records, patients, strict=True):
        patient.full_clean(exclude=["user"], validate_unique=False, validate_constraints=False)
        data_key = patient._data_key = crypto.new_data_key()
        for column, value in sealed_columns(patient.pk, data_key, record.sensitive).items():
            setattr(patient, column, value)
        wrapped = crypto.wrap(data_key, context=key_context(patient.pk), version=version)
        keys.append(PatientKey(patient=patient, wrapped=wrapped, master_version=version))
    Patient.objects.bulk_create(patients)
    goals, conditions, medications, consents, events, tokens = [], [], [], [], [], []
    for r, patient in zip(records, patients, strict=True):
        goals += [CarePlanGoal(patient=patient, goal=g, weight=w) for g, w in r.goals.items()]
        conditions += [
            Condition(patient=patient, code=c) for c in sorted({normalise(c) for c in r.conditions})
        ]
        medications += [
            Medication(patient=patient, code=m)
            for m in sorted({normalise(m) for m in r.medications})
        ]
        for purpose in Purpose.values:
            granted = bool(r.consents.get(purpose, True))
            consents.append(Consent(patient=patient, purpose=purpose, granted=granted))
            events.append(
                ConsentEvent(patient=patient, purpose=purpose, granted=granted, source="enrolment")
            )
        tokens.append(Token(user=patient.user, key=Token.generate_key()))
    parts: list[tuple[type[models.Model], Sequence[models.Model]]] = [
        (PatientKey, keys),
        (CarePlanGoal, goals),
        (Condition, conditions),
        (Medication, medications),
        (Consent, consents),
        (ConsentEvent, events),
        (Token, tokens),
    ]
    for model, rows in parts:
        model._default_manager.bulk_create(rows, batch_size=2000)
    return [(p, t.key) for p, t in zip(patients, tokens, strict=True)]


def patient_create(**record: Any) -> tuple[Patient, str]:
    """One patient: patients_create with a single record."""
    [created] = patients_create(records=[NewPatient(**record)])
    return created


@transaction.atomic
def consents_set(
    *, patient: Patient, consents: Mapping[str, bool], source: str = "app"
) -> dict[str, bool]:
    """Set the consent in force for the purposes given; only a purpose whose consent changes
    is written, with its ConsentEvent, so the history lists changes. Returns the consent in
    force for every purpose. The patient's row is locked so concurrent changes queue."""
    unknown = sorted(set(consents) - set(Purpose.values))
    if unknown:
        raise ApplicationError(
            "Unknown consent purpose.", fields={name: "unknown purpose" for name in unknown}
        )
    not_bool = sorted(name for name, value in consents.items() if not isinstance(value, bool))
    if not_bool:
        raise ApplicationError(
            "Consent is true or false.", fields={name: "not a boolean" for name in not_bool}
        )
    Patient.objects.select_for_update().filter(pk=patient.pk).first()
    current = dict(Consent.objects.filter(patient=patient).values_list("purpose", "granted"))
    for purpose, granted in consents.items():
        if current.get(purpose) is not granted:
            consent_set(patient=patient, purpose=purpose, granted=granted, source=source)
            current[purpose] = granted
    return {purpose: bool(current.get(purpose, False)) for purpose in Purpose.values}


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


def _check_goals(goals: Mapping[str, float]) -> None:
    if not goals:
        raise ApplicationError("A care plan needs at least one goal.", fields={"goals": "empty"})
    for goal, weight in goals.items():
        if goal not in Goal.values:
            raise ApplicationError("Unknown care-plan goal.", fields={"goals": "unknown goal"})
        if not 0 < weight <= 1:
            raise ApplicationError(
                "A goal's weight must be in (0, 1].", fields={"goals": "weight out of range"}
            )


def _check_timezone(value: str) -> None:
    try:
        validate_timezone(value)
    except Exception:
        raise ApplicationError(
            "Unknown time zone; use an IANA name such as Europe/London.",
            fields={"timezone": "unknown time zone"},
        ) from None
