"""Pure: the baseline policy. Score = goal weight x template popularity within the patient's
medical groups; the probabilities are proportional to the score, with a fixed share for
"no nudge", clipped to a floor and a ceiling so every allowed action keeps a known, positive
propensity. It is the cold-start fallback, the first champion and the control arm."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

POLICY_NAME = "baseline"
POLICY_VERSION = "baseline-1"


@dataclass(frozen=True)
class Candidate:
    template_id: str
    slug: str
    version: int
    goal: str
    popularity: float


@dataclass(frozen=True)
class PolicyParams:
    no_nudge_share: float = 0.15
    floor: float = 0.01
    ceiling: float = 0.9


def clip_probabilities(p: np.ndarray, *, floor: float, ceiling: float) -> np.ndarray:
    """Project p onto {floor <= p_i <= ceiling, sum = 1} by water-filling: pin the entries
    that fall outside, rescale the free ones over the remaining mass, repeat. The bounds are
    relaxed when they cannot hold for len(p) entries."""
    n = len(p)
    floor = min(floor, 1.0 / n)
    ceiling = max(ceiling, 1.0 / n)
    q = p / p.sum()
    pinned = np.zeros(n, dtype=bool)
    for _ in range(n + 1):
        low = ~pinned & (q < floor)
        high = ~pinned & (q > ceiling)
        if not (low.any() or high.any()):
            break
        q = np.where(low, floor, np.where(high, ceiling, q))
        pinned |= low | high
        free_mass = 1.0 - q[pinned].sum()
        free = ~pinned
        if free.any():
            free_sum = q[free].sum()
            q[free] = q[free] / free_sum * free_mass if free_sum > 0 else free_mass / free.sum()
    return q / q.sum()


def baseline_probabilities(
    *, agenda: Mapping[str, float], candidates: Sequence[Candidate], params: PolicyParams
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and probabilities over candidates + "no nudge" (the last entry)."""
    weights = np.array([agenda.get(c.goal, 0.0) for c in candidates], dtype=float)
    popularity = np.array([c.popularity for c in candidates], dtype=float)
    scores = weights * popularity
    if len(candidates) == 0 or scores.sum() <= 0:
        return scores, np.array([1.0])
    share = (1.0 - params.no_nudge_share) * scores / scores.sum()
    p = np.append(share, params.no_nudge_share)
    return scores, clip_probabilities(p, floor=params.floor, ceiling=params.ceiling)


def draw(probabilities: np.ndarray, *, seed: int) -> tuple[int, float]:
    """The index chosen and the uniform draw that chose it, reproducible from the seed."""
    u = float(np.random.default_rng(seed).random())
    index = int(np.searchsorted(np.cumsum(probabilities), u, side="right"))
    return min(index, len(probabilities) - 1), u
