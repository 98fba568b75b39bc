"""Benchmarks run by `python manage.py bench NAME` (and `make bench` for all of them on
PostgreSQL). Each one builds its own data in a throwaway database, measures, and returns its
figures as a dict; docs/benchmarks.md records them with the machine they ran on."""

from collections.abc import Callable
from typing import Any

Benchmark = Callable[..., dict[str, Any]]
REGISTRY: dict[str, str] = {
    "rules": "demo.benchmarks.safety:bench_rules",
    "queue": "demo.benchmarks.safety:bench_queue",
    "safety_run": "demo.benchmarks.safety:bench_safety_run",
    "decision": "demo.benchmarks.serving:bench_decision",
    "inbox": "demo.benchmarks.serving:bench_inbox",
    "batch": "demo.benchmarks.recommender:bench_batch",
    "train": "demo.benchmarks.recommender:bench_train",
    "dp_reports": "demo.benchmarks.privacy:bench_dp_reports",
}
