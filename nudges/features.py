"""Pure: the recommender's features, one row per (decision point, candidate template), built
vectorised from three sources that must agree: a decision log (training and offline
evaluation, replaying each patient's past with nudges.history), the engine's own records
(serving), and the simulator's state (evaluation on the ground truth).

Patient: medical groups, agenda weights, age band, sex, days since enrolment, decayed counts
of nudges received (3 days) and acted on (7 days) and the act rate (14 days). Context: local
hour, weekday, weekend, trigger. Template: its id, goal, category, intensity and the weight of
its goal in the agenda. History of the pair: decayed sends (7 days) and acts (14 days) of this
template, days since it was last sent (capped at 30), and the patient's act rate in its
category (14 days)."""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nudges import history as hist
from nudges.decision_log import DecisionLog

GOALS = ("activity", "medication", "sleep", "diet", "mood", "hydration", "monitoring")
CATEGORIES = ("reminder", "tip", "challenge", "reflection", "tracking")
INTENSITIES = ("low", "moderate", "high")
AGE_BANDS = ("18-29", "30-44", "45-59", "60-74", "75+")
SEXES = ("female", "male", "other", "unknown")
TRIGGERS = ("slot", "app_open", "event")
TAU_SENT_PATIENT, TAU_ACTS_PATIENT, TAU_RATE = 3.0, 7.0, 14.0
TAU_SENT_PAIR, TAU_ACTS_PAIR = 7.0, 14.0
PRIOR_RATE, PRIOR_STRENGTH = 0.3, 2.0
MAX_DAYS_SINCE = 30.0
CATEGORICAL = ("age_band", "sex", "trigger", "template", "goal", "category", "intensity")


@dataclass(frozen=True)
class Schema:
    """What the features are built against: the groups, and the templates known when the
    model was trained (a template unknown to the model is a cold start)."""

    groups: tuple[str, ...]
    actions: tuple[str, ...]
    action_goal: tuple[int, ...]  # index into GOALS, -1 unknown
    action_category: tuple[int, ...]
    action_intensity: tuple[int, ...]

    @classmethod
    def from_templates(cls, groups: Iterable[str], templates: Sequence[Mapping]) -> "Schema":
        return cls(
            groups=tuple(groups),
            actions=tuple(t["key"] for t in templates),
            action_goal=tuple(GOALS.index(t["goal"]) for t in templates),
            action_category=tuple(CATEGORIES.index(t["category"]) for t in templates),
            action_intensity=tuple(INTENSITIES.index(t["intensity"]) for t in templates),
        )

    @property
    def names(self) -> list[str]:
        return [
            *(f"g_{g}" for g in self.groups),
            *(f"w_{g}" for g in GOALS),
            "age_band",
            "sex",
            "tenure_days",
            "local_hour",
            "weekday",
            "weekend",
            "trigger",
            "nudges_3d",
            "acts_7d",
            "act_rate_14d",
            "template",
            "goal",
            "category",
            "intensity",
            "goal_weight",
            "template_sent_7d",
            "template_acted_14d",
            "days_since_template",
            "days_since_goal",
            "category_act_rate_14d",
        ]

    def index_of(self, keys: Sequence[str]) -> np.ndarray:
        """Schema indices of action ids (-1 for an id the schema does not know)."""
        lookup = {key: i for i, key in enumerate(self.actions)}
        return np.array([lookup.get(k, -1) for k in keys], dtype=np.int64)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        data = json.loads(text)
        return cls(**{k: tuple(v) for k, v in data.items()})


@dataclass
class Context:
    """Per decision point: what is known of the patient and the moment."""

    groups: np.ndarray  # (n, K) 0/1
    weights: np.ndarray  # (n, goals)
    age_band: np.ndarray  # (n,) index, -1 unknown
    sex: np.ndarray
    tenure_days: np.ndarray
    local_hour: np.ndarray
    weekday: np.ndarray
    trigger: np.ndarray

    def __len__(self) -> int:
        return len(self.age_band)


@dataclass
class PatientHistory:
    """Per decision point: decayed counts of the patient's nudges and acts before it."""

    sent_3d: np.ndarray
    acts_7d: np.ndarray
    sent_14d: np.ndarray
    acts_14d: np.ndarray


@dataclass
class PairHistory:
    """Per (decision point, template) pair: this template's past with this patient, and the
    patient's past in its category."""

    sent_7d: np.ndarray
    acted_14d: np.ndarray
    days_since: np.ndarray
    days_since_goal: np.ndarray  # since the patient last got a nudge of the same goal
    category_sent_14d: np.ndarray
    category_acts_14d: np.ndarray


def rate(acts: np.ndarray, sent: np.ndarray) -> np.ndarray:
    return (acts + PRIOR_RATE * PRIOR_STRENGTH) / (sent + PRIOR_STRENGTH)


def assemble(
    schema: Schema,
    context: Context,
    patient: PatientHistory,
    decision: np.ndarray,
    action: np.ndarray,
    pair: PairHistory,
) -> np.ndarray:
    """The feature matrix (pairs x features, float32) for pairs (decision[i], action[i]),
    action given as schema indices (-1: unknown template, its attributes missing)."""
    known = action >= 0
    safe = np.where(known, action, 0)
    goal = np.where(known, np.asarray(schema.action_goal)[safe], -1)
    category = np.where(known, np.asarray(schema.action_category)[safe], -1)
    intensity = np.where(known, np.asarray(schema.action_intensity)[safe], -1)
    weights = context.weights[decision]
    goal_weight = np.where(
        goal >= 0, weights[np.arange(len(decision)), np.maximum(goal, 0)], np.nan
    )
    columns = [
        context.groups[decision],
        weights,
        _cat(context.age_band[decision]),
        _cat(context.sex[decision]),
        context.tenure_days[decision],
        context.local_hour[decision],
        context.weekday[decision],
        (context.weekday[decision] >= 5).astype(float),
        _cat(context.trigger[decision]),
        patient.sent_3d[decision],
        patient.acts_7d[decision],
        rate(patient.acts_14d, patient.sent_14d)[decision],
        _cat(action),
        _cat(goal),
        _cat(category),
        _cat(intensity),
        goal_weight,
        pair.sent_7d,
        pair.acted_14d,
        _days_since(pair.days_since),
        _days_since(pair.days_since_goal),
        rate(pair.category_acts_14d, pair.category_sent_14d),
    ]
    return np.column_stack(
        [np.asarray(c, dtype=np.float32).reshape(len(decision), -1) for c in columns]
    )


def _days_since(values: np.ndarray) -> np.ndarray:
    return np.minimum(np.nan_to_num(values, nan=MAX_DAYS_SINCE), MAX_DAYS_SINCE)


def _cat(values: np.ndarray) -> np.ndarray:
    """Categorical codes for LightGBM: negative (unknown) becomes missing."""
    values = np.asarray(values, dtype=float)
    return np.where(values < 0, np.nan, values)


# From a decision log ------------------------------------------------------------------------


def log_context(log: DecisionLog, schema: Schema) -> Context:
    n = len(log)
    ctx = log.context

    def number(name: str, default: float = np.nan) -> np.ndarray:
        column = ctx.get(name)
        if column is None or column.dtype == object:
            return np.full(n, default)
        return np.nan_to_num(column, nan=default)

    def code(name: str, vocabulary: Sequence[str]) -> np.ndarray:
        column = ctx.get(name)
        if column is None:
            return np.full(n, -1)
        lookup = {v: i for i, v in enumerate(vocabulary)}
        return np.array([lookup.get(v, -1) if isinstance(v, str) else -1 for v in column])

    tenure = ctx.get("tenure_days")
    if tenure is None or tenure.dtype == object:
        first = _first_time(log)
        tenure = log.time - first
    return Context(
        groups=np.column_stack([number(f"g_{g}", 0.0) for g in schema.groups])
        if schema.groups
        else np.zeros((n, 0)),
        weights=np.column_stack([number(f"w_{g}", 0.0) for g in GOALS]),
        age_band=code("age_band", AGE_BANDS),
        sex=code("sex", SEXES),
        tenure_days=np.asarray(tenure, dtype=float),
        local_hour=number("local_hour"),
        weekday=number("weekday"),
        trigger=code("trigger", TRIGGERS),
    )


def _first_time(log: DecisionLog) -> np.ndarray:
    _, patient = np.unique(log.patients.astype(str), return_inverse=True)
    first = np.full(patient.max() + 1 if len(patient) else 0, np.inf)
    np.minimum.at(first, patient, log.time)
    return first[patient]


@dataclass
class LogReplay:
    """Everything replayed from a log once, for building features of any pairs."""

    patient: np.ndarray  # (n,) patient codes
    schema_action: np.ndarray  # (len(log.actions),) schema index of each log action id
    send_key_patient: np.ndarray
    send_time: np.ndarray
    send_acted: np.ndarray
    send_action: np.ndarray  # log action codes of the sends
    history: PatientHistory


def log_replay(log: DecisionLog, schema: Schema) -> LogReplay:
    _, patient = np.unique(log.patients.astype(str), return_inverse=True)
    sends = np.flatnonzero(log.action >= 0)
    acted = np.nan_to_num(log.acted[sends], nan=0.0)
    times = log.time[sends]

    def patient_sums(weight: np.ndarray, tau: float) -> np.ndarray:
        return hist.decayed_sums(
            event_key=patient[sends],
            event_time=times,
            event_weight=weight,
            query_key=patient,
            query_time=log.time,
            tau=tau,
        )

    ones = np.ones(len(sends))
    return LogReplay(
        patient=patient,
        schema_action=schema.index_of(log.actions),
        send_key_patient=patient[sends],
        send_time=times,
        send_acted=acted,
        send_action=log.action[sends],
        history=PatientHistory(
            sent_3d=patient_sums(ones, TAU_SENT_PATIENT),
            acts_7d=patient_sums(acted, TAU_ACTS_PATIENT),
            sent_14d=patient_sums(ones, TAU_RATE),
            acts_14d=patient_sums(acted, TAU_RATE),
        ),
    )


def log_pairs(
    log: DecisionLog, schema: Schema, replay: LogReplay, decision: np.ndarray, action: np.ndarray
) -> tuple[np.ndarray, PairHistory]:
    """Schema indices and pair histories for pairs (decision, log action code)."""
    n_actions = max(len(log.actions), 1)
    category_of_log_action = (
        np.where(
            replay.schema_action >= 0,
            np.asarray(schema.action_category)[np.maximum(replay.schema_action, 0)],
            -1,
        )
        if len(log.actions)
        else np.zeros(0, dtype=int)
    )
    send_pair = hist.pair_codes(replay.send_key_patient, replay.send_action, n_actions)
    query_pair = hist.pair_codes(replay.patient[decision], action, n_actions)
    when = log.time[decision]
    ones = np.ones(len(replay.send_time))

    def pair_sum(weight: np.ndarray, tau: float) -> np.ndarray:
        return hist.decayed_sums(
            event_key=send_pair,
            event_time=replay.send_time,
            event_weight=weight,
            query_key=query_pair,
            query_time=when,
            tau=tau,
        )

    send_category = (
        category_of_log_action[replay.send_action] if len(replay.send_action) else np.zeros(0, int)
    )
    query_category = category_of_log_action[action] if len(action) else np.zeros(0, int)
    send_cat_key = hist.pair_codes(replay.send_key_patient, send_category, len(CATEGORIES))
    query_cat_key = hist.pair_codes(replay.patient[decision], query_category, len(CATEGORIES))

    def category_sum(weight: np.ndarray) -> np.ndarray:
        return hist.decayed_sums(
            event_key=send_cat_key,
            event_time=replay.send_time,
            event_weight=weight,
            query_key=query_cat_key,
            query_time=when,
            tau=TAU_RATE,
        )

    last = hist.last_event_before(
        event_key=send_pair, event_time=replay.send_time, query_key=query_pair, query_time=when
    )
    goal_of_log_action = (
        np.where(
            replay.schema_action >= 0,
            np.asarray(schema.action_goal)[np.maximum(replay.schema_action, 0)],
            -1,
        )
        if len(log.actions)
        else np.zeros(0, dtype=int)
    )
    send_goal = (
        goal_of_log_action[replay.send_action] if len(replay.send_action) else np.zeros(0, int)
    )
    query_goal = goal_of_log_action[action] if len(action) else np.zeros(0, int)
    last_goal = hist.last_event_before(
        event_key=hist.pair_codes(replay.send_key_patient, send_goal, len(GOALS)),
        event_time=replay.send_time,
        query_key=hist.pair_codes(replay.patient[decision], query_goal, len(GOALS)),
        query_time=when,
    )
    pair = PairHistory(
        sent_7d=pair_sum(ones, TAU_SENT_PAIR),
        acted_14d=pair_sum(replay.send_acted, TAU_ACTS_PAIR),
        days_since=when - last,
        days_since_goal=np.where(query_goal >= 0, when - last_goal, np.nan),
        category_sent_14d=category_sum(ones),
        category_acts_14d=category_sum(replay.send_acted),
    )
    return replay.schema_action[action], pair


def log_features(
    log: DecisionLog, schema: Schema, decision: np.ndarray, action: np.ndarray
) -> np.ndarray:
    """Features of pairs (decision index, log action code) of a decision log."""
    replay = log_replay(log, schema)
    schema_action, pair = log_pairs(log, schema, replay, decision, action)
    return assemble(schema, log_context(log, schema), replay.history, decision, schema_action, pair)
