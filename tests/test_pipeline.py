"""core.pipeline: queries sent together (one round trip on PostgreSQL, one by one elsewhere)
answer each in its order; readers of several steps run together; a failing query raises the
database error, leaves nothing of its transaction and the connection fit for use."""

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from core import pipeline
from core.models import CacheStamp
from core.stamps import stamps_read

pytestmark = pytest.mark.django_db(transaction=True)


def _literal(value: int) -> pipeline.Query:
    return ("SELECT %s + 0", [value])


def test_each_query_gets_its_own_rows_in_order():
    CacheStamp.objects.create(name="one", version=11)
    CacheStamp.objects.create(name="two", version=22)  # beside the stamps seeded
    table = connection.ops.quote_name(CacheStamp._meta.db_table)
    queries = [
        (f"SELECT name, version FROM {table} WHERE name = %s", ["two"]),  # noqa: S608
        _literal(7),
        (f"SELECT name FROM {table} WHERE name = %s", ["none"]),  # noqa: S608
        (f"SELECT version FROM {table} WHERE name IN (%s, %s) ORDER BY 1", ["one", "two"]),  # noqa: S608
    ]

    rows = pipeline.fetch_many(queries)

    assert rows == [[("two", 22)], [(7,)], [], [(11,), (22,)]]


def test_readers_of_several_steps_run_together():
    def doubling(start: int) -> pipeline.Reader[list[int]]:
        [[(first,)], [(second,)]] = yield [_literal(start), _literal(start + 1)]
        [[(third,)]] = yield [_literal(2 * (first + second))]  # a second step
        return [first, second, third]

    def once(value: int) -> pipeline.Reader[int]:
        [[(got,)]] = yield [_literal(value)]
        return got

    def nothing() -> pipeline.Reader[str]:
        return "no query"
        yield []  # a generator that returns before asking anything

    CacheStamp.objects.create(name="pipeline-test", version=5)

    results = pipeline.gather(doubling(1), once(40), nothing(), doubling(10))

    assert results == [[1, 2, 6], 40, "no query", [10, 11, 42]]
    assert stamps_read(("pipeline-test", "never")) == (5, 0)


def test_a_failing_query_raises_and_leaves_nothing_of_its_transaction():
    table = connection.ops.quote_name(CacheStamp._meta.db_table)
    insert = (
        f"INSERT INTO {table} (name, version) VALUES (%s, %s) RETURNING version",  # noqa: S608
        ["written", 1],
    )
    duplicate = (
        f"INSERT INTO {table} (name, version) VALUES (%s, %s) RETURNING version",  # noqa: S608
        ["written", 2],
    )

    with pytest.raises(IntegrityError), transaction.atomic():
        pipeline.fetch_many([insert, _literal(1), duplicate, _literal(2)])

    assert not CacheStamp.objects.filter(name="written").exists()
    # the connection is out of pipeline mode and usable
    assert pipeline.fetch_many([_literal(3), _literal(4)]) == [[(3,)], [(4,)]]


def test_a_reader_that_asks_for_no_query_is_an_error():
    def empty() -> pipeline.Reader[None]:
        yield []

    with pytest.raises(ValueError, match="no query"):
        pipeline.gather(empty())


def test_a_bad_statement_is_a_database_error():
    with pytest.raises(DatabaseError):
        pipeline.fetch_many([_literal(1), ("SELECT * FROM no_such_table", [])])
    assert pipeline.fetch_many([_literal(5)]) == [[(5,)]]
