"""Decision logs in and out (docs/decision-log.md): importing a log from outside the engine
(`decisions_import`), reading an imported data set back (`imported_log`), and the engine's own
decisions in the same format (`engine_records`, `engine_log`). Patient ids from outside are
pseudonymised on the way in (privacy.pseudonyms, the data set's name as the namespace) and
never stored."""

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import polars as pl
from django.db import IntegrityError, NotSupportedError, connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Func, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.text import slugify

from core import raw
from core.bulk import DbFormat, insert_rows
from core.errors import ApplicationError, not_found
from nudges import measures
from nudges.decision_log import (
    MAX_ERRORS,
    DecisionLog,
    LogError,
    from_records,
    iter_lines,
    read_lines,
)
from nudges.engine_export import Exported, Profiles, outcomes
from nudges.lifecycle import TERMINAL
from nudges.models import Decision, DeliveryState, Event, ImportedDecision, Outcome
from nudges.simlog import DELTA_AFTER, DELTA_BEFORE
from patients.models import Patient
from privacy.pseudonyms import pseudonym
from safety.models import MedicalGroup

CHUNK_LINES = 50_000  # lines validated and inserted at a time: memory stays flat
ACTION_MAX = cast(int, ImportedDecision._meta.get_field("action").max_length)  # a CharField's
FIELDS = (
    "id",
    "created_at",
    "updated_at",
    "dataset",
    "pseudonym",
    "time",
    "available",
    "context",
    "action",
    "propensity",
    "distribution",
    "outcome",
    "true_values",
    "imported_at",
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)

Progress = Callable[[int], None]  # told the number of lines (or records) just handled


# Import ------------------------------------------------------------------------------------


def decisions_import(
    *, path: Path | str, dataset: str, replace: bool = False, progress: Progress | None = None
) -> int:
    """Store every decision point of the log at `path` as data set `dataset`, each patient id
    replaced by its pseudonym in the data set's namespace. All or nothing: a file with any
    invalid line, or with two lines for the same patient and time, stores nothing and the
    error names the lines. A data set that already has rows is refused unless `replace`,
    which swaps it whole in the same transaction. Returns the number of decisions stored."""
    if slugify(dataset) != dataset or not dataset or len(dataset) > 64:
        raise ApplicationError(
            "A data set name is a slug: lower-case letters, digits and hyphens, at most 64.",
            fields={"dataset": "invalid"},
        )
    importer = _Importer(dataset, now=timezone.now())
    try:
        with transaction.atomic():
            _dataset_lock(dataset)
            existing = ImportedDecision.objects.filter(dataset=dataset)
            if existing.exists():
                if not replace:
                    raise ApplicationError(
                        "This data set is already imported; import it with replace to swap it.",
                        code="conflict",
                        status=409,
                    )
                existing.delete()
            for start, lines in _chunks(iter_lines(path)):
                importer.add(start, lines)
                if progress is not None:
                    progress(len(lines))
                if len(importer.errors) >= MAX_ERRORS:
                    break
            if importer.errors:
                raise _refusal(importer.errors)
    except IntegrityError:
        raise _refusal(
            importer.repeated() or [(0, "the data set changed during the import")]
        ) from None
    return importer.count


def _refusal(errors: list[tuple[int, str]]) -> ApplicationError:
    errors = sorted(errors)[:MAX_ERRORS]
    shown = "; ".join(f"line {n}: {reason}" for n, reason in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return ApplicationError(
        f"{len(errors)} invalid line(s), nothing imported: {shown}{more}",
        code="invalid_log",
        fields={"lines": [{"line": n, "reason": reason} for n, reason in errors]},
    )


def _dataset_lock(dataset: str) -> None:
    """Two imports of one data set run one after the other, so the "already imported" check
    holds. SQLite runs one writing transaction at a time already; PostgreSQL takes an
    advisory lock on the name until commit."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"decision-log:{dataset}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
        )


def _chunks(lines: Iterable[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) of CHUNK_LINES each."""
    chunk: list[bytes] = []
    start = 1
    for line in lines:
        chunk.append(line)
        if len(chunk) == CHUNK_LINES:
            yield start, chunk
            start += len(chunk)
            chunk = []
    if chunk:
        yield start, chunk


class _Importer:
    """Validates chunks with decision_log.read_lines and inserts them while no line has been
    refused; after the first refusal it only validates, to name more bad lines."""

    def __init__(self, dataset: str, *, now: dt.datetime) -> None:
        self.dataset = dataset
        self.db = DbFormat()
        self.now = now
        self.stamp = self.db.datetime(now)
        self.errors: list[tuple[int, str]] = []
        self.count = 0
        self.pseudonyms: dict[str, str] = {}
        self.codes: dict[str, int] = {}
        # For naming repeated (patient, time) pairs: pseudonym code, microseconds, line.
        self.keys: list[np.ndarray] = []

    def add(self, start: int, lines: list[bytes]) -> None:
        try:
            read_lines(lines)
        except LogError as error:
            self.errors += [(start + n - 1, reason) for n, reason in error.errors]
            return
        if self.errors:
            return
        numbers = [start + k for k, line in enumerate(lines) if line.strip()]
        records = [orjson.loads(line) for line in lines if line.strip()]
        too_long = [
            (n, f"action id longer than {ACTION_MAX} characters")
            for n, r in zip(numbers, records, strict=True)
            if r["action"] is not None and len(r["action"]) > ACTION_MAX
        ]
        if too_long:
            self.errors += too_long
            return
        insert_rows(ImportedDecision, FIELDS, self._rows(numbers, records))
        self.count += len(records)

    def _rows(self, numbers: list[int], records: list[dict[str, Any]]) -> list[tuple]:
        db, stamp, dataset = self.db, self.stamp, self.dataset
        ids = db.new_ids(len(records), self.now)
        key = np.empty((len(records), 3), dtype=np.int64)
        rows = []
        for k, r in enumerate(records):
            name = self._pseudonym(r["patient"])
            moment = dt.datetime.fromisoformat(r["time"].replace("Z", "+00:00"))
            key[k] = (self.codes[name], (moment - _EPOCH) // _MICROSECOND, numbers[k])
            rows.append(
                (
                    ids[k],
                    stamp,
                    stamp,
                    dataset,
                    name,
                    db.datetime(moment),
                    db.json(r["available"]),
                    db.json(r.get("context", {})),
                    r["action"] or "",
                    float(r["propensity"]),
                    _json_or_null(db, r.get("distribution")),
                    db.json(r.get("outcome", {})),
                    _json_or_null(db, r.get("true_values")),
                    stamp,
                )
            )
        self.keys.append(key)
        return rows

    def _pseudonym(self, patient: str) -> str:
        name = self.pseudonyms.get(patient)
        if name is None:
            name = self.pseudonyms[patient] = pseudonym(patient, namespace=self.dataset)
            self.codes.setdefault(name, len(self.codes))
        return name

    def repeated(self) -> list[tuple[int, str]]:
        """Lines whose patient and time an earlier line already has."""
        if not self.keys:
            return []
        key = np.concatenate(self.keys)
        key = key[np.lexsort((key[:, 2], key[:, 1], key[:, 0]))]
        same = (key[1:, 0] == key[:-1, 0]) & (key[1:, 1] == key[:-1, 1])
        return [
            (int(line), f"repeats the patient and time of line {int(first)}")
            for first, line in zip(key[:-1][same, 2], key[1:][same, 2], strict=True)
        ]


def _json_or_null(db: DbFormat, value: Any) -> str | None:
    return None if value is None else db.json(value)


# Reading an imported data set back ------------------------------------------------------------


def _text(expression: Any) -> Cast:
    """A JSON column (or part of one) as its text, to parse with orjson rather than have
    Django parse it value by value."""
    return Cast(expression, output_field=TextField())


def imported_log(*, dataset: str) -> DecisionLog:
    """The imported data set as a DecisionLog, in time order (then pseudonym)."""
    rows = (
        ImportedDecision.objects.filter(dataset=dataset)
        .order_by("time", "pseudonym")
        .values_list(
            "pseudonym",
            "time",
            _text("available"),
            _text("context"),
            "action",
            "propensity",
            _text("distribution"),
            _text("outcome"),
            _text("true_values"),
        )
    )
    records = [_record(*row) for row in rows.iterator(chunk_size=20_000)]
    if not records:
        raise not_found("data set")
    return from_records(records)


def _record(
    patient: str,
    time: dt.datetime,
    available: str,
    context: str,
    action: str,
    propensity: float,
    distribution: str | None,
    outcome: str,
    true_values: str | None,
) -> dict[str, Any]:
    record = {
        "patient": patient,
        "time": time.astimezone(dt.UTC).isoformat(),
        "available": orjson.loads(available),
        "context": orjson.loads(context),
        "action": action or None,
        "propensity": propensity,
        "outcome": orjson.loads(outcome),
    }
    if distribution is not None:
        record["distribution"] = orjson.loads(distribution)
    if true_values is not None:
        record["true_values"] = orjson.loads(true_values)
    return record


# The engine's own decisions -----------------------------------------------------------------
# Hot: the demo holds about 170,000 decisions. Rows are read through the cursor without
# Django's per-value conversions, only the parts of each receipt that the log needs are
# parsed, and everything else is computed on arrays (nudges/engine_export.py).


def engine_log(*, since: dt.datetime, until: dt.datetime) -> DecisionLog:
    """The engine's decisions with a decision point in [since, until) as a DecisionLog, the
    same decisions engine_records gives."""
    return engine_decisions(since=since, until=until).log()


def engine_records(
    *, since: dt.datetime, until: dt.datetime, now: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The same as decision-log records, made one at a time (for writing a file)."""
    return engine_decisions(since=since, until=until, now=now).records()


def engine_decisions(
    *, since: dt.datetime, until: dt.datetime, now: dt.datetime | None = None
) -> Exported:
    """The engine's decisions with a decision point in [since, until), in time order, with
    their outcomes as known at `now`. Only decisions at which the policy drew are exported
    (outcome nudge or no_nudge, the holdout arm's certain "no nudge" included): an unavailable
    patient or an empty candidate set leaves nothing to choose and no propensity
    (docs/decision-log.md)."""
    now = now or timezone.now()
    decisions = Decision.objects.filter(
        decision_point__moment__gte=since,
        decision_point__moment__lt=until,
        outcome__in=[Outcome.NUDGE, Outcome.NO_NUDGE],
        propensity__isnull=False,
    )
    rows = _raw(
        decisions.order_by("decision_point__moment", "pk").values_list(
            "patient_id",
            "decision_point__moment",
            "propensity",
            "template__goal",
            "delivery__state",
            ExpressionWrapper(Q(delivery__delivered_at__isnull=False), output_field=BooleanField()),
            _JsonParts("receipt", "candidates", "no_nudge_probability", "chosen", "context"),
            _JsonParts("receipt", "agenda", "groups"),
        )
    )
    # The patients by their keys, not by a subquery over the decisions: just after a bulk
    # write PostgreSQL's statistics can be stale enough to plan that join for minutes.
    patients = _Patients({row[0] for row in rows})
    frame = _Frame(rows, patients, now)
    nudged = {row[0] for row in rows if row[3] is not None}  # a nudge has a template's goal
    means = _daily_means(nudged, patients, since, until, now) if rows else None
    groups = list(MedicalGroup.objects.order_by("slug").values_list("slug", flat=True))
    return _exported(rows, patients, frame, means, groups)


class _JsonParts(Func):
    """Top-level values of a JSON column as the text of one JSON array: the document is read
    once per row (Django's key transforms read it again for every key on SQLite)."""

    output_field = TextField()

    def __init__(self, column: str, *keys: str) -> None:
        super().__init__(F(column))
        self.keys = keys

    def as_sqlite(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        paths = ", ".join(["%s"] * len(self.keys))
        return f"JSON_EXTRACT({column}, {paths})", [*params, *(f'$."{k}"' for k in self.keys)]

    def as_postgresql(self, compiler, connection, **extra):
        column, params = compiler.compile(self.source_expressions[0])
        parts = ", ".join([f"{column} -> %s"] * len(self.keys))
        values = [v for k in self.keys for v in (*params, k)]
        return f"jsonb_build_array({parts})::text", values

    def as_sql(self, *args: Any, **extra: Any) -> Any:
        raise NotSupportedError("decision logs need SQLite or PostgreSQL")


def _raw(queryset: QuerySet) -> list[tuple]:
    """The rows of a values_list query as the database driver returns them."""
    sql, params = queryset.query.get_compiler(using=queryset.db).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _seconds(values: list[Any]) -> np.ndarray:
    """Unix times of datetimes as the driver returns them: aware from PostgreSQL, naive UTC
    from SQLite (or its text, without Django's converters)."""
    if values and isinstance(values[0], str):
        parsed = pl.Series(values).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
        return parsed.dt.epoch("us").to_numpy() / 1e6
    if values and values[0].tzinfo is None:
        values = [v.replace(tzinfo=dt.UTC) for v in values]
    return np.fromiter((v.timestamp() for v in values), float, len(values))


class _Patients:
    """The exported decisions' patients, numbered."""

    def __init__(self, ids: set[Any]) -> None:
        rows = _raw(
            Patient.objects.filter(pk__in=raw.uuid_list(ids)).values_list(
                "pk", "pseudonym", "age_band", "sex", "timezone", "created_at"
            )
        )
        self.number = {row[0]: i for i, row in enumerate(rows)}
        self.pseudonym = np.array([row[1] for row in rows], dtype=object)
        self.age_band = np.array([row[2] for row in rows], dtype=object)
        self.sex = np.array([row[3] for row in rows], dtype=object)
        self.created = _seconds([row[5] for row in rows])
        zones = np.array([row[4] for row in rows], dtype=object)
        self.zone_names, self.zone = np.unique(zones, return_inverse=True)

    def numbers(self, ids: Iterable[Any]) -> np.ndarray:
        return np.array([self.number[pk] for pk in ids], dtype=np.int64)


def _local_days(seconds: np.ndarray, zone: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Local calendar day (days since 1970-01-01) of each Unix time in its zone."""
    out = np.zeros(len(seconds), dtype=np.int64)
    for code, name in enumerate(names):
        mask = zone == code
        if mask.any():
            micros = pl.Series(np.round(seconds[mask] * 1e6).astype(np.int64))
            local = pl.from_epoch(micros, time_unit="us").dt.replace_time_zone("UTC")
            days = local.dt.convert_time_zone(str(name)).dt.date().cast(pl.Int32)
            out[mask] = days.to_numpy()
    return out


class _Frame:
    """Per exported decision: patient number, time, local day, goal, and whether its
    outcome window (DELTA_AFTER local days after the decision's day) is over."""

    def __init__(self, rows: list[tuple], patients: _Patients, now: dt.datetime) -> None:
        self.patient = patients.numbers(r[0] for r in rows)
        self.seconds = _seconds([r[1] for r in rows])
        zone = patients.zone[self.patient]
        self.day = _local_days(self.seconds, zone, patients.zone_names)
        today = _local_days(np.full(len(rows), now.timestamp()), zone, patients.zone_names)
        self.mature = self.day + DELTA_AFTER < today
        index = {goal: i for i, goal in enumerate(measures.GOALS)}
        self.goal = np.array([index[r[3]] if r[3] else -1 for r in rows], dtype=np.int64)

    def health_delta(self, means: measures.DailyMeans | None) -> np.ndarray:
        out = np.full(len(self.goal), np.nan)
        known = (self.goal >= 0) & self.mature
        if means is not None:
            out[known] = measures.health_delta(
                means, self.patient[known], self.goal[known], self.day[known]
            )
        return out


def _daily_means(
    nudged: set[Any],
    patients: _Patients,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
) -> measures.DailyMeans:
    """Daily means of the goal measures of the nudged patients, over local days from two
    before the first decision to three after the last (a day's margin either side for the
    zones)."""
    goal_of = {m.kind: i for i, m in enumerate(measures.MEASURES.values())}
    rows = _raw(
        Event.objects.filter(
            patient_id__in=raw.uuid_list(nudged),
            kind__in=list(goal_of),
            occurred_at__gte=since - dt.timedelta(days=DELTA_BEFORE + 1),
            occurred_at__lt=min(until, now) + dt.timedelta(days=DELTA_AFTER + 2),
        ).values_list("patient_id", "kind", "value", "occurred_at")
    )
    patient = patients.numbers(r[0] for r in rows)
    day = _local_days(_seconds([r[3] for r in rows]), patients.zone[patient], patients.zone_names)
    goal = np.array([goal_of[r[1]] for r in rows], dtype=np.int64)
    value = np.fromiter((r[2] for r in rows), float, len(rows))
    return measures.daily_means(patient, goal, day, value)


def _exported(
    rows: list[tuple],
    patients: _Patients,
    frame: _Frame,
    means: measures.DailyMeans | None,
    groups: list[str],
) -> Exported:
    n = len(rows)
    lengths = np.zeros(n, dtype=np.int64)
    avail: list[str] = []
    prob: list[float] = []
    none_prob, action = np.zeros(n), np.empty(n, dtype=object)
    hour, weekday = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    trigger = np.empty(n, dtype=object)
    profile_of: dict[str, int] = {}
    profile = np.zeros(n, dtype=np.int64)
    for k, row in enumerate(rows):
        candidates, none_prob[k], action[k], at = orjson.loads(row[6])
        avail += candidates["template"]
        prob += candidates["probability"]
        lengths[k] = len(candidates["template"])
        hour[k], weekday[k], trigger[k] = at["local_hour"], at["weekday"], at["trigger"]
        profile[k] = profile_of.setdefault(row[7], len(profile_of))
    profiles = Profiles.parse(list(profile_of), groups)
    goal = frame.goal
    acted, health_delta, reward = outcomes(
        goal=goal,
        done=np.array([r[4] == DeliveryState.DONE for r in rows], dtype=bool),
        closed=np.array([r[4] in TERMINAL for r in rows], dtype=bool),
        delivered=np.array([bool(r[5]) for r in rows], dtype=bool),
        mature=frame.mature,
        health_delta=frame.health_delta(means),
        weight=profiles.weights[profile, np.maximum(goal, 0)],
    )
    tenure = (frame.seconds - patients.created[frame.patient]) / 86400.0
    return Exported(
        pseudonym=patients.pseudonym[frame.patient],
        micros=np.round(frame.seconds * 1e6).astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        avail=np.array(avail, dtype=object),
        prob=np.array(prob, dtype=float),
        none_prob=none_prob,
        action=action,
        propensity=np.array([r[2] for r in rows], dtype=float),
        profile=profile,
        profiles=profiles,
        groups=groups,
        age_band=patients.age_band[frame.patient],
        sex=patients.sex[frame.patient],
        tenure_days=np.round(np.maximum(tenure, 0.0), 4),
        local_hour=hour,
        weekday=weekday,
        trigger=trigger,
        acted=acted,
        health_delta=health_delta,
        reward=reward,
    )
