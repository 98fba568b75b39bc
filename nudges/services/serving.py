"""What the recommender needs from the engine's records when it decides: each patient's
context and the decayed history of their nudges, computed with the same functions that replay
a decision log for training (nudges.history), so serving and training see the same numbers."""

import datetime as dt
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from core import pipeline, raw
from core.bulk import DbFormat
from nudges import features as F
from nudges import history as hist
from nudges.decide import ModelInputs, PatientFacts, Snapshot
from nudges.models import Delivery, DeliveryState, Template
from patients.models import Patient

HISTORY_DAYS = 60  # beyond this the decayed counts (14-day scale at most) are negligible


def recent_deliveries_reader(
    patient_ids: Sequence[Any], *, since: dt.datetime
) -> pipeline.Reader[list[tuple]]:
    """(patient_id, slug, version, goal, category, created_at, state) of the patients'
    deliveries since `since`, in one query: a reader (core.pipeline), read with the decision's
    other reads."""
    db = DbFormat()
    sql = (
        "SELECT d.patient_id, t.slug, t.version, t.goal, t.category, d.created_at, d.state "  # noqa: S608
        f"FROM {raw.table(Delivery)} d JOIN {raw.table(Template)} t ON t.id = d.template_id "
        f"WHERE d.patient_id IN ({raw.marks(len(patient_ids))}) AND d.created_at >= %s"
    )
    [rows] = yield [(sql, [*(db.id(pk) for pk in patient_ids), db.datetime(since)])]
    return raw.convert(rows, _HISTORY_FIELDS)


_HISTORY_FIELDS: list[Any] = [
    Patient._meta.pk,
    *(Template._meta.get_field(name) for name in ("slug", "version", "goal", "category")),
    Delivery._meta.get_field("created_at"),
    Delivery._meta.get_field("state"),
]


def model_inputs(
    *,
    patients: Sequence[Patient],
    facts: Sequence[PatientFacts],
    deliveries: Sequence[tuple],
    snapshot: Snapshot,
    schema: F.Schema,
    now: dt.datetime,
    triggers: Sequence[str],
) -> ModelInputs:
    """Context and history features for each patient (rows) and each snapshot template."""
    n, m = len(patients), len(snapshot)
    row_of = {p.pk: i for i, p in enumerate(patients)}
    t_now = now.timestamp() / 86400.0
    keys = [t.key for t in snapshot.templates]
    code = {key: i for i, key in enumerate(keys)}
    rows = np.array([row_of[d[0]] for d in deliveries], dtype=np.int64)
    action = np.array(
        [code.setdefault(f"{d[1]}@{d[2]}", len(code)) for d in deliveries], dtype=np.int64
    )
    goal = np.array([F.GOALS.index(d[3]) for d in deliveries], dtype=np.int64)
    category = np.array([F.CATEGORIES.index(d[4]) for d in deliveries], dtype=np.int64)
    when = np.array([d[5].timestamp() / 86400.0 for d in deliveries])
    acted = np.array([1.0 if d[6] == DeliveryState.DONE else 0.0 for d in deliveries])
    ones = np.ones(len(deliveries))

    def at_now(
        event_key: np.ndarray, query_key: np.ndarray, *weighted: tuple[np.ndarray, float]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        return hist.sums_at(
            event_key=event_key, event_time=when, query_key=query_key, at=t_now, weighted=weighted
        )

    (sent_3d, acts_7d, sent_14d, acts_14d), _ = at_now(
        rows,
        np.arange(n),
        (ones, F.TAU_SENT_PATIENT),
        (acted, F.TAU_ACTS_PATIENT),
        (ones, F.TAU_RATE),
        (acted, F.TAU_RATE),
    )
    patient = F.PatientHistory(
        sent_3d=sent_3d, acts_7d=acts_7d, sent_14d=sent_14d, acts_14d=acts_14d
    )
    pair_row = np.repeat(np.arange(n), m)
    pair_column = np.tile(np.arange(m), n)
    size = len(code)
    column_goal = np.array([F.GOALS.index(t.goal) for t in snapshot.templates], dtype=np.int64)
    column_category = np.array(
        [F.CATEGORIES.index(t.category) for t in snapshot.templates], dtype=np.int64
    )
    (sent_7d, acted_14d), last = at_now(
        hist.pair_codes(rows, action, size),
        hist.pair_codes(pair_row, pair_column, size),
        (ones, F.TAU_SENT_PAIR),
        (acted, F.TAU_ACTS_PAIR),
    )
    _, last_goal = at_now(
        hist.pair_codes(rows, goal, len(F.GOALS)),
        hist.pair_codes(pair_row, column_goal[pair_column], len(F.GOALS)),
    )
    (category_sent, category_acts), _ = at_now(
        hist.pair_codes(rows, category, len(F.CATEGORIES)),
        hist.pair_codes(pair_row, column_category[pair_column], len(F.CATEGORIES)),
        (ones, F.TAU_RATE),
        (acted, F.TAU_RATE),
    )
    pair = {
        "sent_7d": sent_7d.reshape(n, m),
        "acted_14d": acted_14d.reshape(n, m),
        "days_since": (t_now - last).reshape(n, m),
        "days_since_goal": (t_now - last_goal).reshape(n, m),
        "category_sent_14d": category_sent.reshape(n, m),
        "category_acts_14d": category_acts.reshape(n, m),
    }
    return ModelInputs(
        context=_context(patients, facts, schema, now, triggers), patient=patient, pair=pair
    )


def _context(
    patients: Sequence[Patient],
    facts: Sequence[PatientFacts],
    schema: F.Schema,
    now: dt.datetime,
    triggers: Sequence[str],
) -> F.Context:
    local = [now.astimezone(ZoneInfo(p.timezone)) for p in patients]
    return F.Context(
        groups=np.array(
            [[1.0 if f.groups and g in f.groups else 0.0 for g in schema.groups] for f in facts]
        ).reshape(len(facts), len(schema.groups)),
        weights=np.array([[f.agenda.get(g, 0.0) for g in F.GOALS] for f in facts]),
        age_band=np.array([_index(F.AGE_BANDS, p.age_band) for p in patients]),
        sex=np.array([_index(F.SEXES, p.sex) for p in patients]),
        tenure_days=np.array([(now - p.created_at).total_seconds() / 86400.0 for p in patients]),
        local_hour=np.array([t.hour for t in local], dtype=float),
        weekday=np.array([t.weekday() for t in local], dtype=float),
        trigger=np.array([_index(F.TRIGGERS, t) for t in triggers]),
    )


def _index(values: Sequence[str], value: str) -> int:
    return values.index(value) if value in values else -1
