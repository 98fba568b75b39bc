"""Recommender benchmarks: a slot decided for 100,000 patients by two Celery workers (`batch`)
and training on 1,000,000 logged decisions (`train`); and what the serving benchmarks share
with them: a population of patients written as rows, with tokens and a month of history, and a
champion model trained on the simulator and promoted through the registry."""

import datetime as dt
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction
from django.db.models import Count
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from core.bulk import DbFormat, insert_rows
from demo.cohort import synthetic_cohort
from nudges import rows as columns
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    ModelVersion,
    PushMessage,
    Template,
)
from nudges.services.batch import CHUNK_SIZE
from patients.models import CarePlanGoal, Condition, Consent, Patient, Purpose
from safety.models import GroupMembership, MedicalGroup

ROOT = Path(__file__).resolve().parents[2]
HISTORY_DAYS = 30  # past nudges are spread over this many days, ending a day ago
ARMS = "treatment:100"  # every patient in the model's arm: the benchmarks measure the model


# The population ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Population:
    patient_ids: list[str]  # as stored (32 hex digits)
    tokens: list[str]  # each patient's app token, same order


def population_create(n: int, *, seed: int, history: int, now: dt.datetime) -> Population:
    """n patients of the synthetic cohort, written as rows: login and token, agenda, coded
    conditions, consent to every purpose, medical groups (already derived), enrolled 30 to 90
    days ago (past the model's cold start), and `history` past nudges each over the last
    month (ending a day ago, so none counts against today's cap)."""
    cohort = synthetic_cohort(n, seed=seed)
    rng = np.random.default_rng([seed, 17])
    db = DbFormat()
    stamp = db.datetime(now)
    prefix = f"bench-{seed}-{secrets.token_hex(3)}-"
    names = [f"{prefix}{i:06d}" for i in range(n)]
    password = make_password(None)  # unusable: patients sign in with their token only
    with transaction.atomic():
        insert_rows(
            get_user_model(),
            ["password", "is_superuser", "username", "first_name", "last_name", "email"]
            + ["is_staff", "is_active", "date_joined"],
            [(password, False, name, "", "", "", False, True, stamp) for name in names],
        )
        user_ids = dict(
            get_user_model()
            .objects.filter(username__startswith=prefix)
            .values_list("username", "id")
        )
        ids = db.new_ids(n, now)
        enrolled = [now - dt.timedelta(days=30 + float(d)) for d in rng.uniform(0, 60, n)]
        insert_rows(
            Patient,
            ["id", "created_at", "updated_at", "pseudonym", "user", "age_band", "sex"]
            + ["timezone", "quiet_start", "quiet_end", "is_active", "groups_refreshed_at"]
            # No sensitive fields given (empty, as enrolment stores them when absent).
            + ["date_of_birth_sealed", "contact_sealed", "notes_sealed"],
            [
                (ids[i], db.datetime(enrolled[i]), stamp, names[i], user_ids[names[i]])
                + (p.age_band, p.sex, p.timezone, "22:00:00", "07:00:00", True, stamp)
                + ("", "", "")
                for i, p in enumerate(cohort)
            ],
        )
        _patient_rows(db, cohort, ids, stamp)
        tokens = [secrets.token_hex(20) for _ in range(n)]
        insert_rows(
            Token,
            ["key", "user", "created"],
            [(tokens[i], user_ids[names[i]], stamp) for i in range(n)],
        )
    if history:
        _history_rows(db, cohort, ids, history=history, now=now, rng=rng)
    return Population(patient_ids=ids, tokens=tokens)


def _patient_rows(db: DbFormat, cohort: list, ids: list[str], stamp: str | None) -> None:
    group_ids = {slug: db.id(pk) for slug, pk in MedicalGroup.objects.values_list("slug", "pk")}
    times = ["id", "created_at", "updated_at"]
    goals = [(i, g, w) for i, p in enumerate(cohort) for g, w in p.goals.items()]
    goal_ids = db.new_ids(len(goals))
    insert_rows(
        CarePlanGoal,
        [*times, "patient", "goal", "weight"],
        [(goal_ids[k], stamp, stamp, ids[i], g, w) for k, (i, g, w) in enumerate(goals)],
    )
    codes = [(i, c) for i, p in enumerate(cohort) for c in p.conditions]
    code_ids = db.new_ids(len(codes))
    insert_rows(
        Condition,
        [*times, "patient", "code"],
        [(code_ids[k], stamp, stamp, ids[i], c) for k, (i, c) in enumerate(codes)],
    )
    consent_ids = db.new_ids(len(cohort) * len(Purpose.values))
    insert_rows(
        Consent,
        [*times, "patient", "purpose", "granted"],
        [
            (consent_ids[k], stamp, stamp, ids[k // len(Purpose.values)], purpose, True)
            for k, purpose in enumerate(Purpose.values * len(cohort))
        ],
    )
    members = [(i, group_ids[g]) for i, p in enumerate(cohort) for g in p.groups]
    member_ids = db.new_ids(len(members))
    insert_rows(
        GroupMembership,
        [*times, "patient", "group"],
        [(member_ids[k], stamp, stamp, ids[i], g) for k, (i, g) in enumerate(members)],
    )


DELIVERY_FIELDS = [*columns.TIMES, "decision", "patient", "template"] + [
    "state",
    "why",
    "expires_at",
    "delivered_at",
    "closed_at",
    "safety_action",
    "safety_rules",
    "note",
]
CLOSED_STATES = (DeliveryState.DONE, DeliveryState.DISMISSED, DeliveryState.EXPIRED)


def _history_rows(
    db: DbFormat,
    cohort: list,
    ids: list[str],
    *,
    history: int,
    now: dt.datetime,
    rng: np.random.Generator,
    chunk: int = 10_000,
) -> None:
    """`history` nudges per patient, one in each of `history` equal windows of the last month
    (so a patient's moments never collide), of templates on the patient's agenda, closed as
    done, dismissed or expired. Written in chunks of patients, a transaction each."""
    by_goal: dict[str, list[tuple[str, int]]] = {}
    for pk, version, goal in Template.objects.filter(status="active").values_list(
        "pk", "version", "goal"
    ):
        by_goal.setdefault(goal, []).append((pk.hex, version))
    window = (HISTORY_DAYS - 1) * 1440 // history
    end = now.replace(second=0, microsecond=0) - dt.timedelta(days=1)
    for start in range(0, len(cohort), chunk):
        stop = min(start + chunk, len(cohort))
        minutes = rng.integers(0, window, (stop - start, history)) + window * np.arange(history)
        picks = rng.integers(0, 1 << 30, (stop - start, history))
        states = rng.choice(len(CLOSED_STATES), size=(stop - start, history), p=(0.3, 0.2, 0.5))
        rows: dict[str, list[tuple]] = {"points": [], "decisions": [], "deliveries": []}
        for i in range(start, stop):
            choices = [t for g in cohort[i].goals for t in by_goal.get(g, [])]
            for k in range(history):
                moment = end - dt.timedelta(minutes=int(minutes[i - start, k]))
                template, version = choices[picks[i - start, k] % len(choices)]
                state = CLOSED_STATES[states[i - start, k]]
                _history_nudge(db, rows, ids[i], moment, template, version, state)
        with transaction.atomic():
            insert_rows(DecisionPoint, list(columns.POINT_COLUMNS), rows["points"])
            insert_rows(Decision, list(columns.DECISION_COLUMNS), rows["decisions"])
            insert_rows(Delivery, DELIVERY_FIELDS, rows["deliveries"])


def _history_nudge(
    db: DbFormat,
    rows: dict[str, list[tuple]],
    patient: str,
    moment: dt.datetime,
    template: str,
    version: int,
    state: str,
) -> tuple[str, str]:
    """Rows of one nudge decided at `moment` and now in `state`; returns (decision id,
    delivery id)."""
    point, decision, delivery = db.new_ids(3, moment)
    at = db.datetime(moment)
    reached = state != DeliveryState.EXPIRED and state != DeliveryState.READY
    delivered = db.datetime(moment + dt.timedelta(minutes=5)) if reached else None
    closed = db.datetime(moment + dt.timedelta(hours=2)) if state in CLOSED_STATES else None
    receipt = db.json({"source": "benchmark_history"})
    rows["points"].append((point, at, at, patient, at, "slot"))
    rows["decisions"].append(
        (decision, at, at, point, patient, "nudge", "chosen", "baseline", "baseline-1")
        + (template, version, 0.3, "treatment", "", receipt)
    )
    rows["deliveries"].append(
        (delivery, at, closed or at, decision, patient, template, state, "For your goals.")
        + (db.datetime(moment + dt.timedelta(hours=24)), delivered, closed, "allow", "[]", "")
    )
    return decision, delivery


def inbox_rows(
    population: Population, *, delivered: int, ready_share: float, now: dt.datetime, seed: int
) -> int:
    """What an inbox holds: `delivered` nudges each patient has seen already, decided in the
    last hours, and for a `ready_share` of the patients one more that is ready (with its
    pending push), which their next fetch marks delivered. Returns how many are ready.

    Each nudge is of a template the active rules allow for the patient, as the decision path
    leaves a nudge it makes ready, so the fetch's safety gate passes it (unless the rules or
    the patient's groups change in between, which the benchmark does not measure)."""
    db = DbFormat()
    rng = np.random.default_rng([seed, 23])
    allowed = _allowed_templates(population.patient_ids, now)
    rows: dict[str, list[tuple]] = {"points": [], "decisions": [], "deliveries": []}
    pushes = []
    base = now.replace(second=0, microsecond=0)
    ready = rng.random(len(population.patient_ids)) < ready_share
    for i, patient in enumerate(population.patient_ids):
        templates = allowed[patient]
        if not templates:
            ready[i] = False
            continue
        states = [DeliveryState.DELIVERED] * delivered + [DeliveryState.READY] * int(ready[i])
        for k, state in enumerate(states):
            pk, version = templates[int(rng.integers(len(templates)))]
            moment = base - dt.timedelta(minutes=30 + 90 * (len(states) - k))
            _, delivery = _history_nudge(db, rows, patient, moment, pk.hex, version, state)
            if state == DeliveryState.READY:
                at = db.datetime(moment)
                pushes.append((db.new_ids(1)[0], at, at, delivery, "pending", 0, at, "", "", ""))
    with transaction.atomic():
        insert_rows(DecisionPoint, list(columns.POINT_COLUMNS), rows["points"])
        insert_rows(Decision, list(columns.DECISION_COLUMNS), rows["decisions"])
        insert_rows(Delivery, DELIVERY_FIELDS, rows["deliveries"])
        insert_rows(
            PushMessage,
            ["id", "created_at", "updated_at", "delivery", "state", "attempts", "next_attempt_at"]
            + ["last_error", "provider", "provider_message_id"],
            pushes,
        )
    return int(ready.sum())


def _allowed_templates(patient_ids: list[str], now: dt.datetime) -> dict[str, list[tuple]]:
    """Patient (as stored) -> the (pk, version) of the active templates the active rule set
    allows for the patient's medical groups without review, in slug order."""
    from nudges.services.catalogue import template_facts
    from safety.rules import Action, evaluate
    from safety.selectors import active_rule_set, compiled_rules

    rules = compiled_rules(active_rule_set(), day=now.astimezone(dt.UTC).date())
    templates = list(Template.objects.filter(status="active").order_by("slug"))
    groups: dict[str, set[str]] = {patient: set() for patient in patient_ids}
    memberships = GroupMembership.objects.filter(patient_id__in=patient_ids)
    for member, slug in memberships.values_list("patient_id", "group__slug").iterator():
        groups[member.hex].add(slug)
    by_groups: dict[frozenset[str], list[tuple]] = {}
    allowed: dict[str, list[tuple]] = {}
    for patient in patient_ids:
        key = frozenset(groups[patient])
        if key not in by_groups:
            by_groups[key] = [
                (t.pk, t.version)
                for t in templates
                if evaluate(groups=key, template=template_facts(t), rules=rules).action
                <= Action.ALLOW_WITH_NOTE
            ]
        allowed[patient] = by_groups[key]
    return allowed


# The champion --------------------------------------------------------------------------------


def settle() -> None:
    """VACUUM ANALYZE the benchmark's database once its data is written and before anything is
    measured. A deployment serves tables its autovacuum has caught up with; a data set written
    the minute before sets autovacuum and analyze off in the middle of the measurement, on the
    same two cores (docs/benchmarks.md)."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def champion_from_simulator(*, patients: int, days: int, seed: int = 1) -> ModelVersion:
    """Train the recommender on a baseline run of the simulator's demo world (the same
    catalogue and medical groups as the database), register it and promote it: decisions use
    it from then on. NUDGE_MODELS_DIR must be a scratch directory."""
    from nudges import offline
    from nudges.services.registry import baseline_ensure, model_promote, model_register

    setup = offline.world_from_cohort(patients, seed)
    result = offline.train_on_baseline(setup, days=days, seed=seed + 1000)
    baseline_ensure()
    now = timezone.now()
    row = model_register(
        bundle=result.bundle, metrics=result.metrics, trained_from=now, trained_to=now
    )
    return model_promote(version=row.version, note="benchmark model (simulator)")


@contextmanager
def scratch_models() -> Iterator[Path]:
    """A scratch NUDGE_MODELS_DIR, and every patient in the model's arm, for one benchmark."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-models-") as directory,
        override_settings(NUDGE_MODELS_DIR=Path(directory), NUDGE_ARMS=ARMS),
    ):
        yield Path(directory)


def policy_counts(**filters: Any) -> dict[str, int]:
    """Decisions by the policy that made them (the receipts' policy name and version)."""
    rows = (
        Decision.objects.filter(**filters)
        .values_list("policy_name", "policy_version")
        .annotate(n=Count("id"))
    )
    return {f"{name}/{version}": n for name, version, n in rows}


def subprocess_env(*, models_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server or worker process: the benchmark's own (throwaway)
    database, models directory and arms."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"),
        "DATABASE_URL": database_url(),
        "NUDGE_MODELS_DIR": str(models_dir),
        "NUDGE_ARMS": ARMS,
        **extra,
    }


def database_url() -> str:
    """The URL of the database this process uses now: the test database bench created."""
    s = connection.settings_dict
    user = quote(s.get("USER") or "", safe="")
    password = f":{quote(s['PASSWORD'], safe='')}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{quote(s['NAME'], safe='')}"


# batch ----------------------------------------------------------------------------------------

BROKER_DB = 11  # a Redis database of its own, so nothing else's tasks mix with the run's


def bench_batch(*, quick: bool = False) -> dict[str, Any]:
    """One slot decided for 100,000 patients (2,000 with --quick) the way production does it:
    `manage.py generate_decisions --wait` queues the chunks on Redis and two Celery worker
    processes (`celery worker --concurrency=2`, as docker-compose runs it) decide them on
    PostgreSQL with the champion model. Measures the coordinator's wall time, the memory (RSS
    and PSS) of the workers and the coordinator together, sampled every 0.2 s, and the CPU
    time the workers, the coordinator and PostgreSQL used: on a busy machine the time grows,
    the CPU per decision much less."""
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if connection.vendor != "postgresql" or not broker.startswith("redis://"):
        return {"skipped": "needs PostgreSQL and a Redis broker (scripts/services.sh)"}
    n = 2_000 if quick else 100_000
    history = 4
    from demo.benchmarks.safety import setup_catalogue

    with scratch_models() as models_dir:
        started = time.perf_counter()
        setup_catalogue()
        now = timezone.now()
        population_create(n, seed=7, history=history, now=now)
        model = champion_from_simulator(patients=300 if quick else 2000, days=20 if quick else 60)
        settle()
        setup_seconds = time.perf_counter() - started
        broker_url = _private_broker(broker)
        env = subprocess_env(models_dir=models_dir, CELERY_BROKER_URL=broker_url)
        # Two days ahead: the slot's moment is after now in every time zone.
        day = (now + dt.timedelta(days=2)).date()
        with _celery_worker(env) as worker, ProcessSampler() as sampler:
            sampler.track(worker.pid, children=True)
            sampler.sample()
            postgres = postgres_cpu_seconds()
            run, coordinator = _coordinate(env, day=day, sampler=sampler)
            sampler.sample()
            cpu = {
                "workers": sampler.cpu_used(worker.pid),
                "coordinator": sampler.cpu_used(coordinator),
                "postgres": postgres_cpu_seconds() - postgres,
            }
        made = Decision.objects.filter(decision_point__trigger="slot", created_at__gte=now)
        figures = {
            "patients": n,
            "history_nudges_per_patient": history,
            "workers": "celery worker --concurrency=2 (prefork), Redis broker, PostgreSQL",
            "chunk_size": CHUNK_SIZE,
            **run,
            "decisions": made.count(),
            "by_policy": policy_counts(decision_point__trigger="slot", created_at__gte=now),
            "by_outcome": dict(made.values_list("outcome").annotate(n=Count("id"))),
            "model": model.version,
            "memory_peak_mb": sampler.peaks(),
            "cpu_seconds": {name: round(value, 1) for name, value in cpu.items()},
            "cpu_ms_per_decision": {
                name: round(value / n * 1000, 2) for name, value in cpu.items()
            },
            "cpu_bound_seconds": round(sum(cpu.values()) / (os.cpu_count() or 1), 1),
            "target": "<= 90 s and < 1.5 GB for 100,000 patients",
            "setup_seconds": round(setup_seconds, 1),
        }
    assert figures["decisions"] == n, f"{figures['decisions']} decisions for {n} patients"
    return figures


def _private_broker(url: str) -> str:
    parts = urlsplit(url)
    private = urlunsplit(parts._replace(path=f"/{BROKER_DB}"))
    import redis

    redis.Redis.from_url(private).delete("celery")  # tasks left by an interrupted run
    return private


@contextmanager
def _celery_worker(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """A Celery worker (two prefork processes) started for the benchmark, stopped after it."""
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency=2"]
    command += ["--without-gossip", "--without-mingle", "--loglevel=INFO"]
    command += [f"--hostname=bench-{os.getpid()}@%h"]
    with tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for(lambda: b" ready." in Path(log.name).read_bytes(), worker, "celery worker")
            yield worker
        finally:
            stop_process(worker)


def stop_process(process: subprocess.Popen) -> None:
    """Ask a process started for a benchmark to stop; kill it if it has not within 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for(ready: Any, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.1)


def _coordinate(
    env: dict[str, str], *, day: dt.date, sampler: "ProcessSampler"
) -> tuple[dict[str, Any], int]:
    """Run generate_decisions --wait as its own process (the coordinator) and time it;
    returns the figures and the coordinator's pid."""
    command = [sys.executable, "manage.py", "generate_decisions", "--slot", "09:00"]
    command += ["--day", day.isoformat(), "--wait", "--chunk-size", str(CHUNK_SIZE)]
    started = time.perf_counter()
    coordinator = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    sampler.track(coordinator.pid, from_start=True)
    output, _ = coordinator.communicate(timeout=1800)
    wall = time.perf_counter() - started
    if coordinator.returncode != 0:
        raise RuntimeError(f"generate_decisions failed ({coordinator.returncode})")
    text = output.decode()
    found = re.search(r"(\d+) decisions in (\d+) chunks, ([\d.]+) s", text)
    assert found, f"unexpected output from generate_decisions: {text[-300:]}"
    seconds = float(found.group(3))
    return {
        "seconds": seconds,
        "seconds_with_process_start": round(wall, 1),
        "chunks": int(found.group(2)),
        "decisions_per_second": round(int(found.group(1)) / seconds, 1),
    }, coordinator.pid


class ProcessSampler:
    """Some processes (and, if asked, their children) read from /proc every `interval`
    seconds in a thread: the peak of their total memory, and the CPU time each used while
    watched. RSS counts the pages the forked workers share once per process; PSS splits
    them, so its total is what the processes really occupy."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.roots: dict[int, bool] = {}
        self.members: dict[int, set[int]] = {}
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.peak = {"rss": 0, "pss": 0}
        self.processes_at_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def track(self, pid: int, *, children: bool = False, from_start: bool = False) -> None:
        """Watch pid; with from_start, its CPU counts from its start, not from now."""
        with self._lock:
            self.roots[pid] = children
            self.members[pid] = set()
            if from_start:
                self.cpu_first[pid] = 0.0

    def peaks(self) -> dict[str, float]:
        return {
            "rss_total": round(self.peak["rss"] / 1024, 1),
            "pss_total": round(self.peak["pss"] / 1024, 1),
            "processes": self.processes_at_peak,
        }

    def cpu_used(self, root: int) -> float:
        """CPU seconds the process (and its children) used while watched."""
        with self._lock:
            pids = self.members.get(root, set())
            return sum(self.cpu_last[p] - self.cpu_first[p] for p in pids if p in self.cpu_last)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        with self._lock:
            totals = {"rss": 0, "pss": 0}
            pids = []
            for root, children in self.roots.items():
                for pid in [root, *(children_of(root) if children else [])]:
                    pids.append(pid)
                    self.members[root].add(pid)
                    totals["rss"] += _proc_kb(f"/proc/{pid}/status", "VmRSS:")
                    totals["pss"] += _proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
                    cpu = cpu_seconds([pid])
                    if cpu:  # 0: the process has gone; keep its last reading
                        self.cpu_first.setdefault(pid, cpu)
                        self.cpu_last[pid] = cpu
            if totals["rss"] > self.peak["rss"]:
                self.processes_at_peak = len(pids)
            for key, value in totals.items():
                self.peak[key] = max(self.peak[key], value)


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first); [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far (those gone count 0)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of the whole PostgreSQL instance so far (the server runs on this machine):
    the postmaster's, its live children's, and that of the backends that have exited, which
    the postmaster's stat counts once it has reaped them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    fields = _stat(backend)
    if not fields:
        return 0.0
    postmaster = int(fields[1])
    own = _stat(postmaster)
    reaped = (int(own[13]) + int(own[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    return reaped + cpu_seconds([postmaster, *children_of(postmaster)])


def _proc_kb(path: str, field: str) -> int:
    """A kB figure from a /proc file (0 when the process has gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# train ----------------------------------------------------------------------------------------


def bench_train(*, quick: bool = False) -> dict[str, Any]:
    """recommender.train (both LightGBM models, time-split validation, metrics) on a decision
    log of about 1,000,000 decisions (about 20,000 with --quick), simulated: baseline runs of
    the simulator's worlds of 1,000 patients each over 60 days (300 over 30 with --quick),
    recorded as decision logs (nudges/simlog.py) and joined. Building the log is not timed;
    the feature replay is timed alone too, to show its share."""
    from nudges import features as F
    from nudges import recommender

    target, patients, days = (15_000, 300, 30) if quick else (1_000_000, 1_000, 60)
    started = time.perf_counter()
    log, schema, worlds = simulated_log(target=target, patients=patients, days=days)
    generate = time.perf_counter() - started
    nudged = np.flatnonzero((log.action >= 0) & np.isfinite(log.acted))
    started = time.perf_counter()
    F.log_features(log, schema, nudged, log.action[nudged])
    features = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    result = recommender.train(log, schema, version="bench-train")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    import resource

    return {
        "source": f"simulator: {worlds} worlds x {patients} patients x {days} days, baseline "
        "policy, recorded with nudges/simlog.py",
        "decisions": len(log),
        "nudges_with_outcome": len(nudged),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),  # of all threads: about 2 x seconds on two idle cores
        "feature_replay_seconds": round(features, 1),
        "threads": 2,
        "metrics": result.metrics,
        "log_generation_seconds": round(generate, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target": "<= 120 s for 1,000,000 decisions",
    }


def simulated_log(*, target: int, patients: int, days: int) -> tuple[Any, Any, int]:
    """At least `target` decisions from baseline runs of successive simulator worlds, as one
    DecisionLog (built a world at a time: a world's records are large, its log is not)."""
    from nudges import offline, simlog
    from nudges import simulator as sim
    from nudges.decision_log import from_records

    logs, total, seed, schema = [], 0, 1, None
    while total < target:
        setup = offline.world_from_cohort(patients, seed)
        schema = setup.schema
        recorder = simlog.Recorder()
        policy = offline.sim_policy("baseline", setup.world, setup.keys, setup.schema, None)
        run = sim.simulate(
            setup.world,
            policy,
            days=days,
            seed=seed + 1000,
            allowed=setup.allowed,
            on_step=recorder,
        )
        records = simlog.log_records(setup.world, recorder, run, keys=setup.keys, seed=seed)
        del recorder
        logs.append(from_records(records))
        total += len(records)
        del records
        seed += 1
    return concat_logs(logs), schema, len(logs)


def concat_logs(logs: list[Any]) -> Any:
    """One DecisionLog of several (their patients must differ), action ids remapped to one
    vocabulary."""
    from nudges.decision_log import DecisionLog

    vocabulary: dict[str, int] = {}
    avail, action, offsets, shift = [], [], [np.zeros(1, dtype=np.int64)], 0
    for log in logs:
        code = np.array([vocabulary.setdefault(a, len(vocabulary)) for a in log.actions])
        code = code.astype(np.int64) if len(code) else np.zeros(0, dtype=np.int64)
        avail.append(code[log.avail])
        action.append(np.where(log.action >= 0, code[np.maximum(log.action, 0)], -1))
        offsets.append(log.offsets[1:] + shift)
        shift += int(log.offsets[-1])

    def join(name: str) -> np.ndarray:
        return np.concatenate([getattr(log, name) for log in logs])

    keys = logs[0].context.keys()
    return DecisionLog(
        patients=join("patients"),
        time=join("time"),
        offsets=np.concatenate(offsets),
        avail=np.concatenate(avail),
        avail_prob=join("avail_prob"),
        avail_true=join("avail_true"),
        action=np.concatenate(action),
        propensity=join("propensity"),
        none_prob=join("none_prob"),
        none_true=join("none_true"),
        reward=join("reward"),
        acted=join("acted"),
        health_delta=join("health_delta"),
        context={key: np.concatenate([log.context[key] for log in logs]) for key in keys},
        actions=list(vocabulary),
    )
