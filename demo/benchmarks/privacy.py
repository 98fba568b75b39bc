"""DP reports benchmark: the whole report catalogue released through the service (ledger
debit, loading the month's rows from the database, contribution bounding, OpenDP, storing the
result) over 1,000,000 delivered nudges (100,000 with --quick), timed, with the peak resident
memory while it runs; and the statistical audit of privacy.dp.audit with more runs than CI
affords."""

import gc
import threading
import time
from typing import Any

import numpy as np
import polars as pl
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, models, transaction
from django.utils import timezone

from clinicians.roles import COMPLIANCE
from core.bulk import DbFormat
from demo.benchmarks.safety import setup_catalogue
from nudges import measures
from nudges.models import Decision, DecisionPoint, Delivery, Event, ReviewRequest, Template
from patients.models import Consent, Patient
from privacy.dp.accounting import epsilon_at
from privacy.dp.audit import (
    AUDIT_PERIOD,
    AUDIT_PUBLIC,
    audit_run,
    audit_scenario,
    audit_threshold,
)
from privacy.dp.catalogue import REPORTS
from privacy.dp.periods import Period
from privacy.models import PrivacyBudget
from privacy.reports import report_release
from safety.models import GroupMembership, MedicalGroup

PERIOD = Period(2025, 3)
PER_PATIENT = 25  # delivered nudges per patient in the month
CHUNK = 100_000


def bench_dp_reports(*, quick: bool = False) -> dict[str, Any]:
    deliveries = 100_000 if quick else 1_000_000
    setup_catalogue()
    started = time.perf_counter()
    seeded = _seed(deliveries // PER_PATIENT, deliveries, seed=3)
    seed_seconds = time.perf_counter() - started
    officer = _officer()
    gc.collect()
    sampler = _PeakRss()
    timings: dict[str, float] = {}
    with sampler:
        for name in REPORTS:
            start = time.perf_counter()
            report_release(
                report=name, period=PERIOD.label, budget="0.1", by=officer, channel="command"
            )
            timings[name] = round(time.perf_counter() - start, 2)
    assert PrivacyBudget.objects.get(period=PERIOD.label).spent_nanorho == 4 * 10**8
    figures: dict[str, Any] = {
        **seeded,
        "seed_seconds": round(seed_seconds, 1),
        "catalogue_seconds": round(sum(timings.values()), 2),
        "seconds_per_report": timings,
        "rss_before_mb": sampler.before_mb,
        "peak_rss_mb": sampler.peak_mb,
        "target": "under 30 s and 2 GB for 1,000,000 delivery rows",
    }
    figures["audit"] = _audit(runs=1_000 if quick else 10_000)
    return figures


def _audit(*, runs: int) -> dict[str, Any]:
    """The audit of the tests, with more runs: the honest measurement, and the planted bug
    that skips contribution bounding."""
    scenario = audit_scenario(budget_nanorho=50_000_000)
    spec, delta = scenario.spec, 1e-6
    d = spec.microdata(scenario.with_patient, AUDIT_PERIOD, AUDIT_PUBLIC, salt=5).collect()
    d_prime = spec.microdata(scenario.without_patient, AUDIT_PERIOD, AUDIT_PUBLIC, salt=5)
    bug = spec.without_patient(spec.rows(scenario.with_patient, AUDIT_PERIOD, AUDIT_PUBLIC, 5))
    claim = epsilon_at(scenario.plan.charged_nanorho / 1e9, delta)
    out: dict[str, Any] = {"rho": 0.05, "epsilon_claimed": round(claim, 3), "delta": delta}
    start = time.perf_counter()
    for label, data, n in (("honest", d.lazy(), runs), ("no_bounding", bug.collect().lazy(), 1000)):
        result = audit_run(
            scenario.statistic,
            data,
            d_prime.collect().lazy(),
            threshold=audit_threshold(scenario),
            runs=n,
            epsilon_claimed=claim,
            delta=delta,
            alpha=0.001,
        )
        out[label] = {
            "runs_per_side": n,
            "epsilon_lower_bound": round(result.epsilon_lower, 3),
            "passed": result.passed,
        }
    assert out["honest"]["passed"] and not out["no_bounding"]["passed"], out
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


class _PeakRss:
    """The process's resident memory, sampled every 20 ms while the block runs (it includes
    polars' and OpenDP's native allocations, which tracemalloc would miss)."""

    def __enter__(self) -> "_PeakRss":
        self.before_mb = _rss_mb()
        self.peak_mb = self.before_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def _rss_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def _officer() -> Any:
    user = get_user_model().objects.create(username="bench-compliance", is_staff=True)
    user.groups.add(Group.objects.get(name=COMPLIANCE))
    return user


# Seeding, fast: rows generated with numpy and polars, written with COPY on PostgreSQL --------


def _seed(patients: int, deliveries: int, *, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    db = DbFormat()
    now = timezone.now()
    groups = list(MedicalGroup.objects.order_by("slug").values_list("pk", flat=True))
    templates = list(Template.objects.filter(status="active").values_list("pk", "version", "goal"))
    patient_ids = db.new_ids(patients)
    with transaction.atomic():
        _copy(
            get_user_model(),
            {"username": [f"bench-{i:07d}" for i in range(patients)], "password": "!"},
            patients,
            ids=None,
        )
        users = dict(
            get_user_model()
            .objects.filter(username__startswith="bench-0")
            .values_list("username", "pk")
        )
        _copy(
            Patient,
            {
                "id": patient_ids,
                "pseudonym": [f"bench-p{i:07d}" for i in range(patients)],
                "user": [users[f"bench-{i:07d}"] for i in range(patients)],
                "age_band": _pick(rng, ("18-29", "30-44", "45-59", "60-74", "75+"), patients),
                "sex": _pick(rng, ("female", "male", "other", "unknown"), patients),
            },
            patients,
        )
        # Nine in ten consent to research reporting; the rest must not count.
        _copy(
            Consent,
            {
                "patient": patient_ids,
                "purpose": "research",
                "granted": (rng.random(patients) < 0.9).tolist(),
            },
            patients,
        )
        first = rng.integers(0, len(groups), size=patients)
        second = (first + rng.integers(1, len(groups), size=patients)) % len(groups)
        member_of = np.stack([first, second], axis=1)
        _copy(
            GroupMembership,
            {
                "patient": patient_ids * 2,
                "group": [db.id(groups[g]) for g in member_of.T.reshape(-1)],
            },
            2 * patients,
        )
        del users
    for start in range(0, deliveries, CHUNK):
        n = min(CHUNK, deliveries - start)
        with transaction.atomic():
            _deliveries(rng, db, patient_ids, templates, n, start, now)
    events = _events(rng, db, patient_ids)
    reviews = _reviews(rng, db, patient_ids, groups, n=deliveries // 20, now=now)
    return {
        "patients": patients,
        "deliveries": deliveries,
        "events": events,
        "review_requests": reviews,
    }


def _pick(rng: np.random.Generator, values: tuple[str, ...], n: int) -> list[str]:
    return [values[i] for i in rng.integers(0, len(values), size=n)]


def _times(seconds: np.ndarray) -> list[str]:
    """Unix seconds as the database stores them (core.bulk.DbFormat's text forms)."""
    stamps = pl.from_epoch(pl.Series(np.round(seconds * 1e6).astype(np.int64)), time_unit="us")
    text = stamps.dt.strftime("%Y-%m-%d %H:%M:%S%.6f")
    if connection.vendor != "sqlite":
        text = text + "+00:00"
    return text.to_list()


def _deliveries(
    rng: np.random.Generator,
    db: DbFormat,
    patient_ids: list[str],
    templates: list[tuple],
    n: int,
    offset: int,
    now: Any,
) -> None:
    start = PERIOD.start.timestamp()
    span = (PERIOD.end - PERIOD.start).total_seconds()
    # Row i is patient i mod P's k-th nudge (k = i div P), at a minute distinct for each k,
    # so every (patient, moment) is unique, spread over the month.
    row = np.arange(offset, offset + n)
    who, k = row % len(patient_ids), row // len(patient_ids)
    minute = (k * 1783 + who * 7) % int(span // 60)
    moments = start + minute * 60.0
    which = rng.integers(0, len(templates), size=n)
    states = _pick(rng, ("done", "done", "dismissed", "expired", "delivered"), n)
    at = _times(moments)
    points, decisions, rows = db.new_ids(n), db.new_ids(n), db.new_ids(n)
    patient = [patient_ids[i] for i in who]
    template_ids = [db.id(t[0]) for t in templates]
    template = [template_ids[i] for i in which]
    _copy(
        DecisionPoint,
        {"id": points, "patient": patient, "moment": at, "trigger": "slot"},
        n,
    )
    _copy(
        Decision,
        {
            "id": decisions,
            "decision_point": points,
            "patient": patient,
            "outcome": "nudge",
            "reason": "chosen",
            "policy_name": "baseline",
            "policy_version": "bench",
            "template": template,
            "template_version": [templates[i][1] for i in which],
            "propensity": 0.5,
            "receipt": "{}",
        },
        n,
    )
    _copy(
        Delivery,
        {
            "id": rows,
            "decision": decisions,
            "patient": patient,
            "template": template,
            "state": states,
            "why": "bench",
            "expires_at": at,
            "delivered_at": at,
            "safety_rules": "[]",
        },
        n,
    )


def _events(rng: np.random.Generator, db: DbFormat, patient_ids: list[str]) -> int:
    """One daily measure per patient, for one goal each, every day of the month."""
    goals = list(measures.MEASURES.values())
    days = (PERIOD.end - PERIOD.start).days
    total = 0
    for first in range(0, len(patient_ids), CHUNK // days):
        chunk = patient_ids[first : first + CHUNK // days]
        n = len(chunk) * days
        goal = np.repeat(rng.integers(0, len(goals), size=len(chunk)), days)
        day = np.tile(np.arange(days), len(chunk))
        scale = np.array([abs(goals[g].scale) for g in goal])
        with transaction.atomic():
            _copy(
                Event,
                {
                    "patient": np.repeat(np.array(chunk, dtype=object), days).tolist(),
                    "client_id": [f"b{d}" for d in day],
                    "kind": [goals[g].kind for g in goal],
                    "value": (10 * scale + rng.normal(0, 1, n) * scale).tolist(),
                    "occurred_at": _times(PERIOD.start.timestamp() + day * 86400.0 + 72000),
                },
                n,
            )
        total += n
    return total


def _reviews(
    rng: np.random.Generator,
    db: DbFormat,
    patient_ids: list[str],
    groups: list[Any],
    *,
    n: int,
    now: Any,
) -> int:
    deliveries = list(Delivery.objects.values_list("pk", "patient_id")[:n])
    ids = db.new_ids(len(deliveries))
    created = _times(PERIOD.start.timestamp() + rng.uniform(0, 28 * 86400, len(deliveries)))
    with transaction.atomic():
        _copy(
            ReviewRequest,
            {
                "id": ids,
                "created_at": created,
                "delivery": [db.id(d) for d, _ in deliveries],
                "patient": [db.id(p) for _, p in deliveries],
                "kind": "before_delivery",
                "state": _pick(rng, ("approved", "rejected", "expired", "pending"), len(ids)),
                "rules": "[]",
            },
            len(ids),
        )
        through = ReviewRequest.groups.through
        picked = rng.integers(0, len(groups), size=len(ids))
        _copy(
            through,
            {"reviewrequest": ids, "medicalgroup": [db.id(groups[g]) for g in picked]},
            len(ids),
            ids=None,
        )
    return len(ids)


def _copy(model: type[models.Model], columns: dict[str, Any], n: int, *, ids: Any = "new") -> None:
    """Insert n rows: `columns` maps field names to a list of n values or one value for all;
    every other field takes its default (a required field without one is an error)."""
    db = DbFormat()
    now = db.datetime(timezone.now())
    values: dict[str, Any] = dict(columns)
    for field in model._meta.concrete_fields:
        if field.name in values or (field.primary_key and ids is None):
            continue
        if field.primary_key:
            values[field.name] = db.new_ids(n)
        elif field.name in ("created_at", "updated_at") or getattr(field, "auto_now", False):
            values[field.name] = now
        elif field.has_default():
            default = field.get_default()
            values[field.name] = field.get_db_prep_save(default, connection)
        elif field.null:
            values[field.name] = None
        elif field.blank and field.empty_strings_allowed:
            values[field.name] = ""
        else:
            raise ValueError(f"{model.__name__}.{field.name} needs a value")
    names = list(values)
    table = connection.ops.quote_name(model._meta.db_table)
    cols = ", ".join(connection.ops.quote_name(model._meta.get_field(f).column) for f in names)  # type: ignore[union-attr,arg-type]
    series = [v if isinstance(v, list) else [v] * n for v in values.values()]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            frame = pl.DataFrame(
                {f"c{i}": pl.Series(s, strict=False) for i, s in enumerate(series)}
            )
            with cursor.cursor.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(frame.write_csv(include_header=False))
        else:
            marks = ", ".join(["%s"] * len(names))
            rows = list(zip(*series, strict=True))
            insert = f"INSERT INTO {table} ({cols}) VALUES ({marks})"  # noqa: S608 - our names
            cursor.executemany(insert, rows)
