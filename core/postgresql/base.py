"""Django's PostgreSQL backend with four changes: a cheaper health check, integers kept
whole, statements with too many parameters still run, and timestamps read by psycopg's
compiled loader.

`CONN_HEALTH_CHECKS` makes Django send `SELECT 1` before a kept-alive connection's first
query in each request: a round trip that cost the inbox about 15% of its CPU under load
(docs/benchmarks.md). Here a connection that finished a request or task without a database
error less than `PROVEN_SECONDS` ago skips that check; one idle for longer is checked as
before. So after PostgreSQL restarts, only a connection that served a request in the second
before the restart can fail one request, and Django closes it afterwards (its error marks it
unusable): the same as without the check, for that second only.

Binding parameters on the server (config/settings.py turns it on) needs two fixes. Django
wraps an integer compared with or added to an integer expression in psycopg's `Int4` (for an
`IntegerField` or a bare `Value(int)`), and psycopg's binary `Int4` wraps a value beyond 32
bits around silently: `F("cap") - 5_000_000_000` reached PostgreSQL as `cap - 705032704`,
which let the privacy ledger's conditional debit pass a spend over the cap. Such values go
as `Int8` here (or unwrapped past 64 bits), so PostgreSQL computes with them or refuses them.
And the protocol carries at most 65,535 parameters per statement, which Django does not split
for PostgreSQL: a statement with more is formatted on the client instead (ServerBindingCursor).

Django reads a timestamptz column with a subclass of psycopg's pure-Python loader, which puts
Django's time zone on each value: every timestamp read was parsed in Python (about a tenth of
an inbox fetch's CPU, docs/benchmarks.md). With USE_TZ the session's time zone is UTC, so
psycopg's compiled loader already gives what Django's does, an aware datetime in
`datetime.timezone.utc`: this backend registers that one instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import Any

import psycopg
from django.db.backends.postgresql import base, operations
from psycopg import ClientCursor, adapt
from psycopg.pq import Format
from psycopg.types.numeric import Int2, Int4, Int8

PROVEN_SECONDS = 1.0
MAX_BOUND_PARAMETERS = 65535
_BITS = {Int2: 16, Int4: 32, Int8: 64}


class DatabaseOperations(operations.DatabaseOperations):
    def adapt_integerfield_value(self, value: Any, internal_type: str) -> Any:
        adapted = super().adapt_integerfield_value(value, internal_type)
        bits = _BITS.get(type(adapted))
        if bits is None or -(2 ** (bits - 1)) <= adapted < 2 ** (bits - 1):
            return adapted
        return Int8(adapted) if -(2**63) <= adapted < 2**63 else int(adapted)


class ServerBindingCursor(base.ServerBindingCursor):
    """Binds parameters on the server, except for a statement with more than the protocol's
    16-bit count can carry (a long `pk__in=` list, a large `bulk_create`): that one is
    formatted on the client, as Django's default cursor formats every statement, instead of
    failing."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        # django-stubs declare Django's cursors without their psycopg base (Cursor).
        if params is not None and len(params) > MAX_BOUND_PARAMETERS:
            query, params = ClientCursor(self.connection).mogrify(query, params), None  # type: ignore[attr-defined]
        return super().execute(query, params, **kwargs)  # type: ignore[misc]


TIMESTAMPTZ = psycopg.adapters.types["timestamptz"].oid
# The loader psycopg registers by default: its compiled one when the C extension is installed.
COMPILED_TZ_LOADER = psycopg.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


@functools.lru_cache
def _adapters(template: adapt.AdaptersMap) -> adapt.AdaptersMap:
    """Django's adapters for a connection in UTC, with psycopg's own timestamptz loader."""
    assert COMPILED_TZ_LOADER is not None  # psycopg always registers a timestamptz loader
    adapters = adapt.AdaptersMap(template)
    adapters.register_loader(TIMESTAMPTZ, COMPILED_TZ_LOADER)
    return adapters


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    proven_at = float("-inf")
    # Set by Django's BaseDatabaseWrapper; not in django-stubs.
    health_check_enabled: bool
    health_check_done: bool

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if params.get("cursor_factory") is base.ServerBindingCursor:
            params["cursor_factory"] = ServerBindingCursor
        if self._utc and "context" in params:
            params["context"] = _adapters(params["context"])
        return params

    @property
    def _utc(self) -> bool:
        return self.timezone is dt.UTC

    def create_cursor(self, name: str | None = None) -> Any:
        """Django's, less its check of the timestamptz loader's time zone attribute, which
        the compiled loader does not have (in UTC no cursor needs a loader of its own)."""
        if not self._utc:
            return super().create_cursor(name)
        if not name:
            return self.connection.cursor()
        autocommit = self.connection.autocommit
        if self.settings_dict["OPTIONS"].get("server_side_binding") is not True:
            # django-stubs declare Django's cursors without their psycopg base (Cursor).
            return base.ServerSideCursor(  # type: ignore[call-arg]
                self.connection, name=name, scrollable=False, withhold=autocommit
            )
        return self.connection.cursor(name, scrollable=False, withhold=autocommit)

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and time.monotonic() - self.proven_at < PROVEN_SECONDS
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def close_if_unusable_or_obsolete(self) -> None:
        # Django calls this when a request or task starts and when it ends. Only the end of one
        # that used the connection (its health check done or skipped) without an error proves it.
        used = self.connection is not None and self.health_check_done
        used = used and not self.errors_occurred and not self.in_atomic_block
        super().close_if_unusable_or_obsolete()
        if used and self.connection is not None:
            self.proven_at = time.monotonic()
