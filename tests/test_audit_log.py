"""The audit log (audit/): append-only and hash-chained, so tampering is detected by
`verify_audit_log`; patients are named only under their data key; the chain's head is kept
outside the database too; clinicians' decisions and views of patient facts are recorded."""

import json
from contextlib import contextmanager

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit.models import GENESIS, AuditAction, AuditEntry, AuditHead
from audit.services import chain_head, chain_verify, entries_about, head_file_write, record
from clinicians.services import review_decide
from nudges.models import ReviewRequest
from privacy import crypto
from tests.factories import make_nudge


@pytest.fixture(autouse=True)
def head_file(settings, tmp_path):
    settings.AUDIT_HEAD_FILE = tmp_path / "audit-head.json"
    return settings.AUDIT_HEAD_FILE


@contextmanager
def as_database_owner():
    """Tampering as someone with the database owner's rights, who can switch PostgreSQL's
    append-only trigger off: verification must catch them anyway."""
    switch = "ALTER TABLE audit_auditentry {} TRIGGER audit_entry_append_only"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(switch.format("DISABLE"))
    yield
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(switch.format("ENABLE"))


def three_entries(patient):
    return [
        record(AuditAction.RELEASE, "system:test", detail={"report": "r-1", "epsilon": 0.5}),
        record(AuditAction.EXPORT, "system:test", patient),
        record(AuditAction.KEY_ROTATION, "system:test", detail={"to": "2"}),
    ]


def test_entries_are_numbered_without_gaps_and_each_links_to_the_one_before(patient_a):
    patient, _ = patient_a

    entries = three_entries(patient)

    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert chain_head() == {"seq": 3, "hash": entries[-1].hash}
    assert chain_verify().ok


def test_an_altered_entry_is_detected(patient_a):
    entries = three_entries(patient_a[0])

    with as_database_owner():
        AuditEntry.objects.filter(pk=entries[0].pk).update(detail={"report": "r-2", "epsilon": 0.5})

    result = chain_verify()
    assert not result.ok
    assert "entry 1 was altered" in result.problems[0]


def test_a_removed_entry_is_detected(patient_a):
    entries = three_entries(patient_a[0])

    with as_database_owner():
        AuditEntry.objects.filter(pk=entries[1].pk).delete()

    result = chain_verify()
    assert not result.ok
    assert "entry 2 is missing" in result.problems[0]


def test_removing_the_newest_entry_is_detected_by_the_head(patient_a):
    entries = three_entries(patient_a[0])

    with as_database_owner():
        AuditEntry.objects.filter(pk=entries[-1].pk).delete()

    assert not chain_verify().ok


def test_a_chain_rewritten_consistently_is_caught_by_the_head_kept_outside(patient_a, head_file):
    from audit.services import entry_hash

    entries = three_entries(patient_a[0])
    head_file_write()
    # an attacker with the database rewrites entry 1 and recomputes every hash after it,
    # and the head row too
    prev = GENESIS
    with as_database_owner():
        rewrite = list(AuditEntry.objects.order_by("seq"))
    for entry in rewrite:
        detail = {"report": "forged"} if entry.seq == 1 else entry.detail
        digest = entry_hash(
            prev,
            seq=entry.seq,
            created_at=entry.created_at,
            action=entry.action,
            actor=entry.actor,
            subject_tag=entry.subject_tag,
            subject=entry.subject,
            detail=detail,
        )
        with as_database_owner():
            AuditEntry.objects.filter(pk=entry.pk).update(
                detail=detail, prev_hash=prev, hash=digest
            )
        prev = digest
    AuditHead.objects.update(hash=prev)

    assert chain_verify(head_file=head_file.parent / "absent.json").ok  # the database alone
    result = chain_verify()
    assert not result.ok
    assert "rewritten" in result.problems[0]
    assert json.loads(head_file.read_text())["hash"] == entries[-1].hash


def test_the_head_is_written_outside_the_database_when_an_append_commits(
    patient_a, head_file, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        entry = record(AuditAction.RELEASE, "system:test", detail={"report": "r-1"})

    assert json.loads(head_file.read_text())["seq"] == entry.seq
    assert json.loads(head_file.read_text())["hash"] == entry.hash


def test_verify_audit_log_command_succeeds_on_an_intact_log_and_fails_on_a_tampered_one(
    patient_a, capsys
):
    entries = three_entries(patient_a[0])
    call_command("verify_audit_log")
    assert "verifies: 3 entries" in capsys.readouterr().out

    with as_database_owner():
        AuditEntry.objects.filter(pk=entries[2].pk).update(actor="user:someone-else")

    with pytest.raises(CommandError, match="entry 3 was altered"):
        call_command("verify_audit_log")


def test_a_patient_is_named_only_under_their_data_key(patient_a, patient_b):
    patient, _ = patient_a

    entry = record(AuditAction.EXPORT, "system:test", patient)

    raw = json.dumps([entry.actor, entry.subject, entry.subject_tag, entry.detail])
    assert patient.pseudonym not in raw and str(patient.pk) not in raw
    reference = crypto.decrypt_json(
        patient.data_key(), entry.subject, context=f"audit:{entry.seq}:subject"
    )
    assert reference == {"patient": str(patient.pk), "pseudonym": patient.pseudonym}
    assert entries_about(patient) == [entry]
    assert entries_about(patient_b[0]) == []


def test_a_patient_acting_on_their_own_data_is_recorded_without_their_login_name(patient_a):
    patient, _ = patient_a

    entry = record(AuditAction.EXPORT, patient.user, patient)

    assert entry.actor == "patient"


def test_an_unknown_action_or_a_missing_actor_is_a_programming_error(patient_a):
    with pytest.raises(ValueError):
        record("coffee_break", "system:test")
    with pytest.raises(ValueError):
        record(AuditAction.EXPORT, None)
    assert not AuditEntry.objects.exists()


def test_a_clinicians_review_decision_is_recorded(patient_a, clinician_cardio):
    patient, _ = patient_a
    delivery = make_nudge(patient, review=True)
    request = ReviewRequest.objects.get(delivery=delivery)

    review_decide(
        clinician=clinician_cardio,
        request_id=request.pk,
        verdict="approve",
        reason="appropriate",
    )

    [entry] = AuditEntry.objects.filter(action=AuditAction.REVIEW_DECISION)
    assert entry.actor == "user:clin-cardio"
    assert entry.detail == {
        "review": str(request.pk),
        "verdict": "approve",
        "reason": "appropriate",
    }
    assert entries_about(patient) == [entry]


def test_a_clinician_opening_a_review_item_is_recorded_as_viewing_patient_facts(
    client, patient_a, clinician_cardio
):
    patient, _ = patient_a
    delivery = make_nudge(patient, review=True)
    request = ReviewRequest.objects.get(delivery=delivery)
    client.force_login(clinician_cardio)

    response = client.get(f"/admin/clinicians/reviewqueueitem/{request.pk}/change/")

    assert response.status_code == 200
    [entry] = AuditEntry.objects.filter(action=AuditAction.PATIENT_FACTS_VIEWED)
    assert entry.actor == "user:clin-cardio"
    assert entries_about(patient) == [entry]


def test_a_clinician_outside_the_scope_gets_404_and_nothing_is_recorded(
    client, patient_a, clinician_other
):
    delivery = make_nudge(patient_a[0], review=True)
    request = ReviewRequest.objects.get(delivery=delivery)
    client.force_login(clinician_other)

    response = client.get(f"/admin/clinicians/reviewqueueitem/{request.pk}/change/")

    assert response.status_code == 404
    assert not AuditEntry.objects.filter(action=AuditAction.PATIENT_FACTS_VIEWED).exists()


@pytest.mark.postgres
def test_postgresql_refuses_to_update_or_delete_an_audit_entry(patient_a):
    from django.db import transaction
    from django.db.utils import DatabaseError

    entry = record(AuditAction.RELEASE, "system:test", detail={"report": "r-1"})

    for statement in ("UPDATE audit_auditentry SET actor = 'x'", "DELETE FROM audit_auditentry"):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)
    assert AuditEntry.objects.get(pk=entry.pk).actor == "system:test"
