"""Encryption at rest (privacy/crypto.py, patients/sealed.py, patients/keys.py): sensitive
fields only as ciphertext under a per-patient data key wrapped by a configured master key; a
missing, malformed or wrong key is a clear error, never garbage; rotate_keys re-wraps every
data key while reads accept old and new versions."""

import base64
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from audit.models import AuditAction, AuditEntry
from patients.checks import encryption_keys_match
from patients.models import Patient, PatientKey
from patients.sealed import Sensitive, sensitive_fields
from patients.services import NewPatient, patients_create
from privacy import crypto

ROOT = Path(__file__).resolve().parent.parent


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def create(**sensitive):
    record = NewPatient(
        pseudonym=f"crypto-{os.urandom(4).hex()}",
        age_band="45-59",
        sex="male",
        goals={"activity": 0.5},
        sensitive=Sensitive(**sensitive),
    )
    [(patient, _)] = patients_create(records=[record])
    return Patient.objects.get(pk=patient.pk)  # fresh: nothing cached


SECRET: dict[str, Any] = {
    "date_of_birth": dt.date(1968, 7, 2),
    "email": "grace.hopper@example.org",
    "phone": "+15550100",
    "notes": "Worried about night shifts.",
}


def test_sensitive_fields_are_stored_only_encrypted_and_read_back_with_the_key(db):
    patient = create(**SECRET)

    columns = patient.date_of_birth_sealed + patient.contact_sealed + patient.notes_sealed
    for value in ("1968-07-02", "grace.hopper", "5550100", "night shifts"):
        assert value not in columns
    assert sensitive_fields(patient) == Sensitive(**SECRET)


def test_coarse_fields_stay_usable_in_clear(db):
    patient = create(**SECRET)

    assert Patient.objects.filter(age_band="45-59", sex="male", pk=patient.pk).exists()


def test_each_patient_has_their_own_data_key(db):
    one, two = create(**SECRET), create(**SECRET)

    assert one.data_key() != two.data_key()
    assert one.notes_sealed != two.notes_sealed


def test_a_ciphertext_moved_to_another_patient_does_not_decrypt(db):
    one, two = create(**SECRET), create(notes="")
    # same data key, another row: the ciphertext is bound to its patient and field
    Patient.objects.filter(pk=two.pk).update(notes_sealed=one.notes_sealed)
    PatientKey.objects.filter(patient=two).update(
        wrapped=crypto.wrap(one.data_key(), context=f"patient-key:{two.pk}")
    )

    with pytest.raises(crypto.CryptoError, match="notes"):
        sensitive_fields(Patient.objects.get(pk=two.pk))


def test_a_wrong_master_key_is_a_clear_error_not_garbage(db, settings):
    patient = create(**SECRET)
    settings.ENCRYPTION_KEYS = f"1:{new_key()}"

    with pytest.raises(crypto.CryptoError, match="not the one that wrapped it"):
        sensitive_fields(Patient.objects.get(pk=patient.pk))
    [error] = encryption_keys_match(databases=["default"])
    assert error.id == "patients.E001"


def test_data_under_a_master_key_version_no_longer_configured_is_a_clear_error(db, settings):
    patient = create(**SECRET)
    settings.ENCRYPTION_KEYS = f"2:{new_key()}"
    settings.ENCRYPTION_KEY_VERSION = "2"

    with pytest.raises(crypto.CryptoError, match="version 1, which ENCRYPTION_KEYS does not"):
        Patient.objects.get(pk=patient.pk).data_key()


@pytest.mark.parametrize(
    ("keys", "version", "message"),
    [
        ("", "1", "ENCRYPTION_KEYS is not set"),
        ("1:too-short", "1", "key of version 1 is not a valid key"),
        ("1", "1", "'version:key' pairs"),
        (f"1:{base64.urlsafe_b64encode(os.urandom(32)).decode()}", "2", "no key of that version"),
        (f"1:{base64.urlsafe_b64encode(os.urandom(32)).decode()}", "v-1", "letters and digits"),
    ],
    ids=["missing", "short", "no-version", "version-absent", "bad-version"],
)
def test_a_missing_or_malformed_key_configuration_is_refused_naming_the_setting(
    settings, keys, version, message
):
    settings.ENCRYPTION_KEYS = keys
    settings.ENCRYPTION_KEY_VERSION = version

    with pytest.raises(ImproperlyConfigured, match=message) as raised:
        crypto.master_keys()
    assert "too-short" not in str(raised.value)


def test_the_application_refuses_to_start_with_a_malformed_key(tmp_path):
    env = {
        **os.environ,
        "NUDGE_DATA_DIR": str(tmp_path),
        "ENCRYPTION_KEYS": "1:not-a-real-key",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }

    run = subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode != 0
    assert "ImproperlyConfigured" in run.stderr
    assert "ENCRYPTION_KEYS" in run.stderr
    assert "not-a-real-key" not in run.stderr


def test_rotate_keys_rewraps_every_data_key_and_reads_work_throughout(db, settings, capsys):
    old = create(**SECRET)
    settings.ENCRYPTION_KEYS = f"{settings.ENCRYPTION_KEYS},2:{new_key()}"
    settings.ENCRYPTION_KEY_VERSION = "2"
    # mid-rotation: the old patient reads under version 1, a new one is wrapped under 2
    new = create(notes="new")
    assert sensitive_fields(Patient.objects.get(pk=old.pk)) == Sensitive(**SECRET)
    assert PatientKey.objects.get(patient=new).master_version == "2"

    call_command("rotate_keys")

    assert set(PatientKey.objects.values_list("master_version", flat=True)) == {"2"}
    assert "version 2: " in capsys.readouterr().out
    [entry] = AuditEntry.objects.filter(action=AuditAction.KEY_ROTATION)
    assert entry.detail["to"] == "2" and entry.detail["from"]["1"] >= 1
    # the old key can go: everything reads under version 2 alone
    settings.ENCRYPTION_KEYS = settings.ENCRYPTION_KEYS.split(",")[1]
    assert sensitive_fields(Patient.objects.get(pk=old.pk)) == Sensitive(**SECRET)
    assert sensitive_fields(Patient.objects.get(pk=new.pk)).notes == "new"
    assert encryption_keys_match(databases=["default"]) == []


def test_rotate_keys_with_nothing_to_do_changes_nothing(db, capsys):
    patient = create(**SECRET)
    before = PatientKey.objects.get(patient=patient).wrapped

    call_command("rotate_keys")

    assert PatientKey.objects.get(patient=patient).wrapped == before
    assert "Re-wrapped 0 data keys" in capsys.readouterr().out
