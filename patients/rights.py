"""The patient's rights and the way back to the person: export (everything held about them),
erasure (deleted, their data key destroyed) and authorised re-identification from the
identity vault. Each is recorded in the audit log in the same transaction."""

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.deletion import Collector
from django.utils import timezone

from audit.models import AuditAction
from audit.services import entries_about, record
from core.errors import ApplicationError, not_found
from patients.identifiers import Identifiers
from patients.models import IdentityVault, Patient, PatientKey
from patients.sealed import sensitive_fields, vault_open

EXPORT_FORMAT = "nudge-engine-export/1"
# What a re-identification is for; a code, since free text could itself identify someone.
REIDENTIFICATION_REASONS = (
    "clinical_follow_up",
    "safety_incident",
    "patient_request",
    "legal_obligation",
)
# Held for the patient but shown in their own sections of the export.
_SHOWN_APART = {Patient, PatientKey, IdentityVault}


@transaction.atomic
def patient_export(*, patient: Patient, actor: Any) -> dict[str, Any]:
    """Everything held about the patient, as JSON-ready data: their profile with the
    sensitive fields decrypted, the identifiers from the vault, every row that belongs to
    them (each model that refers to the patient, and what refers to those rows in turn: the
    same set erasure deletes), and the audit entries that name them. Audited."""
    record(AuditAction.EXPORT, actor, patient)
    identifiers = vault_open(patient)
    return {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now(),
        "patient": {
            "pseudonym": patient.pseudonym,
            "enrolled_at": patient.created_at,
            "age_band": patient.age_band,
            "sex": patient.sex,
            "timezone": patient.timezone,
            "quiet_start": patient.quiet_start,
            "quiet_end": patient.quiet_end,
            "snoozed_until": patient.snoozed_until,
            "is_active": patient.is_active,
            **sensitive_fields(patient).as_dict(),
        },
        "identifiers": identifiers.as_dict() if identifiers else None,
        "records": _rows_of(patient),
        "audit": [
            {"at": e.created_at, "action": e.action, "actor": e.actor, "detail": e.detail}
            for e in entries_about(patient)
        ],
    }


@transaction.atomic
def patient_erase(*, patient: Patient, actor: Any) -> None:
    """Erase the patient: the erasure is audited (naming the patient under their data key),
    then the key is destroyed and the patient deleted with every row that belongs to them
    (decision points and receipts, deliveries, events, consents, codes, goals, the vault)
    and their app login. What stays: audit entries, whose patient reference nobody can read
    any more, and aggregate reports already released (differentially private, they hold no
    row of anyone)."""
    locked = Patient.objects.select_for_update().filter(pk=patient.pk).first()
    if locked is None:
        raise not_found("patient")
    record(AuditAction.ERASURE, actor, locked)
    PatientKey.objects.filter(patient=locked).delete()
    user_id = locked.user_id
    locked.delete()
    get_user_model().objects.filter(pk=user_id).delete()


@transaction.atomic
def patient_reidentify(*, pseudonym: str, actor: Any, reason: str) -> Identifiers:
    """The identifiers behind a pseudonym, for an actor holding the
    patients.reidentify_patient permission and a reason from REIDENTIFICATION_REASONS.
    Every use is audited (who, why, and the patient under their data key); a refusal reads
    nothing."""
    if not getattr(actor, "is_authenticated", False) or not actor.has_perm(
        "patients.reidentify_patient"
    ):
        raise ApplicationError(
            "Re-identification needs the re-identify permission.",
            code="permission_denied",
            status=403,
        )
    if reason not in REIDENTIFICATION_REASONS:
        raise ApplicationError(
            "Give the reason for re-identification.",
            fields={"reason": f"One of {', '.join(REIDENTIFICATION_REASONS)}."},
        )
    patient = Patient.objects.filter(pseudonym=pseudonym).first()
    if patient is None:
        raise not_found("patient")
    identifiers = vault_open(patient)
    if identifiers is None:
        raise ApplicationError(
            "This patient has no identity vault entry.", code="not_found", status=404
        )
    record(AuditAction.REIDENTIFICATION, actor, patient, {"reason": reason})
    return identifiers


class _Everything(Collector):
    """The rows deleting the patient would delete, all loaded (no fast deletes)."""

    def can_fast_delete(self, *args: Any, **kwargs: Any) -> bool:
        return False


def _rows_of(patient: Patient) -> dict[str, list[dict[str, Any]]]:
    collector = _Everything(using=Patient.objects.db)
    collector.collect([patient])
    out: dict[str, list[dict[str, Any]]] = {}
    for model, instances in sorted(collector.data.items(), key=lambda kv: kv[0]._meta.label):
        if model in _SHOWN_APART:
            continue
        rows = []
        for obj in sorted(instances, key=_row_order):
            row = {"id": str(obj.pk)}
            for f in model._meta.concrete_fields:
                if f.primary_key:
                    continue
                value = getattr(obj, f.attname)
                row[f.name] = str(value) if f.is_relation and value is not None else value
            rows.append(row)
        out[model._meta.label_lower] = rows
    return out


def _row_order(obj: Any) -> tuple:
    return (str(getattr(obj, "created_at", "")), str(obj.pk))
