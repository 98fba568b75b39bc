"""Serving benchmarks: `POST /api/v1/decisions/` (`decision`) and `GET /api/v1/nudges/`
(`inbox`) under gunicorn on PostgreSQL, driven over HTTP by the load generator
(demo/benchmarks/loadgen.py) in a process of its own.

With a fixed number of clients, throughput x mean latency = clients, so the two are measured
apart: a closed loop of 16 clients gives the most requests per second; an open loop at a
constant half of that rate gives the latency percentiles, each latency counted from the moment
the request was due. In the same run, the same gunicorn configuration serves a bare WSGI app
(demo/benchmarks/bare.py) that does only the LightGBM work of a decision, with the same model
artefact and the same candidate rows, and an empty answer: the ceilings the engine is
compared with.

Every request is a different patient (decisions are unique per patient and minute, and a
patient just nudged is not available again within the hour), enrolled a month or more ago with
a month of past nudges, so every decision is a first decision at that moment, scored by the
trained model. Where the time goes is measured in-process on the same data: queries per
request and their time, and a cProfile summary."""

import cProfile
import datetime as dt
import http.client
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config import gunicorn as served_shape
from demo.benchmarks.recommender import (
    ROOT,
    Population,
    champion_from_simulator,
    children_of,
    cpu_seconds,
    inbox_rows,
    policy_counts,
    population_create,
    postgres_cpu_seconds,
    scratch_models,
    settle,
    stop_process,
    subprocess_env,
)
from demo.benchmarks.timing import summary_ms
from nudges.models import Decision
from nudges.recommender import ModelBundle

# The served shape: config/gunicorn.py's (what make run, the image and compose serve), unless
# BENCH_WEB_WORKERS / BENCH_WEB_THREADS say otherwise.
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", str(served_shape.workers)))
WEB_THREADS = int(os.environ.get("BENCH_WEB_THREADS", str(served_shape.threads)))
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", served_shape.worker_class)
CLIENTS = 16
DECISION_BODY = json.dumps({"trigger": "app_open", "context": {"screen": "home"}})


@dataclass(frozen=True)
class Scale:
    patients: int
    history: int  # past nudges per patient
    warmup: int  # requests before measuring
    closed_seconds: float
    open_seconds: float
    profile: int  # requests profiled in-process
    model_patients: int  # the simulated world the model learns from
    model_days: int


FULL = Scale(24_000, 10, 400, 15.0, 30.0, 200, 2000, 60)
QUICK = Scale(2_000, 4, 100, 3.0, 4.0, 30, 300, 20)


def bench_decision(*, quick: bool = False) -> dict[str, Any]:
    """POST /api/v1/decisions/: most decisions per second at 16 clients, and the latency at
    half that rate; the same for the bare LightGBM endpoint; where the time goes."""
    if connection.vendor != "postgresql":
        return {"skipped": "needs PostgreSQL (gunicorn must reach the benchmark's database)"}
    scale = QUICK if quick else FULL
    with scratch_models() as models_dir, tempfile.TemporaryDirectory() as scratch:
        population, model, started = _setup(scale, history=scale.history)
        tokens = population.tokens
        profile, features = decision_profile(tokens[: scale.profile + 5])
        tokens = tokens[scale.profile + 5 :]
        env = _bare_env(subprocess_env(models_dir=models_dir), models_dir, model, features, scratch)
        request = {"method": "POST", "path": "/api/v1/decisions/", "body": DECISION_BODY}
        windows: dict[str, tuple[dt.datetime, dt.datetime]] = {}
        ours = measure("config.wsgi:application", env, request, tokens, scale, windows=windows)
        bare_request = {**request, "path": "/predict"}
        bare = measure("demo.benchmarks.bare:application", env, bare_request, None, scale)
        figures = {
            **_config(scale, population, model, history=scale.history),
            "summary": _summary(ours, {"bare_predict": bare}),
            "ours": ours,
            "bare_predict": bare,
            "bare_predict_rows": len(features),
            "by_policy": policy_counts(created_at__gte=started, decision_point__trigger="app_open"),
            "by_outcome": _outcomes(started),
            "decided_together": {loop: _rounds(*window) for loop, window in windows.items()},
            "where_time_goes": profile,
            "target": "max >= 400 rps at 16 clients; p99 <= 30 ms at half load",
        }
    return figures


def bench_inbox(*, quick: bool = False) -> dict[str, Any]:
    """GET /api/v1/nudges/: the same measures for the patient's inbox. Each patient has two
    nudges seen already and a quarter of them one more that is ready, which the fetch marks
    delivered (the write a real inbox does about once per new nudge)."""
    if connection.vendor != "postgresql":
        return {"skipped": "needs PostgreSQL (gunicorn must reach the benchmark's database)"}
    scale = QUICK if quick else FULL
    with scratch_models() as models_dir, tempfile.TemporaryDirectory() as scratch:
        population, model, _ = _setup(scale, history=0)  # the inbox reads no history
        tokens = population.tokens
        _, features = decision_profile(tokens[:10], measured=0)
        rest = Population(population.patient_ids[10:], tokens[10:])
        ready = inbox_rows(rest, delivered=2, ready_share=0.25, now=timezone.now(), seed=5)
        settle()
        profile = inbox_profile(rest.tokens[: scale.profile + 5])
        tokens = rest.tokens[scale.profile + 5 :]
        env = _bare_env(subprocess_env(models_dir=models_dir), models_dir, model, features, scratch)
        request = {"method": "GET", "path": "/api/v1/nudges/", "body": ""}
        ours = measure("config.wsgi:application", env, request, tokens, scale)
        bare = measure(
            "demo.benchmarks.bare:application", env, {**request, "path": "/empty"}, None, scale
        )
        predict = measure(
            "demo.benchmarks.bare:application",
            env,
            {"method": "POST", "path": "/predict", "body": DECISION_BODY},
            None,
            scale,
        )
        return {
            **_config(scale, population, model, history=0),
            "summary": _summary(ours, {"bare_empty": bare, "bare_predict": predict}),
            "inbox_contents": f"2 nudges seen; 1 more ready for {ready} of {len(rest.tokens)}",
            "ours": ours,
            "bare_empty": bare,
            "bare_predict": predict,
            "where_time_goes": profile,
            "target": "max >= 800 rps at 16 clients; p99 <= 15 ms at half load",
        }


def _setup(scale: Scale, *, history: int) -> tuple[Population, Any, dt.datetime]:
    from demo.benchmarks.safety import setup_catalogue

    setup_catalogue()
    started = timezone.now()
    population = population_create(scale.patients, seed=3, history=history, now=started)
    model = champion_from_simulator(patients=scale.model_patients, days=scale.model_days)
    settle()
    return population, model, started


def _config(scale: Scale, population: Population, model: Any, *, history: int) -> dict[str, Any]:
    return {
        "server": f"gunicorn {WORKER_CLASS}, {WEB_WORKERS} workers x {WEB_THREADS} threads, "
        "keep-alive; PostgreSQL on the same machine",
        "clients": CLIENTS,
        "closed_loop_seconds": scale.closed_seconds,
        "open_loop_seconds": scale.open_seconds,
        "patients": len(population.patient_ids),
        "history_nudges_per_patient": history,
        "model": model.version,
    }


def _summary(ours: dict, bare: dict[str, dict]) -> dict[str, Any]:
    """The headline figures, the ratios to the bare endpoints, and the CPU each request
    costs (server, PostgreSQL, load generator): on a busy machine the rates fall, the CPU
    per request much less; the cores divided by it bound the rate on a quiet machine."""
    cpu = ours["max"]["cpu_ms_per_request"]
    out = {
        "max_rps": ours["max"]["throughput_rps"],
        "p99_ms_at_half_load": ours["half_load"]["latency_ms"].get("p99"),
        "cpu_ms_per_request": cpu,
        "cpu_bound_rps": round((os.cpu_count() or 1) * 1000 / max(sum(cpu.values()), 1e-9)),
    }
    for name, figures in bare.items():
        out[f"throughput_vs_{name}"] = round(
            ours["max"]["throughput_rps"] / max(figures["max"]["throughput_rps"], 1e-9), 3
        )
        out[f"{name}_server_cpu_ms"] = figures["max"]["cpu_ms_per_request"]["server"]
    return out


def _outcomes(since: dt.datetime) -> dict[str, int]:
    rows = Decision.objects.filter(created_at__gte=since, decision_point__trigger="app_open")
    return dict(rows.values_list("outcome").annotate(n=Count("id")))


def _rounds(since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """How many requests each decision round took (nudges.services.live) between two times:
    the decisions of one round share their `now`, so their creation time, to the
    microsecond."""
    rows = Decision.objects.filter(
        created_at__gte=since, created_at__lt=until, decision_point__trigger="app_open"
    )
    sizes = Counter(n for _, n in rows.values_list("created_at").annotate(n=Count("id")))
    rounds = sum(sizes.values())
    return {
        "rounds": rounds,
        "mean_requests_per_round": round(sum(k * v for k, v in sizes.items()) / rounds, 2)
        if rounds
        else None,
        "rounds_by_size": dict(sorted(sizes.items())),
    }


# Serving over HTTP ------------------------------------------------------------------------------


def measure(
    app: str,
    env: dict[str, str],
    request: dict[str, str],
    tokens: list[str] | None,
    scale: Scale,
    *,
    windows: dict[str, tuple[dt.datetime, dt.datetime]] | None = None,
) -> dict[str, Any]:
    """Warm up, then the closed loop (16 clients) and the open loop at half its throughput,
    against `app` under gunicorn. With tokens, each request is the next patient's; the closed
    loop may use half of those left after warming up, the open loop the rest. `windows`, if
    given, gets the time each loop ran ("max", "half_load")."""
    windows = {} if windows is None else windows
    headers = {"Content-Type": "application/json"} if request["body"] else {}
    base = {"clients": CLIENTS, "headers": headers, **request}
    with gunicorn(app, env) as served:
        spec = {**base, "port": served.port}
        warm = load({**spec, "duration": 120.0, "limit": scale.warmup}, tokens)
        if tokens is not None:
            tokens = tokens[warm["sent"] :]
        budget = len(tokens) // 2 if tokens is not None else None
        server = [served.pid, *children_of(served.pid)]
        # The whole PostgreSQL instance (a backend that exits mid-loop is still counted, and
        # so is the WAL writer): only the benchmark uses it.
        readers: dict[str, Callable[[], float]] = {
            "server": lambda: cpu_seconds(server),
            "postgres": postgres_cpu_seconds,
        }
        before = {name: read() for name, read in readers.items()}
        closed_from = timezone.now()
        closed = load({**spec, "duration": scale.closed_seconds, "limit": budget}, tokens)
        windows["max"] = (closed_from, timezone.now())
        closed["cpu_ms_per_request"] = {
            name: round((read() - before[name]) / closed["answered"] * 1000, 2)
            for name, read in readers.items()
        }
        closed["cpu_ms_per_request"]["load_generator"] = round(
            closed.pop("cpu_seconds") / closed["answered"] * 1000, 2
        )
        if tokens is not None:
            tokens = tokens[closed["sent"] :]
        rate = max(closed["throughput_rps"] / 2, 1.0)
        seconds = scale.open_seconds
        if tokens is not None:
            seconds = min(seconds, len(tokens) / rate)
        half_from = timezone.now()
        half = load({**spec, "mode": "open", "rate": rate, "duration": seconds}, tokens)
        windows["half_load"] = (half_from, timezone.now())
        half.pop("cpu_seconds")
    return {"max": closed, "half_load": half}


def load(spec: dict[str, Any], tokens: list[str] | None) -> dict[str, Any]:
    """One run of the load generator in its own process; its figures."""
    spec = {"host": "127.0.0.1", "mode": "closed", **spec, "tokens": tokens}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "demo.benchmarks.loadgen", handle.name],
            cwd=ROOT,
            capture_output=True,
            timeout=600,
        )
    finally:
        os.unlink(handle.name)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout)


@dataclass(frozen=True)
class Served:
    port: int
    pid: int


@contextmanager
def gunicorn(app: str, env: dict[str, str]) -> Iterator[Served]:
    """`app` served by gunicorn (WORKER_CLASS, WEB_WORKERS x WEB_THREADS) on a free local
    port, stopped afterwards."""
    port = _free_port()
    command = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}"]
    command += ["--worker-class", WORKER_CLASS, "--workers", str(WEB_WORKERS)]
    command += ["--threads", str(WEB_THREADS), "--keep-alive", "30", "--log-level", "warning"]
    with tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log") as log:
        server = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_until_serving(server, port, "/healthz" if app.startswith("config") else "/empty")
            yield Served(port, server.pid)
        finally:
            stop_process(server)
            errors = Path(log.name).read_text()
        if server.returncode != 0 or "Traceback" in errors:
            raise RuntimeError(f"gunicorn reported errors:\n{errors[-3000:]}")


def _wait_until_serving(server: subprocess.Popen, port: int, path: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}")
        try:
            client = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            client.request("GET", path)
            if client.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start serving within 90 s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _bare_env(
    env: dict[str, str], models_dir: Path, model: Any, features: np.ndarray, scratch: str
) -> dict[str, str]:
    path = Path(scratch) / "features.npy"
    np.save(path, features)
    return {**env, "BENCH_MODEL": str(models_dir / model.artefact), "BENCH_FEATURES": str(path)}


# Where the time goes (in-process) -------------------------------------------------------------

DECISION_PARTS = {
    "decisions_make (the service, all of it)": ("nudges/services/decisions.py", "decisions_make"),
    "reads in one round trip (claim, stamps, history, facts)": ("core/pipeline.py", "fetch_many"),
    "facts from their rows": ("nudges/selectors.py", "facts_assemble"),
    "model_inputs (features from records)": ("nudges/services/serving.py", "model_inputs"),
    "decide (pure core, incl. LightGBM)": ("nudges/decide.py", "decide"),
    "LightGBM predict": ("nudges/recommender.py", "predict"),
    "LightGBM contributions (explanation)": ("nudges/recommender.py", "contributions"),
    "_persist (writes)": ("nudges/services/decisions.py", "_persist"),
    "token authentication": ("core/auth.py", "authenticate_credentials"),
    "the response (nudges.responses)": ("nudges/responses.py", "decision_body"),
    "JSON (the fast path's)": ("nudges/hotpath.py", "_json"),
    "SQL (psycopg execute)": ("psycopg/cursor.py", "execute"),
}
INBOX_PARTS = {
    "the fast path (all of it)": ("nudges/hotpath.py", "_inbox"),
    "token authentication": ("core/auth.py", "authenticate_credentials"),
    "current_nudges (the read)": ("nudges/selectors.py", "current_nudges"),
    "deliveries_mark_delivered": ("nudges/services/deliveries.py", "deliveries_mark_delivered"),
    "gate_check (safety gate)": ("nudges/services/gate.py", "gate_check"),
    "the response (nudges.responses)": ("nudges/responses.py", "nudge_body"),
    "JSON (the fast path's)": ("nudges/hotpath.py", "_json"),
    "SQL (psycopg execute)": ("psycopg/cursor.py", "execute"),
}


def decision_profile(tokens: list[str], *, measured: int | None = None) -> tuple[dict, np.ndarray]:
    """Decisions in-process through the whole Django stack (django.test.Client), one patient
    each: their time, queries and query time, then a cProfile of as many more; and the
    candidate rows the model scored in a decision of the median size (for the bare app)."""
    captured: list[np.ndarray] = []
    original = ModelBundle.predict

    def spy(self: ModelBundle, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        captured.append(features.copy())
        return original(self, features)

    client = Client()

    def send(token: str) -> int:
        response = client.post(
            "/api/v1/decisions/",
            DECISION_BODY,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {token}",
        )
        assert response.status_code == 201, response.content[:300]
        return response.status_code

    with mock.patch.object(ModelBundle, "predict", spy):
        figures = profile_path(send, tokens, DECISION_PARTS, measured=measured)
    assert captured, "the model scored no decision: is the champion serving?"
    sizes = sorted(len(f) for f in captured)
    median = sizes[len(sizes) // 2]
    figures["candidate_rows"] = {"median": median, "min": sizes[0], "max": sizes[-1]}
    return figures, next(f for f in captured if len(f) == median)


def inbox_profile(tokens: list[str]) -> dict[str, Any]:
    client = Client()

    def send(token: str) -> int:
        response = client.get("/api/v1/nudges/", HTTP_AUTHORIZATION=f"Token {token}")
        assert response.status_code == 200, response.content[:300]
        return response.status_code

    return profile_path(send, tokens, INBOX_PARTS)


def profile_path(
    send: Callable[[str], int],
    tokens: list[str],
    parts: dict[str, tuple[str, str]],
    *,
    measured: int | None = None,
    warmup: int = 5,
    top: int = 12,
) -> dict[str, Any]:
    """Send requests in-process: `warmup` first, then half the rest timed (wall clock and this
    process's CPU) with their queries captured, then the other half under cProfile counting
    CPU time, so that neither waiting for PostgreSQL nor other processes on a busy machine
    show up as our code's time. Times are per request."""
    for token in tokens[:warmup]:
        send(token)
    rest = tokens[warmup:]
    half = len(rest) // 2 if measured is None else measured
    samples, queries = [], []
    cpu = time.process_time()
    for token in rest[:half]:
        with CaptureQueriesContext(connection) as context:
            start = time.perf_counter()
            send(token)
            samples.append(time.perf_counter() - start)
        queries.append(context.captured_queries)
    cpu = time.process_time() - cpu
    profiled = rest[half:]
    if not profiled:
        return {}
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for token in profiled:
        send(token)
    profiler.disable()
    figures: dict[str, Any] = {}
    if samples:
        figures["requests_in_process"] = {
            **summary_ms(samples),
            "cpu_ms_mean": round(cpu / len(samples) * 1000, 2),
        }
    if queries:
        figures["queries"] = query_summary(queries)
    figures["profile"] = profile_summary(profiler, len(profiled), parts, top=top)
    return figures


def query_summary(requests: list[list[dict]]) -> dict[str, Any]:
    """Queries per request and their time (as Django measured it, round trip included),
    and which ones, by statement kind and table."""
    n = len(requests)
    counts: Counter = Counter()
    times: dict[str, float] = defaultdict(float)
    per_request = []
    for captured in requests:
        per_request.append(sum(float(q["time"]) for q in captured))
        for q in captured:
            kind = query_kind(q["sql"])
            counts[kind] += 1
            times[kind] += float(q["time"])
    return {
        "per_request": round(sum(len(r) for r in requests) / n, 1),
        "ms_per_request": round(sum(per_request) / n * 1000, 2),
        "by_kind": {
            kind: f"{counts[kind] / n:.1f} x, {times[kind] / n * 1000:.2f} ms"
            for kind, _ in counts.most_common()
        },
    }


def query_kind(sql: str) -> str:
    """'SELECT nudges_delivery', 'INSERT nudges_decision', 'SAVEPOINT', ..."""
    words = sql.split()
    verb = words[0].upper() if words else "?"
    table = None
    if verb == "UPDATE" and len(words) > 1:
        table = words[1]
    elif verb == "INSERT" and len(words) > 2:
        table = words[2]
    elif verb in ("SELECT", "DELETE") and "FROM" in words[:-1]:
        table = words[words.index("FROM") + 1]
    return f"{verb} {table.strip(chr(34))}" if table else verb


def profile_summary(
    profiler: cProfile.Profile, requests: int, parts: dict[str, tuple[str, str]], *, top: int
) -> dict[str, Any]:
    """CPU time per request, under the profiler (which slows Python code down): the total,
    by package, the cumulative time of the named parts, and the functions with the most time
    of their own."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in stats.values())
    cumulative = {}
    for name, (path, function) in parts.items():
        found = [
            entry[3]
            for (file, _, func), entry in stats.items()
            if func == function and file.endswith(path)
        ]
        cumulative[name] = round(max(found, default=0.0) / requests * 1000, 2)
    own = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    packages: Counter = Counter()
    for (file, _, _), entry in stats.items():
        packages[_package(file)] += entry[2]
    return {
        "requests": requests,
        "cpu_ms_per_request": round(total / requests * 1000, 2),
        "own_cpu_by_package_ms": {
            name: round(seconds / requests * 1000, 2) for name, seconds in packages.most_common()
        },
        "cumulative_cpu_ms": cumulative,
        "top_own_cpu_ms": {
            f"{_short(file)}:{line}({func})": round(entry[2] / requests * 1000, 3)
            for (file, line, func), entry in own
        },
    }


def _package(path: str) -> str:
    """Where a profiled function lives: a third-party package, one of our apps, the standard
    library, or C built-ins (which cProfile names "~")."""
    if path == "~":
        return "built-ins (C)"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if path.startswith(str(ROOT)):
        return Path(path).relative_to(ROOT).parts[0] + " (ours)"
    return "standard library"


def _short(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path
