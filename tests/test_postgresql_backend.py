"""Our PostgreSQL backend (core/postgresql): parameters bound on the server keep integers
beyond 32 bits exact, a statement with more parameters than the protocol carries still runs,
the health check skips only a connection proven in the last second, and timestamps are read
by psycopg's compiled loader, aware in UTC."""

import uuid

import pytest
from django.db import OperationalError, connection, connections
from django.db.models import F, Value

from core.postgresql import base as backend
from privacy.models import PrivacyBudget

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_an_integer_beyond_32_bits_in_an_expression_reaches_postgresql_whole():
    budget = PrivacyBudget.objects.create(period="2031-01", cap_nanorho=2_000_000_000)
    over_the_cap = PrivacyBudget.objects.filter(
        pk=budget.pk, spent_nanorho__lte=F("cap_nanorho") - 5_000_000_000
    )
    assert not over_the_cap.exists()  # 2e9 - 5e9 < 0; wrapped to 32 bits it would be 1.3e9
    total = PrivacyBudget.objects.filter(pk=budget.pk).annotate(
        more=F("cap_nanorho") + Value(2**40)
    )
    assert total.get().more == 2_000_000_000 + 2**40


def test_an_integer_beyond_64_bits_is_computed_exactly_not_wrapped():
    budget = PrivacyBudget.objects.create(period="2031-02", cap_nanorho=2_000_000_000)
    rows = PrivacyBudget.objects.filter(pk=budget.pk)
    assert rows.filter(cap_nanorho__lte=F("spent_nanorho") + 2**70).exists()
    assert not rows.filter(cap_nanorho__lte=F("spent_nanorho") - 2**70 + 2**64).exists()


@pytest.fixture
def own_connection():
    """A second connection to the test database, as a server thread holds one."""
    wrapper = connections.create_connection("default")
    yield wrapper
    wrapper.close()


def _request(wrapper) -> int:
    """What a request does with its connection: Django's start-of-request hook, one query,
    the end-of-request hook. Returns the server process that answered."""
    wrapper.close_if_unusable_or_obsolete()
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        wrapper.close_if_unusable_or_obsolete()


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_a_connection_idle_past_the_window_is_checked_and_replaced_when_it_died(own_connection):
    assert own_connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    first = _request(own_connection)
    _terminate(first)
    own_connection.proven_at -= backend.PROVEN_SECONDS  # idle for longer than the window

    second = _request(own_connection)

    assert second != first  # the check found it dead and Django connected again


def test_a_connection_proven_this_second_skips_the_check_and_a_failure_closes_it(own_connection):
    first = _request(own_connection)
    assert own_connection.proven_at > float("-inf")
    _terminate(first)

    # Within the window the check is skipped: the request's query fails loudly, and the
    # end-of-request hook drops the broken connection.
    with pytest.raises(OperationalError):
        _request(own_connection)
    assert own_connection.connection is None

    assert _request(own_connection) != first


def test_a_request_that_did_not_use_the_connection_proves_nothing(own_connection):
    _request(own_connection)
    own_connection.proven_at -= backend.PROVEN_SECONDS
    before = own_connection.proven_at

    own_connection.close_if_unusable_or_obsolete()  # a request that ran no query
    own_connection.close_if_unusable_or_obsolete()

    assert own_connection.proven_at == before


def test_a_statement_with_more_parameters_than_the_protocol_carries_still_runs():
    budget = PrivacyBudget.objects.create(period="2031-03", cap_nanorho=2_000_000_000)
    keys = [uuid.uuid4() for _ in range(backend.MAX_BOUND_PARAMETERS + 10)] + [budget.pk]
    found = PrivacyBudget.objects.filter(pk__in=keys, period="2031-03")
    assert list(found.values_list("pk", flat=True)) == [budget.pk]


def test_timestamps_are_read_aware_in_utc_by_psycopgs_compiled_loader():
    import datetime as dt

    from django.utils import timezone
    from psycopg.pq import Format

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::timestamptz, '2026-03-29 01:30:00.123456+02'::timestamptz,"
            " NULL::timestamptz",
            [timezone.now().replace(microsecond=7)],
        )
        written, shifted, missing = cursor.fetchone()
        loader = cursor.connection.adapters.get_loader(backend.TIMESTAMPTZ, Format.TEXT)

    assert written.tzinfo is dt.UTC and written.microsecond == 7
    assert shifted == dt.datetime(2026, 3, 28, 23, 30, 0, 123456, tzinfo=dt.UTC)
    assert shifted.tzinfo is dt.UTC
    assert missing is None
    assert loader is backend.COMPILED_TZ_LOADER
    # What the ORM reads back is what it wrote, aware, in UTC.
    budget = PrivacyBudget.objects.create(period="2031-03", cap_nanorho=1)
    assert PrivacyBudget.objects.get(pk=budget.pk).created_at == budget.created_at
    assert PrivacyBudget.objects.get(pk=budget.pk).created_at.tzinfo is dt.UTC
    # And through a server-side cursor (iterator()), which Django names.
    [streamed] = PrivacyBudget.objects.filter(pk=budget.pk).iterator(chunk_size=1)
    assert streamed.created_at == budget.created_at and streamed.created_at.tzinfo is dt.UTC
