"""Pure: how each care-plan goal's health shows in the app's events, and the observed change of
that measure around a decision, in standard units with higher always better (the
`health_delta` of a decision log's outcome, docs/decision-log.md). The window is the
simulator's (nudges.simlog.health_delta): the mean over the three days after the decision's
day minus the mean over that day and the two before, days being the patient's local days."""

import warnings
from dataclasses import dataclass

import numpy as np

from nudges.simlog import DELTA_AFTER, DELTA_BEFORE


@dataclass(frozen=True)
class Measure:
    kind: str  # nudges.models.EventKind
    scale: float  # one standard unit, in the event's units; negative: lower is better


# The demo's simulated history writes its measures with these kinds and scales
# (demo.seeding.MEASURES; a test keeps the two in step).
MEASURES: dict[str, Measure] = {
    "activity": Measure("steps", 1200.0),
    "medication": Measure("medication_taken", 0.08),
    "sleep": Measure("sleep_hours", 0.35),
    "diet": Measure("weight_kg", -0.5),
    "mood": Measure("mood_score", 0.8),
    "hydration": Measure("water_ml", 250.0),
    "monitoring": Measure("systolic_bp", -3.0),
}
GOALS = tuple(MEASURES)
_DAY_BITS = 21  # local days since 1970 are stored offset by 2**20, so ±2,800 years fit


@dataclass(frozen=True)
class DailyMeans:
    """The mean of each (patient, goal, local day) that has a measurement, keyed and sorted
    for lookup."""

    keys: np.ndarray  # (k,) int64, sorted
    means: np.ndarray  # (k,)


def _key(patient: np.ndarray, goal: np.ndarray, day: np.ndarray) -> np.ndarray:
    block = patient.astype(np.int64) * len(GOALS) + goal.astype(np.int64)
    return (block << _DAY_BITS) | (day.astype(np.int64) + (1 << (_DAY_BITS - 1)))


def daily_means(
    patient: np.ndarray, goal: np.ndarray, day: np.ndarray, value: np.ndarray
) -> DailyMeans:
    """Events as arrays (patient number, goal index into GOALS, local day number, value)."""
    keys, inverse = np.unique(_key(patient, goal, day), return_inverse=True)
    sums = np.bincount(inverse, weights=value, minlength=len(keys))
    counts = np.bincount(inverse, minlength=len(keys))
    return DailyMeans(keys=keys, means=sums / np.maximum(counts, 1))


def health_delta(
    means: DailyMeans, patient: np.ndarray, goal: np.ndarray, day: np.ndarray
) -> np.ndarray:
    """Per decision (patient number, goal index, local day of the decision): the mean of the
    goal's daily means over the DELTA_AFTER days after `day` minus their mean over `day` and
    the DELTA_BEFORE - 1 days before, divided by the measure's scale. NaN where either side
    has no measurement. Whether the days after are over yet is the caller's to check."""
    base = _key(patient, goal, day)
    offsets = np.arange(1 - DELTA_BEFORE, DELTA_AFTER + 1)
    wanted = base[:, None] + offsets[None, :]
    at = np.minimum(np.searchsorted(means.keys, wanted), max(len(means.keys) - 1, 0))
    values = np.full(wanted.shape, np.nan)
    if len(means.keys):
        found = means.keys[at] == wanted
        values[found] = means.means[at[found]]
    with warnings.catch_warnings():
        # nanmean warns on an all-NaN window, which here simply means "unknown".
        warnings.simplefilter("ignore", RuntimeWarning)
        change = np.nanmean(values[:, DELTA_BEFORE:], axis=1) - np.nanmean(
            values[:, :DELTA_BEFORE], axis=1
        )
    scale = np.array([m.scale for m in MEASURES.values()])
    return change / scale[goal.astype(np.int64)]
