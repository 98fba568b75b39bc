"""Appending to the audit log and verifying it (audit.models says what the chain guarantees).

Other apps call `record(action, actor, patient=None, detail={})` inside the transaction of
the action it records, so an entry exists exactly when the action committed. `detail` is
stored in clear: it must never hold an identifier, free text about a patient or health
data (ids of rows, verdicts, counts and reasons codes are fine). The patient goes in through
their data key only. `chain_head()` gives the latest link, e.g. for signed report manifests.

This app imports no other app of the project (only core and the pure privacy.crypto): a
patient is anything with `pk`, `pseudonym` and `data_key()`."""

import datetime as dt
import fcntl
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import GENESIS, AuditAction, AuditEntry, AuditHead
from privacy import crypto

logger = logging.getLogger(__name__)
HEAD = "main"
SUBJECT_TAG_PURPOSE = "audit-subject"


class Subject(Protocol):
    pk: Any
    pseudonym: str

    def data_key(self) -> bytes: ...


def record(
    action: str, actor: Any, patient: Subject | None = None, detail: dict | None = None
) -> AuditEntry:
    """Append one entry under the head row's lock: sequence numbers have no gaps and each
    entry links to the one before. `actor` is a user or a short name ("system:rotate_keys");
    a patient acting on their own data is recorded as "patient" (their login name is their
    pseudonym, which must not appear in clear)."""
    if action not in AuditAction.values:
        raise ValueError(f"unknown audit action {action!r}")
    detail = _canonical(detail or {})
    key = patient.data_key() if patient is not None else None
    with transaction.atomic():
        head = _locked_head()
        seq = head.seq + 1
        at = timezone.now()
        tag, subject = "", ""
        if key is not None and patient is not None:
            tag = crypto.keyed_tag(key, SUBJECT_TAG_PURPOSE)
            subject = crypto.encrypt_json(
                key,
                {"patient": str(patient.pk), "pseudonym": patient.pseudonym},
                context=f"audit:{seq}:subject",
            )
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": at,
            "action": action,
            "actor": _actor_name(actor),
            "subject_tag": tag,
            "subject": subject,
            "detail": detail,
        }
        digest = entry_hash(head.hash, **fields)
        entry = AuditEntry.objects.create(**fields, prev_hash=head.hash, hash=digest)
        AuditHead.objects.filter(pk=HEAD).update(seq=seq, hash=digest)
        transaction.on_commit(head_file_write, robust=True)
    return entry


def chain_head() -> dict[str, Any]:
    """The latest link of the chain: {"seq": n, "hash": hex} (seq 0 and the genesis hash when
    the log is empty)."""
    head = AuditHead.objects.filter(pk=HEAD).first()
    if head is None:
        return {"seq": 0, "hash": GENESIS}
    return {"seq": head.seq, "hash": head.hash}


def entries_about(patient: Subject) -> list[AuditEntry]:
    """The entries that name this patient (found by the tag their data key gives)."""
    tag = crypto.keyed_tag(patient.data_key(), SUBJECT_TAG_PURPOSE)
    return list(AuditEntry.objects.filter(subject_tag=tag).order_by("seq"))


def entry_hash(
    prev_hash: str,
    *,
    seq: int,
    created_at: dt.datetime,
    action: str,
    actor: str,
    subject_tag: str,
    subject: str,
    detail: Any,
) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
            "action": action,
            "actor": actor,
            "subject_tag": subject_tag,
            "subject": subject,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass
class Verification:
    entries: int = 0
    head: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def chain_verify(*, head_file: Path | None = None) -> Verification:
    """Recompute every link in order. Reports the first entry whose content no longer matches
    its hash, a break in the links or in the sequence, a head row that disagrees with the last
    entry, and a head kept outside the database (head_file, by default AUDIT_HEAD_FILE when
    it exists) that the chain does not contain."""
    result = Verification(head=chain_head())
    outside = _read_head_file(head_file)
    outside_seq = int(outside.get("seq", -1)) if outside is not None else 0
    prev, expected_seq, at_outside_seq = GENESIS, 1, ""
    for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        result.entries += 1
        if entry.seq != expected_seq:
            result.problems.append(f"entry {expected_seq} is missing (next is {entry.seq})")
            break
        if entry.prev_hash != prev:
            result.problems.append(f"entry {entry.seq} does not link to entry {entry.seq - 1}")
            break
        fields: dict[str, Any] = {
            "seq": entry.seq,
            "created_at": entry.created_at,
            "action": entry.action,
            "actor": entry.actor,
            "subject_tag": entry.subject_tag,
            "subject": entry.subject,
            "detail": entry.detail,
        }
        if entry_hash(prev, **fields) != entry.hash:
            result.problems.append(f"entry {entry.seq} was altered (its hash does not match)")
            break
        prev, expected_seq = entry.hash, expected_seq + 1
        if entry.seq == outside_seq:
            at_outside_seq = entry.hash
    if not result.problems and (result.head["seq"], result.head["hash"]) != (
        expected_seq - 1,
        prev,
    ):
        result.problems.append(
            f"the head row says entry {result.head['seq']}, the chain ends at entry "
            f"{expected_seq - 1}"
        )
    if outside is not None and not result.problems:
        if outside_seq < 0:
            result.problems.append("the head kept outside the database is unreadable")
        elif outside_seq > expected_seq - 1:
            result.problems.append(
                f"the head kept outside the database is entry {outside_seq}, beyond the "
                f"chain's end ({expected_seq - 1}): entries were removed"
            )
        elif outside_seq > 0 and at_outside_seq != str(outside.get("hash", "")):
            result.problems.append(
                f"entry {outside_seq} differs from the head kept outside the database: the "
                "chain was rewritten"
            )
    return result


def head_file_write(path: Path | None = None) -> None:
    """Copy the head to AUDIT_HEAD_FILE (after each append commits), under a file lock and
    only forwards, so concurrent writers leave the newest head."""
    path = Path(path or settings.AUDIT_HEAD_FILE)
    head = chain_head()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = _read_head_file(path)
        if current is not None and int(current.get("seq", 0)) >= head["seq"]:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**head, "written_at": timezone.now().isoformat()}))
        tmp.replace(path)


def _read_head_file(path: Path | None) -> dict[str, Any] | None:
    path = Path(path or settings.AUDIT_HEAD_FILE)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"seq": -1, "hash": "unreadable"}


def _locked_head() -> AuditHead:
    head = AuditHead.objects.select_for_update().filter(pk=HEAD).first()
    if head is None:
        AuditHead.objects.bulk_create([AuditHead(name=HEAD)], ignore_conflicts=True)
        head = AuditHead.objects.select_for_update().get(pk=HEAD)
    return head


def _actor_name(actor: Any) -> str:
    if isinstance(actor, str):
        return actor[:160]
    if getattr(actor, "is_authenticated", False):
        if hasattr(actor, "patient"):
            return "patient"
        return f"user:{actor.get_username()}"[:160]
    raise ValueError("an audit entry needs an actor: a user or a name such as 'system:...'")


def _canonical(detail: dict) -> Any:
    """As the JSON column will give it back, so the hash recomputes the same."""
    return json.loads(json.dumps(detail, sort_keys=True))
