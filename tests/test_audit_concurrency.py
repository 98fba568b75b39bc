"""On PostgreSQL, concurrent appends to the audit log queue on the head row: the chain never
forks and sequence numbers have no gaps."""

import threading

import pytest
from django.db import connection

from audit.models import AuditAction, AuditEntry
from audit.services import chain_verify, record

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_appends_form_one_unbroken_chain(settings, tmp_path):
    settings.AUDIT_HEAD_FILE = tmp_path / "head.json"
    n, per_thread = 8, 5
    barrier = threading.Barrier(n)
    errors: list[Exception] = []

    def append(i: int) -> None:
        try:
            barrier.wait()
            for j in range(per_thread):
                record(AuditAction.RELEASE, f"system:thread-{i}", detail={"n": j})
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=append, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert sorted(AuditEntry.objects.values_list("seq", flat=True)) == list(
        range(1, n * per_thread + 1)
    )
    result = chain_verify()
    assert result.ok, result.problems
    assert result.entries == n * per_thread
