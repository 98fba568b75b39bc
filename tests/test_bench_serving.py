"""The serving benchmarks end to end, at their quick scale: `manage.py bench decision` and
`bench inbox` start gunicorn with our configuration on PostgreSQL, drive it with the load
generator and read back what was written. These tests hold the figures to what happened (every
request answered, each answered decision request one decision, the rounds adding up to the
requests); how fast is for the benchmarks themselves and docs/benchmarks.md."""

import pytest

from demo.benchmarks.serving import bench_decision, bench_inbox
from nudges.services.live import LIMIT

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _answered_all(loop: dict, status: str) -> int:
    assert loop["errors"] == {}
    assert loop["status"] == {status: loop["answered"]}
    assert loop["answered"] == loop["sent"] > 0
    return loop["answered"]


def _requests_in(rounds: dict) -> int:
    sizes = {int(size): count for size, count in rounds["rounds_by_size"].items()}
    assert sum(sizes.values()) == rounds["rounds"]
    assert min(sizes) >= 1 and max(sizes) <= LIMIT
    return sum(size * count for size, count in sizes.items())


def test_the_decision_benchmark_decides_once_for_every_request_it_counts():
    figures = bench_decision(quick=True)

    closed = _answered_all(figures["ours"]["max"], "201")
    half = _answered_all(figures["ours"]["half_load"], "201")
    _answered_all(figures["bare_predict"]["max"], "200")
    # Each loop's window holds exactly the decisions its requests made, in rounds.
    assert _requests_in(figures["decided_together"]["max"]) == closed
    assert _requests_in(figures["decided_together"]["half_load"]) == half
    # The trained model decided them all (warm-up and profiled requests come before the loops).
    [(policy, made)] = figures["by_policy"].items()
    assert policy == f"agenda/{figures['model']}"
    assert made == sum(figures["by_outcome"].values()) > closed + half
    summary = figures["summary"]
    assert summary["max_rps"] == figures["ours"]["max"]["throughput_rps"] > 0
    assert figures["ours"]["half_load"]["offered_rps"] == pytest.approx(summary["max_rps"] / 2)
    assert all(cpu > 0 for cpu in summary["cpu_ms_per_request"].values())


def test_the_inbox_benchmark_answers_every_fetch():
    figures = bench_inbox(quick=True)

    _answered_all(figures["ours"]["max"], "200")
    _answered_all(figures["ours"]["half_load"], "200")
    _answered_all(figures["bare_empty"]["max"], "200")
    assert figures["where_time_goes"]["queries"]["per_request"] >= 2  # the token, the nudges
    assert figures["summary"]["cpu_ms_per_request"]["postgres"] > 0
