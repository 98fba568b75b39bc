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
    """Scale each row of p proportionally and clip it to [floor, ceiling] over its valid
    entries so that it sums to 1; invalid entries are 0. The clipped sum is piecewise linear
    and increasing in the scale, so the scale is solved exactly between the two breakpoints
    that bracket 1. A row's bounds are relaxed when they cannot hold for its number of valid
    entries k (floor <= 1/k <= ceiling); a row already within its bounds after normalising is
    left as it is."""
    p = np.where(valid, np.maximum(p, 0.0), 0.0).astype(float)
    k = valid.sum(axis=1, keepdims=True).clip(min=1)
    lo = np.minimum(floor, 1.0 / k)
    hi = np.maximum(ceiling, 1.0 / k)
    total = p.sum(axis=1, keepdims=True)
    q = np.where(total > 0, p / np.where(total > 0, total, 1.0), valid / k)
    outside = (valid & ((q < lo) | (q > hi))).any(axis=1)
    rows = np.flatnonzero(outside)
    if len(rows):
        # The solve costs (rows x breakpoints x entries): each row's valid entries are moved
        # to the front and the columns that none of these rows uses are left out.
        width = int(valid[rows].sum(axis=1).max())
        order = np.argsort(~valid[rows], axis=1, kind="stable")[:, :width]
        q_valid = np.take_along_axis(q[rows], order, axis=1)
        mask = np.take_along_axis(valid[rows], order, axis=1)
        lo_rows, hi_rows = lo[rows], hi[rows]
        solved = np.empty_like(q_valid)
        # In blocks of rows, so the (rows x breakpoints x entries) array stays small.
        for start in range(0, len(rows), SOLVE_BLOCK):
            block = slice(start, start + SOLVE_BLOCK)
            solved[block] = _solve_scale(
                q_valid[block], mask[block], lo_rows[block], hi_rows[block]
            )
        placed = np.zeros((len(rows), q.shape[1]))
        np.put_along_axis(placed, order, solved, axis=1)
        q[rows] = placed
    return np.where(valid, q, 0.0)


SOLVE_BLOCK = 64


def _solve_scale(q: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows with some positive entry: find the interval between breakpoints (the scales at
    which an entry reaches a bound) where the clipped row sums to 1, then give the entries
    strictly inside the bounds exactly the mass the pinned ones leave."""
    positive = valid & (q > 0)
    # Work in logs: weights may span hundreds of orders of magnitude.
    log_q = np.log(np.where(positive, q, 1.0))
    breaks = np.concatenate(
        [
            np.where(positive, np.log(np.maximum(lo, 1e-300)) - log_q, np.inf),
            np.where(positive, np.log(hi) - log_q, np.inf),
        ],
        axis=1,
    )
    breaks.sort(axis=1)
    # The clipped sum at every breakpoint of its row: (rows, breakpoints, entries).
    at = np.exp(np.minimum(breaks[:, :, None] + log_q[:, None, :], 700.0))
    at = np.clip(at, lo[:, :, None], hi[:, :, None])
    sums = np.where(valid[:, None, :], np.where(positive[:, None, :], at, lo[:, :, None]), 0.0)
    sums = np.where(np.isfinite(breaks), sums.sum(axis=2), np.inf)
    # At the smallest breakpoint every positive entry sits at the floor, a sum of at most 1
    # (the bounds are feasible); the root lies after the last breakpoint whose sum is <= 1.
    below = np.maximum((sums <= 1.0).sum(axis=1) - 1, 0)
    rows = np.arange(len(q))
    start = breaks[rows, below]
    after = breaks[rows, np.minimum(below + 1, breaks.shape[1] - 1)]
    end = np.where((below + 1 < breaks.shape[1]) & np.isfinite(after), after, start + 1.0)
    # The scaled row at a scale inside that interval (still in logs: the scale may overflow).
    scaled = np.where(positive, np.exp(np.minimum((start + end)[:, None] / 2 + log_q, 700.0)), 0.0)
    out = np.where(valid, np.clip(scaled, lo, hi), 0.0)
    free = positive & (scaled > lo) & (scaled < hi)
    pinned_mass = np.where(valid & ~free, out, 0.0).sum(axis=1, keepdims=True)
    free_weight = np.where(free, q, 0.0).sum(axis=1, keepdims=True)
    share = np.where(free, q, 0.0) / np.where(free_weight > 0, free_weight, 1.0)
    out = np.where(free, (1.0 - pinned_mass) * share, out)
    # Where even every positive entry at the ceiling leaves mass over, the entries of weight 0
    # share it evenly (the bounds are feasible, so that share lies within them).
    zero = valid & ~positive
    short = 1.0 - np.where(positive, hi, 0.0).sum(axis=1, keepdims=True)
    spill = (short > np.where(zero, lo, 0.0).sum(axis=1, keepdims=True)) & zero.any(
        axis=1, keepdims=True
    )
    share = short / zero.sum(axis=1, keepdims=True).clip(min=1)
    out = np.where(spill & positive, hi, np.where(spill & zero, share, out))
    return out / out.sum(axis=1, keepdims=True)


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
