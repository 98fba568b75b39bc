"""Pure: the agenda policy and the engagement-only policy it is compared with.

Agenda score of a candidate = goal weight x P(act) x expected health effect (when acted on)
- burden cost x the template's burden (by intensity), lowered for a goal the patient had a
nudge of in the last day (diversity across goals). "No nudge" scores 0. The probabilities are a
softmax of the scores at a temperature, clipped to a floor and a ceiling over the candidates
and "no nudge", so every allowed action keeps a known, positive propensity.

The engagement-only policy ranks by P(act) alone (the same softmax), with "no nudge" kept at
the baseline's fixed share: it is what a tap-optimising recommender would do."""

from dataclasses import asdict, dataclass

import numpy as np

from nudges import baseline

INTENSITY_BURDEN = (0.5, 1.0, 1.5)  # low, moderate, high: the engine's own burden weights


@dataclass(frozen=True)
class AgendaParams:
    burden_cost: float = 0.04
    temperature: float = 0.015
    floor: float = 0.002
    ceiling: float = 0.95
    diversity: float = 0.3  # share of the score taken off a goal nudged in the last day
    engagement_no_nudge_share: float = 0.15

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def agenda_scores(
    *,
    goal_weight: np.ndarray,
    p_act: np.ndarray,
    effect: np.ndarray,
    intensity: np.ndarray,
    days_since_goal: np.ndarray,
    params: AgendaParams,
) -> np.ndarray:
    """Per candidate pair; a negative expected effect counts as none."""
    burden = np.asarray(INTENSITY_BURDEN)[np.clip(intensity, 0, 2)]
    value = goal_weight * p_act * np.maximum(effect, 0.0)
    value = np.where(days_since_goal < 1.0, value * (1.0 - params.diversity), value)
    return value - params.burden_cost * burden


def softmax_with_none(scores: np.ndarray, mask: np.ndarray, *, temperature: float) -> np.ndarray:
    """(n, m) scores over masked candidates and a "no nudge" scoring 0 -> (n, m + 1)."""
    n, m = scores.shape
    z = np.concatenate([np.where(mask, scores, -np.inf), np.zeros((n, 1))], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z / temperature)
    return e / e.sum(axis=1, keepdims=True)


def agenda_probabilities(scores: np.ndarray, mask: np.ndarray, params: AgendaParams) -> np.ndarray:
    p = softmax_with_none(scores, mask, temperature=params.temperature)
    valid = np.concatenate([mask, np.ones((len(mask), 1), dtype=bool)], axis=1)
    return baseline.clip_rows(p, valid, floor=params.floor, ceiling=params.ceiling)


def engagement_probabilities(
    p_act: np.ndarray, mask: np.ndarray, params: AgendaParams
) -> np.ndarray:
    """Softmax over P(act) among the candidates within 1 - the fixed no-nudge share."""
    n, m = p_act.shape
    z = np.where(mask, p_act, -np.inf)
    top = np.max(z, axis=1, keepdims=True)
    has = np.isfinite(top[:, 0])
    e = np.where(mask, np.exp((z - np.where(np.isfinite(top), top, 0.0)) / params.temperature), 0.0)
    share = (
        (1.0 - params.engagement_no_nudge_share)
        * e
        / np.where(has[:, None], e.sum(axis=1, keepdims=True), 1.0)
    )
    p = np.concatenate([share, np.full((n, 1), params.engagement_no_nudge_share)], axis=1)
    p[~has] = 0.0
    p[~has, m] = 1.0
    valid = np.concatenate([mask, np.ones((n, 1), dtype=bool)], axis=1)
    out = p.copy()
    if has.any():
        out[has] = baseline.clip_rows(
            p[has], valid[has], floor=params.floor, ceiling=params.ceiling
        )
    return out
