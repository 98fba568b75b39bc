"""The audit log of sensitive actions: append-only and hash-chained. Each entry's hash covers
the previous entry's hash and its own content, so changing, removing or reordering an entry
breaks every later link (`verify_audit_log`). A patient is named only by data under that
patient's data key: a keyed tag (to find their entries while the key exists) and an encrypted
reference. Erasure destroys the key; the entries stay and still verify, since the chain hashes
the ciphertext, but nobody can tell whom they were about any more."""

from django.db import models

from core.models import BaseModel

GENESIS = "0" * 64


class AuditAction(models.TextChoices):
    REIDENTIFICATION = "reidentification", "Re-identification from the identity vault"
    PATIENT_FACTS_VIEWED = "patient_facts_viewed", "A clinician viewed a patient's facts"
    REVIEW_DECISION = "review_decision", "A clinician decided a review item"
    APPROVAL = "approval", "An approval (e.g. of a report release)"
    RELEASE = "release", "A release of an aggregate report"
    EXPORT = "export", "An export of a patient's data"
    ERASURE = "erasure", "An erasure of a patient"
    KEY_ROTATION = "key_rotation", "A rotation of encryption keys"
    RETENTION_PURGE = "retention_purge", "A purge of raw events past retention"


class AuditEntry(BaseModel):
    """One sensitive action. Written only by audit.services.record; never updated or deleted
    (on PostgreSQL a trigger refuses both)."""

    seq = models.PositiveBigIntegerField(unique=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    actor = models.CharField(max_length=160)
    subject_tag = models.CharField(max_length=32, blank=True, db_index=True)
    subject = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"#{self.seq} {self.action}"


class AuditHead(models.Model):
    """The chain's latest sequence number and hash, in one row that appenders lock (so two
    appends never fork the chain). A copy is kept outside the database (AUDIT_HEAD_FILE)."""

    name = models.CharField(max_length=16, primary_key=True)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS)

    def __str__(self) -> str:
        return f"{self.name}@{self.seq}"
