"""The recommender's benchmarks (demo/benchmarks): the load generator counts and times what it
sends, the data they build is what they claim (patients whose tokens work and whose decisions
come from the trained model), joined decision logs keep each action's identity, and the quick
training benchmark gives sane figures. Speed itself is for `manage.py bench`, not for tests."""

import datetime as dt
import http.server
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework.test import APIClient

from demo.benchmarks import REGISTRY, loadgen
from demo.benchmarks.recommender import (
    ProcessSampler,
    champion_from_simulator,
    concat_logs,
    inbox_rows,
    population_create,
    scratch_models,
)
from demo.benchmarks.serving import load, query_kind
from nudges.decision_log import from_records
from nudges.models import Decision, Delivery, DeliveryState
from nudges.services.gate import gate_check


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: Counter
    lock: threading.Lock
    delay = 0.0
    misbehave = False  # chunked answers, and now and then closing the connection

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            self.seen[self.headers.get("Authorization")] += 1
            count = sum(self.seen.values())
        time.sleep(self.delay)
        self.send_response(201)
        if self.misbehave and count % 2:
            self.send_header("Transfer-Encoding", "chunked")
            if count % 3 == 0:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            return
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Callable[..., tuple[int, Counter]]]:
    """A tiny HTTP/1.1 keep-alive server in a thread, counting requests by their token."""
    servers = []

    def start(*, delay: float = 0.0, misbehave: bool = False) -> tuple[int, Counter]:
        seen: Counter = Counter()
        handler = type(
            "Handler",
            (_Handler,),
            {"seen": seen, "lock": threading.Lock(), "delay": delay, "misbehave": misbehave},
        )
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd.server_address[1], seen

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _spec(port: int, **fields: Any) -> loadgen.Spec:
    return loadgen.Spec(host="127.0.0.1", port=port, method="POST", path="/x", body="{}", **fields)


def test_the_closed_loop_sends_each_token_once_and_counts_every_answer(server):
    port, seen = server()
    tokens = [f"t{i}" for i in range(60)]

    figures = loadgen.run(_spec(port, clients=4, duration=30.0, tokens=tokens))

    assert figures["sent"] == figures["answered"] == 60
    assert figures["status"] == {"201": 60}
    assert figures["errors"] == {}
    assert seen == Counter({f"Token {t}": 1 for t in tokens})
    assert figures["throughput_rps"] == pytest.approx(60 / figures["seconds"], rel=0.02)


def test_the_load_generator_runs_as_its_own_process_as_the_benchmarks_start_it(server):
    port, seen = server()
    tokens = [f"t{i}" for i in range(10)]
    spec = {"port": port, "method": "POST", "path": "/x", "body": "{}", "clients": 2}

    figures = load({**spec, "duration": 30.0}, tokens)

    assert figures["sent"] == figures["answered"] == 10
    assert figures["status"] == {"201": 10}
    assert seen == Counter({f"Token {t}": 1 for t in tokens})


def test_chunked_answers_and_closed_connections_are_read_to_the_end(server):
    port, seen = server(misbehave=True)

    figures = loadgen.run(_spec(port, clients=2, duration=30.0, limit=40))

    assert figures["answered"] == 40
    assert figures["status"] == {"201": 40}
    assert figures["errors"] == {}
    assert sum(seen.values()) == 40


def test_open_loop_latency_counts_from_the_scheduled_time_not_from_sending(server):
    """One connection to a server taking 50 ms per request (20 per second) offered 40 per
    second: the queue grows, and the latency must show it although each answer is quick."""
    port, seen = server(delay=0.05)

    figures = loadgen.run(_spec(port, mode="open", clients=1, rate=40.0, duration=1.0))

    assert figures["answered"] == sum(seen.values()) == 40
    assert figures["service_ms"]["p99"] < 300
    assert figures["latency_ms"]["p99"] > 600
    assert figures["latency_ms"]["max"] > figures["send_lag_ms"]["max"] > 500


def test_percentiles_use_the_nearest_rank():
    figures = loadgen.percentiles([i / 1000 for i in range(1, 101)])

    assert figures["p50"] == 50.0
    assert figures["p99"] == 99.0
    assert figures["max"] == 100.0
    assert figures["mean"] == pytest.approx(50.5)


def test_every_registered_benchmark_can_be_imported():
    for name, path in REGISTRY.items():
        assert callable(import_string(path.replace(":", "."))), name


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ('SELECT "nudges_delivery"."id" FROM "nudges_delivery" WHERE x', "SELECT nudges_delivery"),
        ('INSERT INTO "nudges_decision" ("id") VALUES (%s)', "INSERT nudges_decision"),
        ('UPDATE "nudges_delivery" SET "state" = %s', "UPDATE nudges_delivery"),
        ('SAVEPOINT "s1_x1"', "SAVEPOINT"),
        ("SELECT pg_advisory_xact_lock_shared(1)", "SELECT"),
    ],
)
def test_queries_are_summarised_by_statement_and_table(sql, kind):
    assert query_kind(sql) == kind


def _record(patient: str, day: int, available: list[str], action: str | None) -> dict:
    return {
        "patient": patient,
        "time": f"2026-01-{day:02d}T09:00:00Z",
        "available": available,
        "action": action,
        "propensity": 0.5,
        "outcome": {"acted": action is not None},
        "context": {"w_activity": 0.5},
    }


def test_joined_decision_logs_keep_each_decisions_actions():
    first = from_records([_record("a", 1, ["x@1", "y@1"], "y@1"), _record("a", 2, ["x@1"], None)])
    second = from_records([_record("b", 1, ["z@1", "x@1"], "x@1")])

    log = concat_logs([first, second])

    def names(i: int) -> list[str]:
        return [log.actions[a] for a in log.avail[log.rows_of(i)]]

    assert len(log) == 3
    assert [names(i) for i in range(3)] == [["x@1", "y@1"], ["x@1"], ["z@1", "x@1"]]
    assert [log.actions[a] if a >= 0 else None for a in log.action] == ["y@1", None, "x@1"]
    assert list(log.patients) == ["a", "a", "b"]
    assert log.context["w_activity"].tolist() == [0.5, 0.5, 0.5]


def test_the_process_sampler_reads_memory_and_the_cpu_used_while_watching():
    pid = os.getpid()
    sampler = ProcessSampler()
    sampler.track(pid)
    sampler.sample()

    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    sampler.sample()

    assert sampler.peaks()["rss_total"] > 10
    assert sampler.peaks()["processes"] == 1
    assert 0.2 <= sampler.cpu_used(pid) <= 1.0


@pytest.mark.slow
@pytest.mark.django_db
def test_benchmark_patients_sign_in_with_their_tokens_and_the_trained_model_decides():
    now = timezone.now()
    with scratch_models():
        population = population_create(6, seed=2, history=3, now=now)
        model = champion_from_simulator(patients=150, days=20)

        responses = [
            APIClient().post(
                "/api/v1/decisions/", {}, format="json", HTTP_AUTHORIZATION=f"Token {token}"
            )
            for token in population.tokens
        ]

    assert [r.status_code for r in responses] == [201] * 6
    made = Decision.objects.filter(created_at__gte=now, decision_point__trigger="app_open")
    assert set(made.values_list("policy_name", "policy_version")) == {("agenda", model.version)}
    history = Delivery.objects.filter(created_at__lt=now - dt.timedelta(days=1))
    assert history.count() == 18
    assert set(history.values_list("state", flat=True)) <= {"done", "dismissed", "expired"}


@pytest.mark.django_db
def test_an_inbox_fetch_shows_the_seen_nudges_and_delivers_the_ready_one():
    population = population_create(4, seed=3, history=0, now=timezone.now())
    ready = inbox_rows(population, delivered=2, ready_share=1.0, now=timezone.now(), seed=1)

    body = (
        APIClient()
        .get("/api/v1/nudges/", HTTP_AUTHORIZATION=f"Token {population.tokens[0]}")
        .json()
    )

    assert ready == 4
    assert len(body) == 3
    assert {n["state"] for n in body} == {DeliveryState.DELIVERED}
    assert Delivery.objects.filter(state=DeliveryState.READY).count() == 3


@pytest.mark.django_db
def test_the_inbox_benchmarks_ready_nudges_are_ones_the_safety_gate_lets_through():
    population = population_create(40, seed=4, history=0, now=timezone.now())
    inbox_rows(population, delivered=2, ready_share=1.0, now=timezone.now(), seed=2)
    ready = list(Delivery.objects.filter(state=DeliveryState.READY))

    with transaction.atomic():
        results = gate_check(ready)

    assert len(ready) > 30
    assert {r.action for r in results.values()} == {"pass"}


@pytest.mark.slow
def test_the_quick_training_benchmark_gives_sane_figures():
    from demo.benchmarks.recommender import bench_train

    figures = bench_train(quick=True)

    assert figures["decisions"] >= 15_000
    assert 0 < figures["nudges_with_outcome"] < figures["decisions"]
    assert (
        figures["metrics"]["train_rows"] + figures["metrics"]["validation_rows"]
        == (figures["nudges_with_outcome"])
    )
    assert figures["metrics"]["act_auc"] > 0.55
    assert 0 < figures["feature_replay_seconds"] < figures["seconds"]
    assert figures["source"].startswith("simulator")
    assert np.isfinite(figures["peak_rss_mb"])
