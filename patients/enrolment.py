"""Enrolment at the boundary: the only place identifiers enter. A clinic's record (record
number, e-mail, phone, date of birth, coded conditions and medications, care-plan goals)
becomes a pseudonymous patient: the keyed pseudonym of the record number, the coarse fields
in clear (age band, sex), the sensitive ones encrypted under the patient's new data key, and
the identifiers in the identity vault, encrypted under that same key."""

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from core.errors import ApplicationError
from patients.identifiers import Identifiers, candidate_pseudonyms, identifiers_parse
from patients.models import AgeBand, IdentityVault, Patient, Sex
from patients.sealed import Sensitive, vault_seal
from patients.services import NewPatient, patient_record_check, patients_create

NOTES_MAX = 2000
LOOKUP_CHUNK = 500
# Lower bounds of the age bands (patients.AgeBand), oldest first.
AGE_BANDS = ((75, AgeBand.A75), (60, AgeBand.A60_74), (45, AgeBand.A45_59), (30, AgeBand.A30_44))


@dataclass(frozen=True)
class Enrolment:
    """One record as the clinic sends it. `identifiers` is checked by the service; give a
    date of birth, or an age band when the clinic does not share it."""

    identifiers: Mapping[str, Any]
    goals: Mapping[str, float]
    date_of_birth: dt.date | None = None
    age_band: str | None = None
    sex: str = Sex.UNKNOWN
    timezone: str = "UTC"
    conditions: Sequence[str] = ()
    medications: Sequence[str] = ()
    notes: str = ""
    consents: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Enrolled:
    patient: Patient
    token: str
    created: bool


@dataclass(frozen=True)
class _Parsed:
    identifiers: Identifiers
    candidates: list[str]  # the pseudonym under each key version, the current one first
    record: NewPatient


def patients_enrol(*, records: Sequence[Enrolment], today: dt.date | None = None) -> list[Enrolled]:
    """Enrol each record, all or none. Invalid input raises an ApplicationError naming the
    field, and nothing is stored. A person already enrolled (the same record number, under
    any configured pseudonym key) is found, not created again, and their record is left as
    it is: enrolment is idempotent, also when two requests race (the unique pseudonym
    decides; the loser finds the winner's patient). Returns, in order, each patient with
    their app token and whether this call created them. Queries do not grow with the number
    of records beyond chunked lookups and bulk inserts."""
    today = today or timezone.localdate()
    parsed = []
    for index, record in enumerate(records):
        try:
            item = _parse(record, today)
            patient_record_check(item.record)
        except ApplicationError as error:
            raise _at(error, index, len(records)) from None
        parsed.append(item)
    try:
        with transaction.atomic():
            return _enrol(parsed)
    except IntegrityError:
        # A concurrent enrolment of the same person committed first: this time it is found.
        try:
            with transaction.atomic():
                return _enrol(parsed)
        except IntegrityError:
            raise ApplicationError(
                "A concurrent enrolment conflicted; retry.", code="conflict", status=409
            ) from None


def _enrol(parsed: list[_Parsed]) -> list[Enrolled]:
    existing = _existing({c for item in parsed for c in item.candidates})
    # Per record: the patient found, or the index of the new record it becomes (the same
    # person twice in one call is created once) and whether this record created it.
    plan: list[tuple[Patient | None, int, bool]] = []
    new: list[_Parsed] = []
    new_index: dict[str, int] = {}  # current pseudonym -> index in `new`
    for item in parsed:
        found = next((existing[c] for c in item.candidates if c in existing), None)
        if found is not None:
            plan.append((found, -1, False))
        elif item.candidates[0] in new_index:
            plan.append((None, new_index[item.candidates[0]], False))
        else:
            new_index[item.candidates[0]] = len(new)
            plan.append((None, len(new), True))
            new.append(item)
    created = patients_create(records=[item.record for item in new])
    IdentityVault.objects.bulk_create(
        [
            IdentityVault(
                patient=patient, sealed=vault_seal(patient.pk, patient.data_key(), item.identifiers)
            )
            for item, (patient, _) in zip(new, created, strict=True)
        ],
        batch_size=1000,
    )
    tokens = _tokens([found for found, _, _ in plan if found is not None])
    out = []
    for found, index, first in plan:
        if found is not None:
            out.append(Enrolled(patient=found, token=tokens[found.user_id], created=False))
        else:
            patient, token = created[index]
            out.append(Enrolled(patient=patient, token=token, created=first))
    return out


def _existing(pseudonyms: set[str]) -> dict[str, Patient]:
    ordered = sorted(pseudonyms)
    found: dict[str, Patient] = {}
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        found.update((p.pseudonym, p) for p in Patient.objects.filter(pseudonym__in=chunk))
    return found


def _tokens(patients: list[Patient]) -> dict[Any, str]:
    """App tokens of already enrolled patients (a patient whose token was revoked gets a
    new one)."""
    user_ids = [p.user_id for p in patients]
    tokens = dict(Token.objects.filter(user_id__in=user_ids).values_list("user_id", "key"))
    missing = [Token(user_id=uid, key=Token.generate_key()) for uid in set(user_ids) - set(tokens)]
    Token.objects.bulk_create(missing)
    tokens.update((t.user_id, t.key) for t in missing)
    return tokens


def _parse(record: Enrolment, today: dt.date) -> _Parsed:
    identifiers, errors = identifiers_parse(record.identifiers)
    fields: dict[str, Any] = {"identifiers": errors} if errors else {}
    age_band, problem = _age_band(record.date_of_birth, record.age_band, today)
    fields.update(problem)
    if record.sex not in Sex.values:
        fields["sex"] = f"One of {', '.join(Sex.values)}."
    if not isinstance(record.notes, str) or len(record.notes) > NOTES_MAX:
        fields["notes"] = f"Free text of at most {NOTES_MAX} characters."
    if fields or identifiers is None:
        raise ApplicationError("The enrolment is invalid.", fields=fields)
    candidates = candidate_pseudonyms(identifiers)
    return _Parsed(
        identifiers=identifiers,
        candidates=candidates,
        record=NewPatient(
            pseudonym=candidates[0],
            age_band=age_band,
            sex=record.sex,
            goals=record.goals,
            timezone=record.timezone,
            conditions=record.conditions,
            medications=record.medications,
            consents=record.consents,
            sensitive=Sensitive(
                date_of_birth=record.date_of_birth,
                email=identifiers.email,
                phone=identifiers.phone,
                notes=record.notes,
            ),
        ),
    )


def _age_band(born: dt.date | None, band: str | None, today: dt.date) -> tuple[str, dict[str, str]]:
    """The age band (coarse, kept in clear) from the date of birth, or as given; else
    field -> message."""
    if band is not None and band not in AgeBand.values:
        return "", {"age_band": f"One of {', '.join(AgeBand.values)}."}
    if born is None:
        if band is None:
            return "", {"age_band": "Give a date of birth or an age band."}
        return band, {}
    if born > today:
        return "", {"date_of_birth": "A date of birth cannot be in the future."}
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < 18:
        return "", {"date_of_birth": "Patients are enrolled from the age of 18."}
    derived = next((b for low, b in AGE_BANDS if age >= low), AgeBand.A18_29)
    if band is not None and band != derived:
        return "", {"age_band": "The age band does not match the date of birth."}
    return str(derived), {}


def _at(error: ApplicationError, index: int, total: int) -> ApplicationError:
    """In a batch, say which record (by position) was refused."""
    if total > 1:
        error.fields = {"record": index, **error.fields}
    return error
