"""A patient's sensitive fields and identity vault entry, sealed under the patient's data key
(privacy.crypto). Each ciphertext is bound to its patient and field, so it cannot be moved to
another row. Reading needs the key: after erasure there is nothing left to read."""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from patients.identifiers import Identifiers
from patients.models import IdentityVault, Patient
from privacy import crypto


@dataclass(frozen=True)
class Sensitive:
    """What is held in the encrypted columns of Patient."""

    date_of_birth: dt.date | None = None
    email: str = ""
    phone: str = ""
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "date_of_birth": self.date_of_birth.isoformat() if self.date_of_birth else None,
            "email": self.email,
            "phone": self.phone,
            "notes": self.notes,
        }


def context(patient_id: Any, name: str) -> str:
    return f"patient:{patient_id}:{name}"


def sealed_columns(patient_id: Any, key: bytes, sensitive: Sensitive) -> dict[str, str]:
    """The Patient columns holding `sensitive`; a field not given stays empty."""

    def seal(name: str, value: str) -> str:
        return crypto.encrypt(key, value, context=context(patient_id, name)) if value else ""

    contact = ""
    if sensitive.email or sensitive.phone:
        contact = crypto.encrypt_json(
            key,
            {"email": sensitive.email, "phone": sensitive.phone},
            context=context(patient_id, "contact"),
        )
    return {
        "date_of_birth_sealed": seal(
            "date_of_birth", sensitive.date_of_birth.isoformat() if sensitive.date_of_birth else ""
        ),
        "contact_sealed": contact,
        "notes_sealed": seal("notes", sensitive.notes),
    }


def sensitive_fields(patient: Patient) -> Sensitive:
    """The patient's sensitive fields, decrypted (raises CryptoError without the key)."""
    key = patient.data_key()

    def open_(name: str, token: str) -> str:
        return crypto.decrypt(key, token, context=context(patient.pk, name)) if token else ""

    contact: dict[str, str] = {}
    if patient.contact_sealed:
        contact = crypto.decrypt_json(
            key, patient.contact_sealed, context=context(patient.pk, "contact")
        )
    born = open_("date_of_birth", patient.date_of_birth_sealed)
    return Sensitive(
        date_of_birth=dt.date.fromisoformat(born) if born else None,
        email=contact.get("email", ""),
        phone=contact.get("phone", ""),
        notes=open_("notes", patient.notes_sealed),
    )


def vault_seal(patient_id: Any, key: bytes, identifiers: Identifiers) -> str:
    return crypto.encrypt_json(key, identifiers.as_dict(), context=context(patient_id, "vault"))


def vault_open(patient: Patient) -> Identifiers | None:
    """The identifiers held in the vault for this patient (None for a patient enrolled
    without them, e.g. created directly in tests). Callers audit the read."""
    sealed = IdentityVault.objects.filter(patient=patient).values_list("sealed", flat=True).first()
    if sealed is None:
        return None
    raw = crypto.decrypt_json(patient.data_key(), sealed, context=context(patient.pk, "vault"))
    return Identifiers(**raw)
