"""Pure: the baseline policy. Score = goal weight x template popularity within the patient's
medical groups; the probabilities are proportional to the score, with a fixed share for
"no nudge", clipped to a floor and a ceiling so every allowed action keeps a known, positive
propensity. It is the cold-start fallback, the first champion and the control arm.

Everything works on a batch: rows are decision points, columns are templates, and a boolean
mask says which templates are candidates for which row. One row is a batch of one."""

from dataclasses import dataclass

import numpy as np

POLICY_NAME = "baseline"
POLICY_VERSION = "baseline-1"

# Popularity is an act rate smoothed towards a prior, so a template sent rarely is neither
# 0 nor 1 (the nightly aggregate and the simulator use the same formula).
PRIOR_RATE = 0.3
PRIOR_STRENGTH = 10.0


@dataclass(frozen=True)
class PolicyParams:
    no_nudge_share: float = 0.15
    floor: float = 0.01
    ceiling: float = 0.9


def smoothed_rate(acted: np.ndarray | float, delivered: np.ndarray | float) -> np.ndarray:
    return (np.asarray(acted) + PRIOR_RATE * PRIOR_STRENGTH) / (
        np.asarray(delivered) + PRIOR_STRENGTH
    )


def clip_rows(p: np.ndarray, valid: np.ndarray, *, floor: float, ceiling: float) -> np.ndarray:
    """Project each row of p onto {floor <= p_i <= ceiling over its valid entries, sum = 1},
    invalid entries 0, by water-filling: pin entries outside the bounds, rescale the free ones
    over the remaining mass, repeat. A row's bounds are relaxed when they cannot hold for its
    number of valid entries (floor <= 1/k <= ceiling)."""
    p = np.where(valid, p, 0.0).astype(float)
    k = valid.sum(axis=1, keepdims=True).clip(min=1)
    lo = np.minimum(floor, 1.0 / k)
    hi = np.maximum(ceiling, 1.0 / k)
    total = p.sum(axis=1, keepdims=True)
    q = np.where(total > 0, p / np.where(total > 0, total, 1.0), valid / k)
    pinned = ~valid
    for _ in range(p.shape[1] + 1):
        low = ~pinned & (q < lo)
        high = ~pinned & (q > hi)
        if not (low.any() or high.any()):
            break
        q = np.where(low, lo, np.where(high, hi, q))
        pinned = pinned | low | high
        free = ~pinned
        free_mass = 1.0 - np.where(pinned & valid, q, 0.0).sum(axis=1, keepdims=True)
        free_sum = np.where(free, q, 0.0).sum(axis=1, keepdims=True)
        n_free = free.sum(axis=1, keepdims=True).clip(min=1)
        scaled = np.where(free_sum > 0, q / np.where(free_sum > 0, free_sum, 1.0), 1.0 / n_free)
        q = np.where(free, scaled * free_mass, q)
    q = np.where(valid, q, 0.0)
    return q / q.sum(axis=1, keepdims=True)


def probabilities(
    scores: np.ndarray, mask: np.ndarray, *, params: PolicyParams = PolicyParams()
) -> np.ndarray:
    """scores and mask are (n, m); the result is (n, m + 1), the last column "no nudge".
    Candidates get probability proportional to their score within 1 - no_nudge_share; a row
    with no candidate, or no positive score, does not nudge (probability 1 on the last column).
    """
    n, m = scores.shape
    scores = np.where(mask, np.clip(scores, 0.0, None), 0.0)
    total = scores.sum(axis=1, keepdims=True)
    nudgeable = total[:, 0] > 0
    share = (1.0 - params.no_nudge_share) * scores / np.where(total > 0, total, 1.0)
    p = np.concatenate([share, np.full((n, 1), params.no_nudge_share)], axis=1)
    valid = np.concatenate([mask & (scores > 0), np.ones((n, 1), dtype=bool)], axis=1)
    out = np.zeros((n, m + 1))
    out[:, m] = 1.0
    if nudgeable.any():
        out[nudgeable] = clip_rows(
            p[nudgeable], valid[nudgeable], floor=params.floor, ceiling=params.ceiling
        )
    return out


def scores(agenda_weights: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Goal weight x popularity, both (n, m): the weight of each template's goal in the
    patient's agenda, and the template's popularity within the patient's groups."""
    return agenda_weights * popularity


def draw(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The column chosen in each row of p by the uniform draw u in [0, 1) of that row."""
    cumulative = np.cumsum(p, axis=1)
    index = (cumulative <= u[:, None]).sum(axis=1)
    # Rounding may leave the last cumulative value a hair under 1: never pick past the end,
    # and never pick a column of probability 0.
    index = np.minimum(index, p.shape[1] - 1)
    zero = p[np.arange(len(index)), index] <= 0
    if zero.any():
        index[zero] = p.shape[1] - 1 - np.argmax((p[zero] > 0)[:, ::-1], axis=1)
    return index
