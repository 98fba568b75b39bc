"""Key rotation: every patient's data key re-wrapped under the master key in use.

Rotating without downtime: add the new key to ENCRYPTION_KEYS under a new version and make it
ENCRYPTION_KEY_VERSION (new data keys are wrapped under it at once, and reads accept both
versions), run `rotate_keys`, then remove the old key. The data itself is encrypted under the
patients' data keys, which do not change, so nothing else has to be re-encrypted."""

from collections import Counter
from typing import Any

from django.db import transaction

from audit.models import AuditAction
from audit.services import record
from patients.models import PatientKey, key_context
from privacy import crypto

BATCH = 500


def data_keys_rewrap(*, actor: Any = "system:rotate_keys", batch_size: int = BATCH) -> dict:
    """Re-wrap, batch by batch (each its own short transaction, rows locked), every data key
    not yet under the current master key version; audited once with the counts. A key
    erased meanwhile is simply gone. Returns {"to": version, "rewrapped": n,
    "from": {version: n}}."""
    target = crypto.current_version()
    crypto.master_keys()  # fail before touching anything when the configuration is wrong
    moved: Counter[str] = Counter()
    while True:
        with transaction.atomic():
            rows = list(
                PatientKey.objects.select_for_update()
                .exclude(master_version=target)
                .order_by("pk")[:batch_size]
            )
            if not rows:
                break
            for row in rows:
                moved[row.master_version] += 1
                data_key = crypto.unwrap(row.wrapped, context=key_context(row.patient_id))
                row.wrapped = crypto.wrap(
                    data_key, context=key_context(row.patient_id), version=target
                )
                row.master_version = target
            PatientKey.objects.bulk_update(rows, ["wrapped", "master_version", "updated_at"])
    summary = {"to": target, "rewrapped": sum(moved.values()), "from": dict(moved)}
    record(AuditAction.KEY_ROTATION, actor, detail=summary)
    return summary


def data_keys_by_version() -> dict[str, int]:
    """How many data keys each master key version wraps."""
    return dict(Counter(PatientKey.objects.values_list("master_version", flat=True).order_by()))
