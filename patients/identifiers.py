"""Pure: the identifiers a clinic sends at enrolment (record number, e-mail, phone), checked
and normalised, and the patient's pseudonym derived from them. Error messages say what is
wrong with a field and never repeat its value: they reach clients and logs."""

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from privacy.pseudonyms import pseudonym

# Pseudonyms of enrolled patients are keyed HMACs of the record number in this namespace.
NAMESPACE = "patient"
RECORD_NUMBER_MAX = 64
PHONE_DIGITS = (7, 15)  # E.164 allows at most 15 digits
PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")
_email = EmailValidator()


@dataclass(frozen=True)
class Identifiers:
    record_number: str
    email: str = ""
    phone: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"record_number": self.record_number, "email": self.email, "phone": self.phone}


def identifiers_parse(raw: Any) -> tuple[Identifiers | None, dict[str, str]]:
    """The identifiers, normalised, or None and field -> message for each malformed one. A
    record number is required; e-mail and phone are optional but must be well formed."""
    if not isinstance(raw, Mapping):
        return None, {"identifiers": "An object with record_number, email and phone."}
    unknown = set(raw) - {"record_number", "email", "phone"}
    errors = {name: "Unknown identifier." for name in sorted(unknown)}
    record_number, message = _record_number(raw.get("record_number"))
    if message:
        errors["record_number"] = message
    email, message = _email_address(raw.get("email"))
    if message:
        errors["email"] = message
    phone, message = _phone(raw.get("phone"))
    if message:
        errors["phone"] = message
    if errors:
        return None, errors
    return Identifiers(record_number=record_number, email=email, phone=phone), {}


def patient_pseudonym(identifiers: Identifiers, *, version: str | None = None) -> str:
    """The patient's pseudonym: the keyed HMAC of the record number (privacy.pseudonyms),
    under the current key or `version`. The record number is what the clinic knows a person
    by; e-mail and phone change, so they do not make the pseudonym."""
    return pseudonym(identifiers.record_number, namespace=NAMESPACE, version=version)


def candidate_pseudonyms(identifiers: Identifiers) -> list[str]:
    """The person's pseudonym under every configured key version, the current one first:
    a person enrolled before a pseudonym key rotation is still found."""
    current = settings.PSEUDONYM_KEY_VERSION
    versions = [current, *sorted(v for v in settings.PSEUDONYM_KEYS if v != current)]
    return [patient_pseudonym(identifiers, version=v) for v in versions]


def _clean(value: str) -> str:
    return unicodedata.normalize("NFKC", value).strip()


def _record_number(value: Any) -> tuple[str, str]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return "", "A record number is required."
    if not isinstance(value, str):
        return "", "A record number is a string."
    value = _clean(value)
    if len(value) > RECORD_NUMBER_MAX:
        return "", f"A record number has at most {RECORD_NUMBER_MAX} characters."
    if any(not ch.isprintable() for ch in value):
        return "", "A record number must not contain control characters."
    return value, ""


def _email_address(value: Any) -> tuple[str, str]:
    if value is None or value == "":
        return "", ""
    if not isinstance(value, str):
        return "", "An e-mail address is a string."
    value = _clean(value)
    try:
        _email(value)
    except ValidationError:
        return "", "Not a valid e-mail address."
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}", ""


def _phone(value: Any) -> tuple[str, str]:
    if value is None or value == "":
        return "", ""
    if not isinstance(value, str):
        return "", "A phone number is a string."
    value = PHONE_PUNCTUATION.sub("", _clean(value))
    plus, digits = value.startswith("+"), value.removeprefix("+")
    low, high = PHONE_DIGITS
    if not digits.isascii() or not digits.isdigit() or not low <= len(digits) <= high:
        return "", f"Not a valid phone number: {low} to {high} digits, optionally after '+'."
    return ("+" if plus else "") + digits, ""
