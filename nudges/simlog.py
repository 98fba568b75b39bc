"""Pure: the simulator seen through the engine's eyes. A simulated run becomes a decision log
(docs/decision-log.md) with the true expected reward of every action, and a learned policy
runs inside the simulator on the same features it would get from a log or from the engine."""

import datetime as dt
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nudges import features as F
from nudges import simulator as sim
from nudges.decision_log import NONE

BASE = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday; simulated day 0
DELTA_BEFORE, DELTA_AFTER = 3, 3  # days of measures before (incl. the day) and after


def decision_time(day: int, slot: int) -> float:
    return BASE.timestamp() / 86400.0 + day + sim.SLOT_HOURS[slot] / 24.0


def health_delta(
    measures: np.ndarray, patient: np.ndarray, goal: np.ndarray, day: np.ndarray
) -> np.ndarray:
    """The observed change of a goal's measure around a decision: the mean over the three
    days after it minus the mean over the decision day and the two before (NaN when the
    patient was not measured then). measures is (days, patients, goals)."""
    days = measures.shape[0]
    out = np.full(len(patient), np.nan)
    after = np.stack(
        [measures[np.minimum(day + k, days - 1), patient, goal] for k in range(1, DELTA_AFTER + 1)],
        axis=1,
    )
    before = np.stack(
        [measures[np.maximum(day - k, 0), patient, goal] for k in range(DELTA_BEFORE)], axis=1
    )
    complete = (day + DELTA_AFTER < days) & (day - DELTA_BEFORE + 1 >= 0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN window is NaN by design
        value = np.nanmean(after, axis=1) - np.nanmean(before, axis=1)
    out[complete] = value[complete]
    return out


@dataclass
class Recorder:
    """Keeps each step of a run (streamed from simulate's on_step) for writing the log."""

    steps: list[sim.Step] = field(default_factory=list)

    def __call__(self, step: sim.Step) -> None:
        self.steps.append(step)


def log_records(
    world: sim.World,
    recorder: Recorder,
    log: sim.SimLog,
    *,
    keys: Sequence[str],
    seed: int,
) -> list[dict[str, Any]]:
    """The decision log of a run: one record per decision point, with the outcome (acted,
    the agenda-weighted health the action added, the observed change of its goal's measure)
    and the true expected reward of every available action."""
    cohort, m = world.cohort, len(keys)
    measures = (
        np.stack(log.measures) if log.measures else np.zeros((0, len(cohort), len(sim.GOALS)))
    )
    group_names = cohort.group_names
    records: list[dict[str, Any]] = []
    for step in recorder.steps:
        obs = step.obs
        values, reward = step.values, step.reward
        assert values is not None and reward is not None  # the simulator sets both
        when = BASE + dt.timedelta(days=obs.day, hours=sim.SLOT_HOURS[obs.slot])
        stamp = when.isoformat().replace("+00:00", "Z")
        chosen = np.minimum(step.action, m - 1)
        goals = world.catalogue.goal[chosen]
        deltas = health_delta(measures, obs.rows, goals, np.full(len(obs.rows), obs.day))
        for k, i in enumerate(obs.rows):
            columns: list[int] = np.flatnonzero(obs.mask[k]).tolist()
            action = int(step.action[k])
            context: dict[str, Any] = {
                f"g_{g}": int(cohort.groups[i, j]) for j, g in enumerate(group_names)
            }
            context.update({f"w_{g}": float(cohort.weights[i, j]) for j, g in enumerate(sim.GOALS)})
            context.update(
                age_band=sim.AGE_BANDS[cohort.age_band[i]],
                sex=sim.SEXES[cohort.sex[i]],
                tenure_days=round(
                    obs.day + sim.SLOT_HOURS[obs.slot] / 24 - float(obs.history.joined[i]), 4
                ),
                local_hour=int(sim.SLOT_HOURS[obs.slot]),
                weekday=obs.weekday,
                trigger="slot",
            )
            probs = step.probabilities[k]
            distribution = {keys[c]: float(probs[c]) for c in columns if probs[c] > 0}
            distribution[NONE] = float(probs[m])
            true_values = {keys[c]: float(values[k, c]) for c in columns}
            true_values[NONE] = 0.0
            outcome: dict[str, Any] = {
                "reward": float(reward[k]),
                "acted": bool(step.acted[k]),
            }
            if action < m and np.isfinite(deltas[k]):
                outcome["health_delta"] = float(deltas[k])
            records.append(
                {
                    "patient": f"sim-{seed}-{i:06d}",
                    "time": stamp,
                    "available": [keys[c] for c in columns],
                    "context": context,
                    "action": keys[action] if action < m else None,
                    "propensity": float(probs[action]),
                    "distribution": distribution,
                    "outcome": outcome,
                    "true_values": true_values,
                }
            )
    return records


# A learned policy inside the simulator -----------------------------------------------------


def sim_features(
    schema: F.Schema, obs: sim.Observation, keys: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every candidate pair of a step, from the simulator's observable state.
    Returns (features, row index, template column) of the pairs."""
    history, cohort, rows = obs.history, obs.cohort, obs.rows
    row, column = np.nonzero(obs.mask)
    n = len(rows)
    group_index = [
        cohort.group_names.index(g) if g in cohort.group_names else -1 for g in schema.groups
    ]
    groups = (
        np.column_stack([cohort.groups[rows, j] if j >= 0 else np.zeros(n) for j in group_index])
        if schema.groups
        else np.zeros((n, 0))
    )
    context = F.Context(
        groups=groups.astype(float),
        weights=cohort.weights[rows],
        age_band=cohort.age_band[rows],
        sex=cohort.sex[rows],
        tenure_days=history.time - history.joined[rows],
        local_hour=np.full(n, int(sim.SLOT_HOURS[obs.slot])),
        weekday=np.full(n, obs.weekday),
        trigger=np.zeros(n, dtype=int),  # "slot"
    )
    d = history.decayed
    patient = F.PatientHistory(
        sent_3d=d["sent_3d"][rows],
        acts_7d=d["acts_7d"][rows],
        sent_14d=d["sent_14d"][rows],
        acts_14d=d["acts_14d"][rows],
    )
    patients = rows[row]
    category = obs.catalogue.category[column]
    pair = F.PairHistory(
        sent_7d=d["pair_sent_7d"][patients, column],
        acted_14d=d["pair_acted_14d"][patients, column],
        days_since=history.time - history.last_sent_time[patients, column],
        days_since_goal=history.time - history.last_goal_time[patients, obs.catalogue.goal[column]],
        category_sent_14d=d["category_sent_14d"][patients, category],
        category_acts_14d=d["category_acts_14d"][patients, category],
    )
    action = schema.index_of([keys[c] for c in range(len(keys))])[column]
    return F.assemble(schema, context, patient, row, action, pair), row, column


def learned_policy(
    schema: F.Schema,
    keys: Sequence[str],
    probabilities: Callable[[np.ndarray, np.ndarray, np.ndarray, sim.Observation], np.ndarray],
) -> sim.Policy:
    """A simulator policy from a function (features, rows, columns, obs) -> probabilities
    (len(obs.rows), m + 1), e.g. the agenda policy of a trained model."""

    def policy(obs: sim.Observation) -> np.ndarray:
        features, row, column = sim_features(schema, obs, keys)
        return probabilities(features, row, column, obs)

    return policy
