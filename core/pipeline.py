"""Reads sent together. A decision makes several independent reads once its patients are
locked (the claim of its decision points, the cache stamps, the patients' deliveries and
facts); one after another they cost a round trip each, and on a busy machine each round trip
is also a wait for the database's process and then for the interpreter lock. On PostgreSQL
`fetch_many` queues them in psycopg's pipeline mode and sends them with one Sync, one round
trip; elsewhere it runs them one by one.

A reader is a generator that yields a list of queries (sql, params) and is sent back the list
of their rows, as many times as it needs, and returns its result; `gather` runs several
readers' queries together, step by step. Every query must return rows (an INSERT has a
RETURNING clause)."""

from collections.abc import Generator, Sequence
from typing import Any, TypeVar

from django.db import connection

Query = tuple[str, Sequence[Any]]
Rows = list[tuple]
T = TypeVar("T")
Reader = Generator[list[Query], list[Rows], T]


def fetch_many(queries: Sequence[Query]) -> list[Rows]:
    """The rows of each query, run in order in one round trip on PostgreSQL. Inside a
    transaction an error aborts it as any failed statement does."""
    if connection.vendor != "postgresql" or len(queries) < 2:
        return [_fetch(sql, params) for sql, params in queries]
    connection.ensure_connection()
    cursors = []
    try:
        with connection.wrap_database_errors:
            # In pipeline mode a query executed is only queued; leaving the block sends a Sync
            # and reads every answer into its cursor: one round trip, prepared statements
            # kept. (A fetch inside the block would cost a round trip of its own.)
            with connection.connection.pipeline():
                for sql, params in queries:
                    cursor = connection.cursor()
                    cursors.append(cursor)
                    cursor.execute(sql, params)
            return [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


def _fetch(sql: str, params: Sequence[Any]) -> Rows:
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.execute(sql, params)
        return cursor.fetchall()


def run(reader: Reader[T]) -> T:
    """Drive a reader: each of its steps' queries in one fetch_many."""
    try:
        queries = next(reader)
        while True:
            queries = reader.send(fetch_many(queries))
    except StopIteration as done:
        return done.value


def gather(*readers: Reader[Any]) -> list[Any]:
    """Run the readers together (see together)."""
    return run(together(*readers))


def together(*readers: Reader[Any]) -> Reader[list[Any]]:
    """One reader of several: each step's queries, of every reader still reading, asked at
    once. Its result is each reader's, in order."""
    results: list[Any] = [None] * len(readers)
    asked: dict[int, list[Query]] = {}
    for i, reader in enumerate(readers):
        _advance(i, reader, None, asked, results)
    while asked:
        answers = iter((yield [query for queries in asked.values() for query in queries]))
        step, asked = asked, {}
        for i, queries in step.items():
            _advance(i, readers[i], [next(answers) for _ in queries], asked, results)
    return results


def _advance(
    i: int,
    reader: Reader[Any],
    answer: list[Rows] | None,
    asked: dict[int, list[Query]],
    results: list[Any],
) -> None:
    try:
        queries = next(reader) if answer is None else reader.send(answer)
    except StopIteration as done:
        results[i] = done.value
        return
    if not queries:
        raise ValueError("a reader asked for no query")
    asked[i] = queries
