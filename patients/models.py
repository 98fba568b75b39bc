"""Patients, pseudonymous from the first line: a patient is known by a keyed pseudonym only.
Names, e-mail addresses and record numbers never enter these tables in clear: sensitive fields
(date of birth, contact details, free text) and the identity vault are encrypted under the
patient's own data key (PatientKey; privacy/crypto.py), which erasure destroys. The coarse
fields the recommender and reports need (age band, sex) stay in clear."""

import datetime as dt
import functools
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from core.models import BaseModel
from privacy import crypto


class Goal(models.TextChoices):
    ACTIVITY = "activity", "Physical activity"
    MEDICATION = "medication", "Taking medication as prescribed"
    SLEEP = "sleep", "Sleep"
    DIET = "diet", "Diet"
    MOOD = "mood", "Mood and stress"
    HYDRATION = "hydration", "Hydration"
    MONITORING = "monitoring", "Self-monitoring (blood pressure, glucose, weight)"


class AgeBand(models.TextChoices):
    A18_29 = "18-29"
    A30_44 = "30-44"
    A45_59 = "45-59"
    A60_74 = "60-74"
    A75 = "75+"


class Sex(models.TextChoices):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class Purpose(models.TextChoices):
    PERSONALISATION = "personalisation", "Personalised recommendations"
    NOTIFICATIONS = "notifications", "Push notifications"
    RESEARCH = "research", "Research reporting"


@functools.cache
def known_timezones() -> frozenset[str]:
    """The IANA zone names; reading them scans the zone database, so it is done once."""
    return frozenset(zoneinfo.available_timezones())


def validate_timezone(value: str) -> None:
    if value not in known_timezones():
        raise ValidationError("Unknown IANA time zone.", code="invalid_timezone")


class Patient(BaseModel):
    pseudonym = models.CharField(max_length=64, unique=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="patient"
    )
    age_band = models.CharField(max_length=8, choices=AgeBand.choices)
    sex = models.CharField(max_length=8, choices=Sex.choices, default=Sex.UNKNOWN)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    quiet_start = models.TimeField(default=dt.time(22, 0))
    quiet_end = models.TimeField(default=dt.time(7, 0))
    snoozed_until = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    # Set when the medical groups were last derived from the codes (safety); until then the
    # groups are unknown and every nudge needs a clinician's review.
    groups_refreshed_at = models.DateTimeField(null=True, blank=True)
    # Encrypted under the patient's data key (patients.sealed); empty when not given.
    date_of_birth_sealed = models.TextField(blank=True)
    contact_sealed = models.TextField(blank=True)
    notes_sealed = models.TextField(blank=True)

    class Meta:
        ordering = ["pseudonym"]
        permissions = [
            ("enrol_patient", "Can enrol patients (the clinic's integration)"),
            ("reidentify_patient", "Can re-identify a patient from the identity vault"),
        ]

    def __str__(self) -> str:
        return self.pseudonym

    def data_key(self) -> bytes:
        """This patient's data key, unwrapped. Raises privacy.crypto.CryptoError when it is
        gone (erased) or cannot be unwrapped with the configured master keys."""
        cached = getattr(self, "_data_key", None)
        if cached is None:
            wrapped = (
                PatientKey.objects.filter(patient_id=self.pk)
                .values_list("wrapped", flat=True)
                .first()
            )
            if wrapped is None:
                raise crypto.CryptoError("The patient's data key is missing (erased?).")
            cached = self._data_key = crypto.unwrap(wrapped, context=key_context(self.pk))
        return cached


def key_context(patient_id: object) -> str:
    return f"patient-key:{patient_id}"


class PatientKey(BaseModel):
    """The patient's data key, wrapped under a master key (`master_version` names which, so
    rotation finds what is left to re-wrap). Deleting this row crypto-shreds everything
    encrypted under the key."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="key")
    wrapped = models.CharField(max_length=160)
    master_version = models.CharField(max_length=16, db_index=True)


class IdentityVault(BaseModel):
    """The way back from a pseudonym to the person, for authorised re-identification only
    (patients.rights.patient_reidentify, audited on every use): the identifiers as given at
    enrolment, encrypted under the patient's data key."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="vault")
    sealed = models.TextField()


class Condition(BaseModel):
    """A coded condition (ICD-10-CM)."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="conditions")
    code = models.CharField(max_length=16)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "code"], name="condition_unique_code")
        ]


class Medication(BaseModel):
    """A coded medication (ATC)."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="medications")
    code = models.CharField(max_length=16)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "code"], name="medication_unique_code")
        ]


class CarePlanGoal(BaseModel):
    """One item of the patient's agenda: a goal and its weight in (0, 1]."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="goals")
    goal = models.CharField(max_length=16, choices=Goal.choices)
    weight = models.FloatField()

    class Meta:
        ordering = ["-weight", "goal"]
        constraints = [
            models.UniqueConstraint(fields=["patient", "goal"], name="goal_unique_per_patient"),
            models.CheckConstraint(
                condition=models.Q(weight__gt=0) & models.Q(weight__lte=1),
                name="goal_weight_in_unit_interval",
            ),
        ]


class Consent(BaseModel):
    """The consent in force for one purpose. Written only through consent_set, which also
    appends a ConsentEvent, so the history is complete."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    granted = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "purpose"], name="consent_unique_purpose")
        ]


class ConsentEvent(BaseModel):
    """Append-only history of consent changes."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="consent_events")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    granted = models.BooleanField()
    source = models.CharField(max_length=32, default="app")

    class Meta:
        ordering = ["created_at"]
