"""Transaction-scoped locks that order safety changes against deliveries.

Every transaction that moves a nudge towards the patient takes the safety lock shared; a rule
set activation or a template stop takes it exclusively. So a change either commits before a
delivery checks the rules (and the delivery sees it) or waits until the delivery has committed
(and then re-checks what is pending). On PostgreSQL these are advisory locks: held in memory,
they write nothing to any row, and shared holders never wait for each other. SQLite runs one
writing transaction at a time (IMMEDIATE transactions), which orders them already."""

from django.db import connection

SAFETY_LOCK = 0x5AFE7  # an arbitrary constant of this application


def safety_lock_shared() -> None:
    _lock("pg_advisory_xact_lock_shared")


def safety_lock_exclusive() -> None:
    _lock("pg_advisory_xact_lock")


def _lock(function: str) -> None:
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("the safety lock is held until commit: take it in a transaction")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [SAFETY_LOCK])
