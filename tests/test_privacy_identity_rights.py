"""The patient's rights (patients/rights.py): export of everything held about them
(GET /api/v1/me/export/), erasure (DELETE /api/v1/me/) with their data key destroyed, and
authorised, audited re-identification from the vault."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditAction, AuditEntry
from audit.services import chain_verify
from nudges.models import Decision, DecisionPoint, Delivery, Event
from nudges.services.events import events_record
from patients.enrolment import Enrolment
from patients.models import Consent, IdentityVault, Patient, PatientKey
from patients.rights import patient_reidentify
from privacy import crypto
from privacy.enrolment import enrolments_create
from tests.factories import UserFactory, make_nudge

IDENTIFIERS = {
    "record_number": "RN-5511",
    "email": "mary.seacole@example.org",
    "phone": "+44 7700 900123",
}


@pytest.fixture(autouse=True)
def head_file(settings, tmp_path):
    settings.AUDIT_HEAD_FILE = tmp_path / "audit-head.json"


@pytest.fixture
def enrolled(db):
    [result] = enrolments_create(
        records=[
            Enrolment(
                identifiers=IDENTIFIERS,
                date_of_birth=dt.date(1955, 11, 23),
                sex="female",
                goals={"activity": 0.8, "sleep": 0.4},
                conditions=["I10"],
                notes="Lives alone; prefers evening reminders.",
            )
        ]
    )
    patient = Patient.objects.get(pk=result.patient.pk)
    Patient.objects.filter(pk=patient.pk).update(quiet_start=dt.time(0, 0), quiet_end=dt.time(0, 0))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {result.token}")
    return patient, client


def with_history(patient):
    delivery = make_nudge(patient)
    events_record(
        patient=patient,
        events=[
            {"client_id": "e-1", "kind": "steps", "value": 4321.0, "occurred_at": timezone.now()}
        ],
    )
    return delivery


def test_the_export_holds_everything_about_the_patient_with_sensitive_fields_decrypted(
    enrolled, patient_b
):
    patient, client = enrolled
    delivery = with_history(patient)
    make_nudge(patient_b[0])

    response = client.get("/api/v1/me/export/")

    assert response.status_code == 200
    body = response.json()
    assert body["patient"]["pseudonym"] == patient.pseudonym
    assert body["patient"]["date_of_birth"] == "1955-11-23"
    assert body["patient"]["email"] == "mary.seacole@example.org"
    assert body["patient"]["notes"] == "Lives alone; prefers evening reminders."
    assert body["identifiers"]["record_number"] == "RN-5511"
    records = body["records"]
    assert [row["id"] for row in records["nudges.delivery"]] == [str(delivery.pk)]
    assert [row["id"] for row in records["nudges.decision"]] == [str(delivery.decision_id)]
    assert records["nudges.decision"][0]["receipt"]["consent"]["personalisation"] is True
    assert [row["value"] for row in records["nudges.event"]] == [4321.0]
    assert {row["code"] for row in records["patients.condition"]} == {"I10"}
    assert {row["purpose"] for row in records["patients.consent"]} == {
        "personalisation",
        "notifications",
        "research",
    }
    # nothing of another patient, no key material
    other_rows = [
        row
        for rows in records.values()
        for row in rows
        if row.get("patient") not in (None, str(patient.pk))
    ]
    assert other_rows == []
    assert "patients.patientkey" not in records
    assert PatientKey.objects.get(patient=patient).wrapped not in response.content.decode()


def test_an_export_is_audited_and_listed_in_the_next_export(enrolled):
    patient, client = enrolled

    client.get("/api/v1/me/export/")
    body = client.get("/api/v1/me/export/").json()

    entries = AuditEntry.objects.filter(action=AuditAction.EXPORT)
    assert entries.count() == 2
    assert all(e.actor == "patient" for e in entries)
    assert [e["action"] for e in body["audit"]] == ["export", "export"]


def test_erasure_deletes_the_patient_and_everything_that_is_theirs(enrolled, patient_b):
    patient, client = enrolled
    with_history(patient)
    other_delivery = make_nudge(patient_b[0])
    user_id = patient.user_id

    response = client.delete("/api/v1/me/")

    assert response.status_code == 204
    assert not Patient.objects.filter(pk=patient.pk).exists()
    assert not get_user_model().objects.filter(pk=user_id).exists()
    for model in (DecisionPoint, Decision, Delivery, Event, Consent, IdentityVault, PatientKey):
        assert not model.objects.filter(patient_id=patient.pk).exists(), model
    # the other patient is untouched
    assert Delivery.objects.filter(pk=other_delivery.pk).exists()
    assert client.get("/api/v1/me/").status_code == 401


def test_after_erasure_the_audit_trail_verifies_but_no_longer_names_the_patient(enrolled):
    patient, client = enrolled
    client.get("/api/v1/me/export/")
    data_key = patient.data_key()

    client.delete("/api/v1/me/")

    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.action for e in entries] == ["export", "erasure"]
    assert chain_verify().ok
    # the key is gone from the database; with it (as an attacker would need) the reference
    # would read, which is exactly what destroying it prevents
    assert not PatientKey.objects.exists()
    for entry in entries:
        assert patient.pseudonym not in entry.subject
        with pytest.raises(crypto.CryptoError):
            crypto.decrypt_json(
                crypto.new_data_key(), entry.subject, context=f"audit:{entry.seq}:subject"
            )
        assert crypto.decrypt_json(data_key, entry.subject, context=f"audit:{entry.seq}:subject")


def test_only_the_patient_may_erase_themself(outsider_api, anonymous, patient_a):
    assert outsider_api.delete("/api/v1/me/").status_code == 403
    assert anonymous.delete("/api/v1/me/").status_code == 401
    assert Patient.objects.filter(pk=patient_a[0].pk).exists()


def test_get_and_patch_of_me_still_work_beside_delete(api_a):
    assert api_a.get("/api/v1/me/").status_code == 200
    assert (
        api_a.patch("/api/v1/me/", {"timezone": "Europe/Paris"}, format="json").json()["timezone"]
        == "Europe/Paris"
    )


def test_export_is_for_the_patient_only(outsider_api, anonymous):
    assert outsider_api.get("/api/v1/me/export/").status_code == 403
    assert anonymous.get("/api/v1/me/export/").status_code == 401


@pytest.fixture
def privacy_officer(db):
    user = UserFactory.create(username="privacy-officer")
    user.user_permissions.add(Permission.objects.get(codename="reidentify_patient"))
    return get_user_model().objects.get(pk=user.pk)  # fresh permission cache


def test_an_authorised_user_re_identifies_a_patient_and_it_is_audited(enrolled, privacy_officer):
    patient, _ = enrolled

    identifiers = patient_reidentify(
        pseudonym=patient.pseudonym, actor=privacy_officer, reason="safety_incident"
    )

    assert identifiers.record_number == "RN-5511"
    assert identifiers.phone == "+447700900123"
    [entry] = AuditEntry.objects.filter(action=AuditAction.REIDENTIFICATION)
    assert entry.actor == "user:privacy-officer"
    assert entry.detail == {"reason": "safety_incident"}


def test_re_identification_without_the_permission_or_a_reason_is_refused_and_reads_nothing(
    enrolled, privacy_officer, clinician_cardio
):
    patient, _ = enrolled
    from core.errors import ApplicationError

    with pytest.raises(ApplicationError) as refused:
        patient_reidentify(pseudonym=patient.pseudonym, actor=clinician_cardio, reason="x")
    assert refused.value.status == 403
    with pytest.raises(ApplicationError) as no_reason:
        patient_reidentify(pseudonym=patient.pseudonym, actor=privacy_officer, reason="curious")
    assert "reason" in no_reason.value.fields
    with pytest.raises(ApplicationError) as unknown:
        patient_reidentify(
            pseudonym="p1_" + "0" * 32, actor=privacy_officer, reason="safety_incident"
        )
    assert unknown.value.status == 404
    assert not AuditEntry.objects.exists()


def test_the_reidentify_command_prints_the_identifiers_for_an_authorised_user(
    enrolled, privacy_officer, capsys
):
    patient, _ = enrolled

    call_command("reidentify", patient.pseudonym, user="privacy-officer", reason="patient_request")

    assert "RN-5511" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("reidentify", patient.pseudonym, user="nobody", reason="patient_request")
