"""Pure: offline evaluation of policies, in the ground-truth simulator (docs/simulator.md) and on
decision logs (off-policy evaluation with nudges/ope.py). No ORM.

- `world_from_cohort` builds the demo world: the synthetic cohort, the reviewed catalogue and
  the safety mask from the shipped rule set (allow and allow-with-note only).
- `sim_policy` and `log_policy` name the policies: the first runs inside the simulator, the
  second gives a target policy's probabilities at every decision of a log.
- `reward_model` fits the reward model of the doubly robust estimator; `cross_fit` fits it (and
  the policy model when none is given) on K-1 folds of patients and predicts the held-out fold.
- `study` is the protocol of docs/evaluation.md and `study_markdown` renders its figures."""

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lightgbm as lgb
import numpy as np
from scipy import stats

from demo.cohort import CONDITIONS, synthetic_cohort
from nudges import agenda, baseline, ope, recommender, simlog
from nudges import features as F
from nudges import simulator as sim
from nudges.decision_log import DecisionLog, from_records
from safety import rules as safety_rules

TEMPLATES_PATH = Path(__file__).resolve().parent / "data" / "templates.json"
RULES_PATH = Path(safety_rules.__file__).resolve().parent / "data" / "rules.json"
RULES_DAY = dt.date(2026, 6, 1)  # the rule set as in force on this day
MODEL_POLICIES = ("current", "agenda", "engagement")
SIM_POLICIES = ("baseline", "oracle", "never", *MODEL_POLICIES, "always:<key>", "explore:<eps>")
LOG_POLICIES = ("baseline", "never", *MODEL_POLICIES, "always:<key>")
CHUNK = 20_000  # decisions scored at once on a log: bounds the dense (decisions x actions) arrays

REWARD_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "verbose": -1,
}
REWARD_ROUNDS, REWARD_EARLY_STOP, REWARD_VALIDATION = 400, 30, 0.1


class PolicyError(ValueError):
    """A policy that cannot be built: unknown name, unknown action, missing model."""


# The world ----------------------------------------------------------------------------------


class SimSetup(NamedTuple):
    world: sim.World
    keys: tuple[str, ...]  # template keys "slug@version", the columns of the simulator
    schema: F.Schema
    allowed: np.ndarray  # (n, m) what safety allows for each patient


@dataclass(frozen=True)
class _TemplateFacts:
    key: str
    tags: frozenset[str]
    category: str
    goal: str
    intensity: str


def world_from_cohort(
    n_patients: int,
    seed: int,
    *,
    rules_path: Path = RULES_PATH,
    templates_path: Path = TEMPLATES_PATH,
    rules_day: dt.date = RULES_DAY,
) -> SimSetup:
    """The synthetic cohort of `seed` in the world of `seed`, with the reviewed catalogue. A
    template is allowed for a patient when the rule set's verdict for the patient's groups is
    allow or allow-with-note; review and block are excluded (no clinician decides here)."""
    templates = json.loads(Path(templates_path).read_text())
    keys = tuple(f"{t['slug']}@{t['version']}" for t in templates)
    patients = synthetic_cohort(n_patients, seed=seed)
    names = tuple(CONDITIONS)
    cohort = sim.Cohort(
        weights=np.array([[p.goals.get(g, 0.0) for g in sim.GOALS] for p in patients]),
        groups=np.array([[g in p.groups for g in names] for p in patients], dtype=bool),
        group_names=names,
        age_band=np.array([sim.AGE_BANDS.index(p.age_band) for p in patients]),
        sex=np.array([sim.SEXES.index(p.sex) for p in patients]),
    )
    world = sim.World.build(cohort, sim.Catalogue.from_records(templates), seed=seed)
    schema = F.Schema.from_templates(
        names,
        [
            {"key": k, "goal": t["goal"], "category": t["category"], "intensity": t["intensity"]}
            for k, t in zip(keys, templates, strict=True)
        ],
    )
    return SimSetup(world, keys, schema, _allowed(patients, templates, keys, rules_path, rules_day))


def _allowed(
    patients: Sequence[Any],
    templates: Sequence[dict],
    keys: Sequence[str],
    rules_path: Path,
    day: dt.date,
) -> np.ndarray:
    catalogue = json.loads(Path(rules_path).read_text())
    version = catalogue.get("catalogue_version")
    compiled = safety_rules.CompiledRules.build(
        version if isinstance(version, int) else 1,
        [
            safety_rules.spec_from_fields(r["id"], r["groups"], safety_rules.rule_fields(r))
            for r in catalogue["rules"]
        ],
        day=day,
    )
    facts = [
        _TemplateFacts(k, frozenset(t["tags"]), t["category"], t["goal"], t["intensity"])
        for k, t in zip(keys, templates, strict=True)
    ]
    by_groups: dict[frozenset[str], np.ndarray] = {}
    allowed = np.zeros((len(patients), len(templates)), dtype=bool)
    for i, patient in enumerate(patients):
        groups = frozenset(patient.groups)
        if groups not in by_groups:
            by_groups[groups] = np.array(
                [
                    safety_rules.evaluate(groups=groups, template=t, rules=compiled).action
                    <= safety_rules.Action.ALLOW_WITH_NOTE
                    for t in facts
                ]
            )
        allowed[i] = by_groups[groups]
    return allowed


# Policy names -------------------------------------------------------------------------------


def parse_policy(name: str, *, allowed: Sequence[str]) -> tuple[str, str | None]:
    """(kind, argument) of a policy name such as "baseline" or "always:walk-10-minutes@1"."""
    kind, _, argument = name.partition(":")
    with_argument = {a.partition(":")[0] for a in allowed if ":" in a}
    plain = {a for a in allowed if ":" not in a}
    if (kind in plain and not argument and ":" not in name) or (kind in with_argument and argument):
        return kind, argument or None
    raise PolicyError(f"unknown policy {name!r}; expected one of {', '.join(allowed)}")


def needs_model(name: str) -> bool:
    return name.partition(":")[0] in MODEL_POLICIES


def _need_bundle(bundle: recommender.ModelBundle | None, name: str) -> recommender.ModelBundle:
    if bundle is None:
        raise PolicyError(f"policy {name!r} needs a trained model")
    return bundle


# Policies in the simulator ------------------------------------------------------------------


def sim_policy(
    name: str,
    world: sim.World,
    keys: Sequence[str],
    schema: F.Schema,
    bundle: recommender.ModelBundle | None = None,
    *,
    params: agenda.AgendaParams | None = None,
) -> sim.Policy:
    """A simulator policy by name: "baseline", "oracle", "never", "agenda" (or "current") and
    "engagement" (these two need `bundle`, and use its AgendaParams unless `params` is given),
    "always:<key>" (that template whenever it is a candidate, else no nudge) and
    "explore:<eps>" (the baseline mixed with a uniform choice over the candidates and no
    nudge, with weight eps: a logging policy for off-policy evaluation)."""
    kind, argument = parse_policy(name, allowed=SIM_POLICIES)
    if kind == "baseline":
        return sim.BaselinePolicy()
    if kind == "oracle":
        return sim.oracle_policy(world)
    if kind == "never":
        return sim.never_policy
    if kind == "always":
        return _always(_column(keys, argument))
    if kind == "explore":
        return explore_policy(sim.BaselinePolicy(), _epsilon(argument))
    model = _need_bundle(bundle, name)
    chosen = params or model.params
    engagement = kind == "engagement"

    def probabilities(
        features: np.ndarray, row: np.ndarray, column: np.ndarray, obs: sim.Observation
    ) -> np.ndarray:
        predictions = model.predict(features)
        return model_probabilities(
            features, predictions, row, column, obs.mask, model.schema, chosen, engagement
        )

    return simlog.learned_policy(model.schema, keys, probabilities)


def _column(keys: Sequence[str], key: str | None) -> int:
    if key is None or key not in keys:
        raise PolicyError(f"unknown action {key!r} for always:<key>")
    return list(keys).index(key)


def _epsilon(argument: str | None) -> float:
    try:
        epsilon = float(argument or "")
    except ValueError:
        epsilon = math.nan
    if not 0.0 < epsilon <= 1.0:
        raise PolicyError("explore:<eps> needs eps in (0, 1]")
    return epsilon


def _always(column: int) -> sim.Policy:
    def policy(obs: sim.Observation) -> np.ndarray:
        n, m = obs.mask.shape
        probs = np.zeros((n, m + 1))
        candidate = obs.mask[:, column]
        probs[candidate, column] = 1.0
        probs[~candidate, m] = 1.0
        return probs

    return policy


def explore_policy(base: sim.Policy, epsilon: float) -> sim.Policy:
    """(1 - epsilon) x base + epsilon x uniform over the candidates and no nudge."""

    def policy(obs: sim.Observation) -> np.ndarray:
        valid = np.concatenate([obs.mask, np.ones((len(obs.rows), 1), dtype=bool)], axis=1)
        uniform = valid / valid.sum(axis=1, keepdims=True)
        return (1.0 - epsilon) * base(obs) + epsilon * uniform

    return policy


def model_probabilities(
    features: np.ndarray,
    predictions: tuple[np.ndarray, np.ndarray],
    row: np.ndarray,
    column: np.ndarray,
    mask: np.ndarray,
    schema: F.Schema,
    params: agenda.AgendaParams,
    engagement: bool,
) -> np.ndarray:
    """(n, m + 1) probabilities of the agenda (or engagement-only) policy for the candidate
    pairs (row, column) of `mask`, from their features and the model's (P(act), effect)."""
    p_act, effect = predictions
    n, m = mask.shape
    if engagement:
        dense = np.zeros((n, m))
        dense[row, column] = p_act
        return agenda.engagement_probabilities(dense, mask, params)
    names = schema.names
    scores = agenda.agenda_scores(
        # A template the model does not know has no goal or intensity: no value, moderate burden.
        goal_weight=np.nan_to_num(features[:, names.index("goal_weight")], nan=0.0),
        p_act=p_act,
        effect=effect,
        intensity=np.nan_to_num(features[:, names.index("intensity")], nan=1.0).astype(int),
        days_since_goal=features[:, names.index("days_since_goal")],
        params=params,
    )
    dense = np.full((n, m), -np.inf)
    dense[row, column] = scores
    return agenda.agenda_probabilities(dense, mask, params)


# Features of a log --------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFeatures:
    """Features of every (decision, available action) pair of a log, aligned with log.avail,
    and of each decision's "no nudge" (template attributes and pair history missing). Built
    once per log and schema: replaying each patient's history is the costly part."""

    schema: F.Schema
    pairs: np.ndarray
    none: np.ndarray


def log_pair_features(log: DecisionLog, schema: F.Schema) -> LogFeatures:
    replay = F.log_replay(log, schema)
    context = F.log_context(log, schema)
    decision = log.decision_index()
    schema_action, pair = F.log_pairs(log, schema, replay, decision, log.avail)
    pairs = F.assemble(schema, context, replay.history, decision, schema_action, pair)
    n = len(log)
    missing = np.full(n, np.nan)
    none = F.assemble(
        schema,
        context,
        replay.history,
        np.arange(n),
        np.full(n, -1),
        F.PairHistory(missing, missing, missing, missing, missing, missing),
    )
    return LogFeatures(schema=schema, pairs=pairs, none=none)


def pair_positions(log: DecisionLog, decisions: np.ndarray) -> np.ndarray:
    """Indices into log.avail of the pairs of `decisions`, in order."""
    starts = log.offsets[decisions]
    lengths = log.offsets[decisions + 1] - starts
    return np.arange(int(lengths.sum())) + np.repeat(starts - np.cumsum(lengths) + lengths, lengths)


# Target policies on a log -------------------------------------------------------------------


def check_log_policy(name: str, log: DecisionLog, schema: F.Schema) -> None:
    """Refuse a name `log_policy` cannot evaluate on this log (before any costly work)."""
    kind, argument = parse_policy(name, allowed=LOG_POLICIES)
    if kind == "always" and argument not in log.actions and argument not in schema.actions:
        raise PolicyError(f"unknown action {argument!r} for always:<key>")


def log_policy(
    name: str,
    log: DecisionLog,
    schema: F.Schema,
    bundle: recommender.ModelBundle | None = None,
    *,
    features: LogFeatures | None = None,
    predictions: tuple[np.ndarray, np.ndarray] | None = None,
    params: agenda.AgendaParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(target_avail, target_none) of a target policy at every decision of `log`, for
    ope.evaluate. "current"/"agenda" and "engagement" score every available pair with the
    model (features and predictions may be given when already computed, aligned with
    log.avail); "baseline" is the engine's baseline with popularity refreshed daily from
    what the log shows before each day; "never"; "always:<key>"."""
    check_log_policy(name, log, schema)
    kind, argument = parse_policy(name, allowed=LOG_POLICIES)
    if kind == "never":
        return np.zeros(len(log.avail)), np.ones(len(log))
    if kind == "always":
        code = log.actions.index(argument) if argument in log.actions else -2
        target_avail = (log.avail == code).astype(float)
        return target_avail, 1.0 - np.bincount(
            log.decision_index(), weights=target_avail, minlength=len(log)
        )
    if kind == "baseline":
        return baseline_on_log(log, schema)
    model = _need_bundle(bundle, name)
    if features is None or features.schema != model.schema:
        features, predictions = log_pair_features(log, model.schema), None
    if predictions is None:
        predictions = model.predict(features.pairs)
    return model_policy_on_log(
        model,
        log,
        features.pairs,
        predictions,
        np.arange(len(log)),
        engagement=kind == "engagement",
        params=params,
    )


def model_policy_on_log(
    bundle: recommender.ModelBundle,
    log: DecisionLog,
    pair_features: np.ndarray,
    predictions: tuple[np.ndarray, np.ndarray],
    decisions: np.ndarray,
    *,
    engagement: bool,
    params: agenda.AgendaParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The model policy at `decisions` (sorted): probabilities of their pairs (in the order
    of pair_positions) and of no nudge. Features and predictions are aligned with log.avail."""
    params = params or bundle.params
    m = max(len(log.actions), 1)
    positions = pair_positions(log, decisions)
    out_avail, out_none = np.empty(len(positions)), np.empty(len(decisions))
    done = 0
    for start in range(0, len(decisions), CHUNK):
        chunk = decisions[start : start + CHUNK]
        at = pair_positions(log, chunk)
        row = np.repeat(np.arange(len(chunk)), np.diff(log.offsets)[chunk])
        column = log.avail[at]
        mask = np.zeros((len(chunk), m), dtype=bool)
        mask[row, column] = True
        probs = model_probabilities(
            pair_features[at],
            (predictions[0][at], predictions[1][at]),
            row,
            column,
            mask,
            bundle.schema,
            params,
            engagement,
        )
        out_avail[done : done + len(at)] = probs[row, column]
        out_none[start : start + len(chunk)] = probs[:, m]
        done += len(at)
    return out_avail, out_none


def baseline_on_log(
    log: DecisionLog, schema: F.Schema, params: baseline.PolicyParams | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's baseline at every decision of a log: goal weight (context w_<goal>) x the
    template's smoothed act rate within the patient's groups (context g_<group>), counted
    over the log's nudges before the decision's (UTC) day, as the engine refreshes it nightly
    and the simulator's BaselinePolicy does. On a log of the baseline (or of a mixture that
    contains it) this is exactly the baseline that ran: every patient's nudges are in it. A
    log of a sample of patients would give noisier popularity than the engine saw."""
    params = params or baseline.PolicyParams()
    n, m = len(log), max(len(log.actions), 1)
    target_avail, target_none = np.zeros(len(log.avail)), np.ones(n)
    if n == 0:
        return target_avail, target_none
    day = np.floor(log.time).astype(np.int64)
    day -= day.min()
    days = int(day.max()) + 1
    member = _context_matrix(log, [f"g_{g}" for g in schema.groups])
    weights = _context_matrix(log, [f"w_{g}" for g in F.GOALS])
    schema_index = schema.index_of(log.actions)
    goal = np.where(
        schema_index >= 0, np.asarray(schema.action_goal, dtype=np.int64)[schema_index], -1
    )
    sends = np.flatnonzero(log.action >= 0)
    acted = np.nan_to_num(log.acted[sends], nan=0.0)
    k = member.shape[1]
    sent_group, acted_group = np.zeros((days, k, m)), np.zeros((days, k, m))
    send_row, group = np.nonzero(member[sends] > 0)
    where = (day[sends][send_row], group, log.action[sends][send_row])
    np.add.at(sent_group, where, 1.0)
    np.add.at(acted_group, where, acted[send_row])
    sent_all, acted_all = np.zeros((days, m)), np.zeros((days, m))
    np.add.at(sent_all, (day[sends], log.action[sends]), 1.0)
    np.add.at(acted_all, (day[sends], log.action[sends]), acted)
    # Counts strictly before each day.
    before = [np.cumsum(c, axis=0) - c for c in (sent_group, acted_group, sent_all, acted_all)]
    for d in np.unique(day):
        rows = np.flatnonzero(day == d)
        rate = baseline.smoothed_rate(before[1][d], before[0][d])  # (K, m)
        overall = baseline.smoothed_rate(before[3][d], before[2][d])  # (m,)
        count = member[rows].sum(axis=1, keepdims=True)
        popularity = np.where(
            count > 0, member[rows] @ rate / np.where(count > 0, count, 1.0), overall[None, :]
        )
        at = pair_positions(log, rows)
        row = np.repeat(np.arange(len(rows)), np.diff(log.offsets)[rows])
        column = log.avail[at]
        pair_goal = goal[column]
        pair_weight = np.where(pair_goal >= 0, weights[rows[row], np.maximum(pair_goal, 0)], 0.0)
        scores, mask = np.zeros((len(rows), m)), np.zeros((len(rows), m), dtype=bool)
        scores[row, column] = pair_weight * popularity[row, column]
        mask[row, column] = True
        probs = baseline.probabilities(scores, mask, params=params)
        target_avail[at] = probs[row, column]
        target_none[rows] = probs[:, m]
    return target_avail, target_none


def _context_matrix(log: DecisionLog, names: Sequence[str]) -> np.ndarray:
    """(n, len(names)) numeric context columns; missing or non-numeric columns are 0."""
    columns = []
    for name in names:
        column = log.context.get(name)
        if column is None or column.dtype == object:
            columns.append(np.zeros(len(log)))
        else:
            columns.append(np.nan_to_num(column.astype(float), nan=0.0))
    return np.column_stack(columns) if columns else np.zeros((len(log), 0))


def schema_for_log(log: DecisionLog, templates_path: Path = TEMPLATES_PATH) -> F.Schema:
    """The schema for a log evaluated without a model: the catalogue's templates and the
    groups the log's context names (g_<group>)."""
    templates = json.loads(Path(templates_path).read_text())
    groups = sorted(name[2:] for name in log.context if name.startswith("g_"))
    return F.Schema.from_templates(
        groups,
        [
            {
                "key": f"{t['slug']}@{t['version']}",
                "goal": t["goal"],
                "category": t["category"],
                "intensity": t["intensity"],
            }
            for t in templates
        ],
    )


# The reward model ---------------------------------------------------------------------------


@dataclass
class RewardModel:
    """q(x, a), the expected logged reward of a pair, and q(x, none). `none` is None when the
    no-nudge decisions it was fitted on all earned 0 (in our logs no nudge earns nothing by
    definition): q(x, none) is then 0."""

    nudge: lgb.Booster | float
    none: lgb.Booster | float | None

    def __call__(
        self, pair_features: np.ndarray, none_features: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(q of the pairs, q of no nudge for the decisions) from their features."""
        return _predict(self.nudge, pair_features), (
            np.zeros(len(none_features))
            if self.none is None
            else _predict(self.none, none_features)
        )


def _predict(model: lgb.Booster | float, features: np.ndarray) -> np.ndarray:
    if isinstance(model, lgb.Booster):
        if not len(features):
            return np.zeros(0)
        return model.predict(features)  # type: ignore[return-value]  # LightGBM: dense here
    return np.full(len(features), float(model))


def reward_model(
    log: DecisionLog,
    schema: F.Schema,
    *,
    train_rows: np.ndarray,
    seed: int,
    features: LogFeatures | None = None,
    threads: int = 2,
) -> RewardModel:
    """LightGBM regression of the logged reward on the features of the logged (decision,
    action) pairs of the decisions `train_rows`; boosting stops early on a tenth of their
    patients held out. The no-nudge decisions get their own model unless their rewards are
    all 0."""
    if features is None or features.schema != schema:
        features = log_pair_features(log, schema)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    known = train_rows[np.isfinite(log.reward[train_rows])]
    logged = ope.logged_action_index(log)
    nudged, quiet = known[logged[known] >= 0], known[logged[known] < 0]
    nudge = _regression(
        features.pairs[logged[nudged]],
        log.reward[nudged],
        log.patients[nudged],
        schema,
        seed,
        threads,
    )
    none: lgb.Booster | float | None = None
    if np.any(log.reward[quiet] != 0):
        none = _regression(
            features.none[quiet], log.reward[quiet], log.patients[quiet], schema, seed, threads
        )
    return RewardModel(nudge=nudge, none=none)


def _regression(
    x: np.ndarray,
    y: np.ndarray,
    patients: np.ndarray,
    schema: F.Schema,
    seed: int,
    threads: int = 2,
) -> lgb.Booster | float:
    if len(y) < 200:  # too few to learn from: the mean
        return float(y.mean()) if len(y) else 0.0
    codes = np.unique(patients.astype(str), return_inverse=True)[1].reshape(-1)
    held_patients = np.random.default_rng([seed, 13]).random(codes.max() + 1) < REWARD_VALIDATION
    held = held_patients[codes]
    if held.all() or not held.any():
        held = np.arange(len(y)) % 10 == 0
    names = schema.names
    categorical = [names.index(c) for c in F.CATEGORICAL]
    train_set = lgb.Dataset(
        x[~held], y[~held], feature_name=names, categorical_feature=categorical,
        free_raw_data=False,
    )  # fmt: skip
    valid_set = lgb.Dataset(x[held], y[held], reference=train_set)
    options = {**REWARD_PARAMS, "seed": seed, "num_threads": threads, "deterministic": True}
    return lgb.train(
        options,
        train_set,
        REWARD_ROUNDS,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(REWARD_EARLY_STOP, verbose=False)],
    )


# Cross-fitting by patient -------------------------------------------------------------------


def patient_folds(patients: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """(n,) the fold 0..k-1 of each decision: patients are shuffled and dealt round-robin, so
    all of a patient's decisions share a fold and folds differ in size by at most one
    patient."""
    if k < 2:
        raise PolicyError("cross-fitting needs at least 2 folds")
    codes = np.unique(patients.astype(str), return_inverse=True)[1].reshape(-1)
    count = int(codes.max()) + 1 if len(codes) else 0
    if count < k:
        raise PolicyError(f"cross-fitting with {k} folds needs at least {k} patients")
    order = np.random.default_rng([seed, 17]).permutation(count)
    fold_of_patient = np.empty(count, dtype=np.int64)
    fold_of_patient[order] = np.arange(count) % k
    return fold_of_patient[codes]


@dataclass
class CrossFit:
    """Target probabilities and reward-model values for the whole log, each decision's from
    models fitted without its patient (`fold`); `versions` names the policy model per fold."""

    fold: np.ndarray
    target_avail: np.ndarray
    target_none: np.ndarray
    q_avail: np.ndarray
    q_none: np.ndarray
    versions: list[str] = field(default_factory=list)


def cross_fit(
    log: DecisionLog,
    schema: F.Schema,
    k: int,
    *,
    policy: str,
    bundle: recommender.ModelBundle | None = None,
    seed: int = 1,
    features: LogFeatures | None = None,
    on_fold: Callable[[int], None] | None = None,
) -> CrossFit:
    """K folds of patients; for each, the reward model (and, for a model policy without
    `bundle`, the policy model with recommender.train) is fitted on the other K-1 folds and
    predicts the fold. A policy that needs no training (or a given bundle) is computed on
    the whole log."""
    check_log_policy(policy, log, schema)
    fold = patient_folds(log.patients, k, seed=seed)
    if features is None or features.schema != schema:
        features = log_pair_features(log, schema)
    out = CrossFit(
        fold=fold,
        target_avail=np.zeros(len(log.avail)),
        target_none=np.zeros(len(log)),
        q_avail=np.zeros(len(log.avail)),
        q_none=np.zeros(len(log)),
    )
    train_per_fold = needs_model(policy) and bundle is None
    if not train_per_fold:
        out.target_avail, out.target_none = log_policy(
            policy, log, schema, bundle, features=features
        )
    for f in range(k):
        if on_fold is not None:
            on_fold(f)
        held, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        at = pair_positions(log, held)
        q = reward_model(log, schema, train_rows=train, seed=seed + f, features=features)
        out.q_avail[at], out.q_none[held] = q(features.pairs[at], features.none[held])
        if train_per_fold:
            model = recommender.train(
                log.select(train), schema, version=f"cross-fit-{f + 1}-of-{k}", seed=seed + f
            ).bundle
            out.versions.append(model.version)
            out.target_avail[at], out.target_none[held] = model_policy_on_log(
                model,
                log,
                features.pairs,
                (_sparse_predict(model, features.pairs, at, len(log.avail))),
                held,
                engagement=policy == "engagement",
            )
    return out


def _sparse_predict(
    model: recommender.ModelBundle, features: np.ndarray, at: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions aligned with log.avail, computed only at the positions `at`."""
    p_act, effect = np.zeros(size), np.zeros(size)
    p_act[at], effect[at] = model.predict(features[at])
    return p_act, effect


# Evaluating a policy on a log ---------------------------------------------------------------


def evaluate_log(
    log: DecisionLog,
    policy: str,
    *,
    schema: F.Schema,
    bundle: recommender.ModelBundle | None = None,
    folds: int | None = None,
    n_boot: int = 500,
    seed: int = 1,
) -> dict[str, Any]:
    """Off-policy evaluation of `policy` on `log`: its probabilities, the reward model
    (cross-fitted by patient with `folds`, else fitted on the whole log, in sample) and
    ope.evaluate, as a JSON-ready summary."""
    check_log_policy(policy, log, schema)
    if folds is not None and folds < 2:
        raise PolicyError("--cross-fit needs K >= 2")
    if needs_model(policy) and bundle is None and folds is None:
        raise PolicyError(f"policy {policy!r} needs a model (--model) or --cross-fit K")
    if not np.isfinite(log.reward).any():
        raise PolicyError("no decision of the log has a reward")
    features = log_pair_features(log, schema)
    if folds is not None:
        fit = cross_fit(
            log, schema, folds, policy=policy, bundle=bundle, seed=seed, features=features
        )
        target, q = (fit.target_avail, fit.target_none), (fit.q_avail, fit.q_none)
        how = f"cross-fitted by patient, {folds} folds"
    else:
        target = log_policy(policy, log, schema, bundle, features=features)
        model = reward_model(
            log, schema, train_rows=np.arange(len(log)), seed=seed, features=features
        )
        q = model(features.pairs, features.none)
        how = "fitted on the whole log (in sample)"
    report = ope.evaluate(
        log=log,
        target_avail=target[0],
        target_none=target[1],
        q_avail=q[0],
        q_none=q[1],
        n_boot=n_boot,
        seed=seed,
    )
    summary = report_summary(report)
    model_note = None
    if needs_model(policy):
        model_note = bundle.version if bundle is not None else "trained per fold (cross-fit)"
    return {"policy": policy, **summary, "reward_model": how, "model": model_note}


def report_summary(report: ope.Report) -> dict[str, Any]:
    return {
        "n": report.n,
        "dropped": report.dropped,
        "estimates": {
            name: {"value": _num(i.value), "low": _num(i.low), "high": _num(i.high)}
            for name, i in report.estimates.items()
        },
        "ess": _num(report.ess),
        "max_weight": _num(report.max_weight),
        "true_value": _num(report.true_value),
    }


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


# Runs in the simulator ----------------------------------------------------------------------


@dataclass
class Run:
    """A simulated run: its SimLog and, when recorded, its decision-log records."""

    log: sim.SimLog
    records: list[dict[str, Any]] | None


def run_policy(
    setup: SimSetup,
    policy: str,
    *,
    days: int,
    seed: int,
    bundle: recommender.ModelBundle | None = None,
    record: bool = False,
    params: agenda.AgendaParams | None = None,
) -> Run:
    world, keys, schema, allowed = setup
    recorder = simlog.Recorder() if record else None
    log = sim.simulate(
        world,
        sim_policy(policy, world, keys, schema, bundle, params=params),
        days=days,
        seed=seed,
        allowed=allowed,
        on_step=recorder,
    )
    records = None
    if recorder is not None:
        records = simlog.log_records(world, recorder, log, keys=keys, seed=seed)
    return Run(log, records)


def run_summary(log: sim.SimLog, *, days: int, actions: int) -> dict[str, float]:
    """Whole-horizon value, one-step value (mean policy_value), retention over the run's days
    (the share of patients still engaged at the end), share of decisions nudged."""
    action = log.concat("action")
    engaged_days = log.engaged_days
    assert engaged_days is not None  # set by sim.simulate at the end of a run
    return {
        "horizon_value": float(log.horizon_value),
        "one_step_value": float(log.concat("policy_value").mean()) if len(action) else 0.0,
        "retention": float(np.mean(engaged_days >= days)),
        "nudged_share": float(np.mean(action < actions)) if len(action) else 0.0,
        "decisions": int(len(action)),
    }


def train_on_baseline(setup: SimSetup, *, days: int, seed: int) -> recommender.TrainingResult:
    """The recommender trained on the decision log of a baseline run of run seed `seed`."""
    run = run_policy(setup, "baseline", days=days, seed=seed, record=True)
    assert run.records is not None
    return recommender.train(
        from_records(run.records), setup.schema, version=f"sim-baseline-seed-{seed}"
    )


# The study ----------------------------------------------------------------------------------

ONLINE = ("oracle", "agenda", "engagement", "baseline", "never")
OPE_TARGETS = ("current", "engagement", "baseline")
OPE_ESTIMATORS = ("snips", "dr")
TRAIN_OFFSET, LOGGING_OFFSET = 1000, 2000  # run seeds of a study seed's other runs


@dataclass(frozen=True)
class StudyConfig:
    """World seed 1 is the demo cohort's world (docs/simulator.md); each study seed s runs
    the baseline for training on run seed s + 1000, the policies on run seed s, and the
    logging policy for off-policy evaluation on run seed s + 2000."""

    seeds: tuple[int, ...] = (4, 5, 6, 7, 8)
    patients: int = 2000
    days: int = 90
    world_seed: int = 1
    explore: float = 0.2
    folds: int = 3
    bootstrap: int = 500
    params: agenda.AgendaParams = field(default_factory=agenda.AgendaParams)


QUICK = StudyConfig(seeds=(4, 5), patients=300, days=30, folds=2, bootstrap=200)


def study(config: StudyConfig, *, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The protocol of docs/evaluation.md; returns the figures per seed and their summary."""
    setup = world_from_cohort(config.patients, config.world_seed)
    per_seed = [study_seed(setup, seed, config, say) for seed in config.seeds]
    return {
        "config": {**dataclasses.asdict(config), "params": config.params.as_dict()},
        "seeds": per_seed,
        "summary": study_summary(per_seed),
    }


def study_seed(
    setup: SimSetup, seed: int, config: StudyConfig, say: Callable[[str], None]
) -> dict[str, Any]:
    days, m = config.days, len(setup.keys)
    say(f"seed {seed}: training on a baseline run (run seed {seed + TRAIN_OFFSET})")
    training = train_on_baseline(setup, days=days, seed=seed + TRAIN_OFFSET)
    bundle = dataclasses.replace(training.bundle, params=config.params)
    online = {}
    for name in ONLINE:
        say(f"seed {seed}: running {name}")
        run = run_policy(setup, name, days=days, seed=seed, bundle=bundle)
        online[name] = run_summary(run.log, days=days, actions=m)
    say(f"seed {seed}: logging with explore:{config.explore} (run seed {seed + LOGGING_OFFSET})")
    logging_run = run_policy(
        setup, f"explore:{config.explore}", days=days, seed=seed + LOGGING_OFFSET, record=True
    )
    assert logging_run.records is not None
    log = from_records(logging_run.records)
    del logging_run
    ope_figures = off_policy(log, setup.schema, bundle, config, seed, say)
    return {
        "seed": seed,
        "model": {**training.metrics, "version": bundle.version},
        "online": online,
        "ope": ope_figures,
    }


def off_policy(
    log: DecisionLog,
    schema: F.Schema,
    bundle: recommender.ModelBundle,
    config: StudyConfig,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """SNIPS and DR of each target on the logging run's log against its true value. The
    policy model is the one trained on the training run (no overlap with this log); the
    reward model is cross-fitted by patient on this log."""
    say(f"seed {seed}: features of {len(log.avail)} pairs of {len(log)} logged decisions")
    features = log_pair_features(log, schema)
    predictions = bundle.predict(features.pairs)
    fold = patient_folds(log.patients, config.folds, seed=seed)
    q_avail, q_none = np.zeros(len(log.avail)), np.zeros(len(log))
    for f in range(config.folds):
        say(f"seed {seed}: reward model, fold {f + 1} of {config.folds}")
        held = np.flatnonzero(fold == f)
        at = pair_positions(log, held)
        q = reward_model(
            log, schema, train_rows=np.flatnonzero(fold != f), seed=seed + f, features=features
        )
        q_avail[at], q_none[held] = q(features.pairs[at], features.none[held])
    out: dict[str, Any] = {"decisions": len(log), "pairs": len(log.avail)}
    for target in OPE_TARGETS:
        target_avail, target_none = log_policy(
            target, log, schema, bundle, features=features, predictions=predictions
        )
        report = ope.evaluate(
            log=log,
            target_avail=target_avail,
            target_none=target_none,
            q_avail=q_avail,
            q_none=q_none,
            n_boot=config.bootstrap,
            seed=seed,
        )
        out[target] = report_summary(report)
    return out


def _mean_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean over seeds and its 95% t-interval (the interval collapses with one seed)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": mean, "high": mean}
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def study_summary(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    online = {
        name: {
            metric: _mean_interval([s["online"][name][metric] for s in per_seed])
            for metric in ("horizon_value", "one_step_value", "retention", "nudged_share")
        }
        for name in ONLINE
    }

    def ratio(a: str, b: str, metric: str = "horizon_value") -> list[float]:
        return [s["online"][a][metric] / s["online"][b][metric] for s in per_seed]

    agenda_runs = {
        "of_oracle": _mean_interval(ratio("agenda", "oracle")),
        "of_baseline": _mean_interval(ratio("agenda", "baseline")),
        "of_engagement": _mean_interval(ratio("agenda", "engagement")),
        "min_of_oracle": min(ratio("agenda", "oracle")),
        "min_of_baseline": min(ratio("agenda", "baseline")),
        "beats_engagement_seeds": sum(
            s["online"]["agenda"]["horizon_value"] > s["online"]["engagement"]["horizon_value"]
            and s["online"]["agenda"]["one_step_value"]
            > s["online"]["engagement"]["one_step_value"]
            for s in per_seed
        ),
    }
    ope_summary: dict[str, Any] = {}
    for target in OPE_TARGETS:
        for estimator in OPE_ESTIMATORS:
            errors, covered = [], []
            for s in per_seed:
                figures = s["ope"][target]
                truth, est = figures["true_value"], figures["estimates"][estimator]
                errors.append(abs(est["value"] - truth) / abs(truth))
                covered.append(est["low"] <= truth <= est["high"])
            ope_summary[f"{target}/{estimator}"] = {
                "within_10pct": float(np.mean(np.asarray(errors) <= 0.10)),
                "covered": float(np.mean(covered)),
                "mean_abs_rel_error": float(np.mean(errors)),
                "max_abs_rel_error": float(np.max(errors)),
            }
    seeds = len(per_seed)
    targets = {
        "agenda >= 85% of oracle (whole horizon)": agenda_runs["of_oracle"]["mean"] >= 0.85,
        "agenda >= 1.25x baseline (whole horizon)": agenda_runs["of_baseline"]["mean"] >= 1.25,
        "agenda beats engagement on health value (every seed)": agenda_runs[
            "beats_engagement_seeds"
        ]
        == seeds,
        "SNIPS and DR within 10% in >= 80% of seeds": all(
            v["within_10pct"] >= 0.8 for v in ope_summary.values()
        ),
        "SNIPS and DR intervals contain the truth in >= 80% of seeds": all(
            v["covered"] >= 0.8 for v in ope_summary.values()
        ),
    }
    return {"online": online, "agenda": agenda_runs, "ope": ope_summary, "targets": targets}


# The report ---------------------------------------------------------------------------------


def _fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _cell(summary: dict[str, float], digits: int = 2, scale: float = 1.0) -> str:
    return (
        f"{_fmt(summary['mean'] * scale, digits)} "
        f"[{_fmt(summary['low'] * scale, digits)}, {_fmt(summary['high'] * scale, digits)}]"
    )


def study_markdown(result: dict[str, Any], *, command: str, elapsed_minutes: float) -> str:
    """docs/evaluation.md from the figures of `study`."""
    config, summary, seeds = result["config"], result["summary"], result["seeds"]
    lines = _protocol(config, command, elapsed_minutes)
    lines += [
        "## Results in the simulator",
        "",
        f"Mean over the {len(seeds)} seeds and its 95% t-interval. Whole-horizon value is the",
        "agenda-weighted area under the health curve per patient; one-step value the mean over",
        "decisions of the expected agenda-weighted health the policy's choice adds; retention",
        f"the share of patients still engaged after {config['days']} days.",
        "",
        "| policy | whole-horizon value | one-step value | retention | share of points nudged |",
        "|---|---|---|---|---|",
    ]
    for name in ONLINE:
        s = summary["online"][name]
        lines.append(
            f"| {name} | {_cell(s['horizon_value'])} | {_cell(s['one_step_value'], 4)} "
            f"| {_cell(s['retention'], 1, 100)}% | {_cell(s['nudged_share'], 1, 100)}% |"
        )
    a = summary["agenda"]
    lines += [
        "",
        f"- Agenda as a share of the oracle's whole-horizon value: {_cell(a['of_oracle'], 1, 100)}%"
        f" (lowest seed {a['min_of_oracle'] * 100:.1f}%).",
        f"- Agenda over baseline: {_cell(a['of_baseline'])}x (lowest seed "
        f"{a['min_of_baseline']:.2f}x).",
        f"- Agenda over engagement-only: {_cell(a['of_engagement'])}x; the agenda policy beats it "
        f"on both whole-horizon and one-step value in {a['beats_engagement_seeds']} of "
        f"{len(seeds)} seeds.",
        "",
        "Per seed, whole-horizon value:",
        "",
        "| seed | " + " | ".join(ONLINE) + " | agenda / oracle | agenda / baseline |",
        "|---" * (len(ONLINE) + 3) + "|",
    ]
    for s in seeds:
        o = s["online"]
        lines.append(
            f"| {s['seed']} | "
            + " | ".join(_fmt(o[n]["horizon_value"]) for n in ONLINE)
            + f" | {o['agenda']['horizon_value'] / o['oracle']['horizon_value'] * 100:.1f}%"
            + f" | {o['agenda']['horizon_value'] / o['baseline']['horizon_value']:.2f}x |"
        )
    lines.append("")
    lines += _ope_tables(seeds, summary)
    lines += _model_table(seeds)
    lines += ["## Targets", "", "| target | holds |", "|---|---|"]
    lines += [
        f"| {name} | {'yes' if held else 'NO'} |" for name, held in summary["targets"].items()
    ]
    lines.append("")
    return "\n".join(lines)


def _protocol(config: dict[str, Any], command: str, elapsed_minutes: float) -> list[str]:
    params = ", ".join(f"{k}={v}" for k, v in config["params"].items())
    seeds = ", ".join(str(s) for s in config["seeds"])
    return [
        "# Offline evaluation of the agenda policy",
        "",
        f"Generated by `{command}` ({elapsed_minutes:.0f} minutes); running it again rewrites",
        "this file. The code is `nudges/offline.py`; the simulator, whose parameters",
        "(`SimParams`) are fixed, is described in [simulator.md](simulator.md).",
        "",
        "## Protocol",
        "",
        f"- World: the synthetic demo cohort of {config['patients']:,} patients, world seed "
        f"{config['world_seed']}, all enrolled on day 0, {config['days']} days of two decision "
        "points; candidates are the templates on the patient's agenda that the shipped rule "
        "set allows (allow or allow-with-note; review and block excluded), not sent in the "
        "last 3 days.",
        f"- Seeds: {seeds}. For each seed s:",
        f"  1. the baseline runs on run seed s + {TRAIN_OFFSET} and its decision log trains the "
        "recommender (`recommender.train`: P(act) and effect models, time split);",
        "  2. on a fresh run seed s, the oracle, the agenda policy and the engagement-only policy "
        "(both on that model), the baseline and never run for the whole horizon;",
        f"  3. off-policy evaluation: a logging policy runs on run seed s + {LOGGING_OFFSET}: "
        f"`explore:{config['explore']}`, the baseline mixed with a uniform choice over the "
        f"candidates and no nudge with weight {config['explore']}. It differs from every target "
        "and gives every action a propensity of at least "
        f"{config['explore']} / (candidates + 1). On its log, SNIPS and DR (`nudges/ope.py`, "
        f"{config['bootstrap']} bootstrap resamples of patients) estimate the one-step value of "
        'the agenda policy ("current", the model of step 1), the engagement-only policy and '
        "the baseline (its popularity refreshed daily from the log), and are compared with the "
        "true value on the same decisions (`ope.Report.true_value`). DR's reward model is a "
        f"LightGBM regression cross-fitted by patient ({config['folds']} folds).",
        f"- Agenda parameters (`AgendaParams`, nudges/agenda.py, not tuned): {params}.",
        "- What OPE estimates is the one-step value at the decisions the logging policy "
        "reached; the simulator's one-step value above is at the decisions the target reached "
        "itself (other habituation, burden and retention), so the two need not agree.",
        "",
    ]


def _ope_tables(seeds: Sequence[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    lines = [
        "## Off-policy evaluation",
        "",
        "Per seed: the true one-step value of each target on the logged decisions, the SNIPS and",
        "DR estimates with their 95% intervals and relative errors, and the importance",
        "weights' effective sample size (of all decisions) and largest value.",
        "",
        "| seed | target | true | SNIPS [95%] | error | DR [95%] | error | ESS | max weight |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in seeds:
        for target in OPE_TARGETS:
            f = s["ope"][target]
            truth = f["true_value"]
            cells = []
            for estimator in OPE_ESTIMATORS:
                e = f["estimates"][estimator]
                inside = "" if e["low"] <= truth <= e["high"] else " (misses)"
                cells.append(
                    f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]{inside} | "
                    f"{(e['value'] - truth) / truth * 100:+.1f}%"
                )
            lines.append(
                f"| {s['seed']} | {target} | {truth:.4f} | {' | '.join(cells)} | "
                f"{f['ess']:,.0f} of {f['n']:,} | {f['max_weight']:.1f} |"
            )
    lines += [
        "",
        "Summary over seeds:",
        "",
        "| target / estimator | within 10% | interval contains truth | mean abs error | max |",
        "|---|---|---|---|---|",
    ]
    for name, v in summary["ope"].items():
        lines.append(
            f"| {name} | {v['within_10pct'] * 100:.0f}% | {v['covered'] * 100:.0f}% | "
            f"{v['mean_abs_rel_error'] * 100:.1f}% | {v['max_abs_rel_error'] * 100:.1f}% |"
        )
    online = np.mean([s["online"]["agenda"]["one_step_value"] for s in seeds])
    logged = np.mean([s["ope"]["current"]["true_value"] for s in seeds])
    lines += [
        "",
        "OPE answers what a target would earn at the decisions the logging policy reached,",
        "one step at a time, not what deploying it would earn. The agenda policy's true",
        f"one-step value at the logged decisions ({logged:.3f}) is {logged / online:.2f}x its",
        f"one-step value when it runs itself ({online:.3f}): the patients it meets there carry",
        "the logging policy's history (habituation and burden), not its own. The simulator's",
        "whole-horizon figures above are the ones that rank policies.",
        "",
    ]
    return lines


def _model_table(seeds: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "## The models",
        "",
        "Trained per seed on the baseline run's log (validation on the last fifth of the time).",
        "",
        "| seed | P(act) AUC | log loss | calibration error | effect corr | NDCG@5 | train rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in seeds:
        m = s["model"]
        lines.append(
            f"| {s['seed']} | {m['act_auc']:.3f} | {m['act_log_loss']:.3f} | "
            f"{m['act_calibration_error']:.4f} | {m['effect_corr']:.3f} | "
            f"{m['ndcg_at_5']:.3f} | {m['train_rows']:,} |"
        )
    lines.append("")
    return lines
