"""Django's PostgreSQL backend with three changes: a cheaper health check, integers kept
whole, and statements with too many parameters still run.

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
"""

from __future__ import annotations

import time
from typing import Any

from django.db.backends.postgresql import base, operations
from psycopg import ClientCursor
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
        if params is not None and len(params) > MAX_BOUND_PARAMETERS:
            query, params = ClientCursor(self.connection).mogrify(query, params), None
        return super().execute(query, params, **kwargs)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    proven_at = float("-inf")

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        if params.get("cursor_factory") is base.ServerBindingCursor:
            params["cursor_factory"] = ServerBindingCursor
        return params

    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled  # type: ignore[attr-defined]  # not in django-stubs
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
