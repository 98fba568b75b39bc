"""System check (run by `migrate` and `manage.py check --database default`): every master
key version that wraps stored data keys is configured and really unwraps them."""

from typing import Any

from django.core import checks
from django.db import DatabaseError

from privacy import crypto

SAMPLE_PER_VERSION = 3


def register() -> None:
    checks.register(encryption_keys_match, checks.Tags.database)


def encryption_keys_match(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list:
    if not databases:
        return []
    from patients.models import PatientKey, key_context

    errors = []
    try:
        versions = set(PatientKey.objects.values_list("master_version", flat=True).distinct())
        for version in sorted(versions):
            sample = PatientKey.objects.filter(master_version=version).values_list(
                "patient_id", "wrapped"
            )[:SAMPLE_PER_VERSION]
            for patient_id, wrapped in sample:
                try:
                    crypto.unwrap(wrapped, context=key_context(patient_id))
                except crypto.CryptoError as error:
                    errors.append(checks.Error(str(error), id="patients.E001"))
                    break
    except DatabaseError:
        return []  # not migrated yet: nothing stored to check
    return errors
