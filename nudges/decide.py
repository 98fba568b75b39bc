"""Pure: the decision path for a batch of decision points (one point is a batch of one).
Availability, candidates, policy probabilities, the draw and the receipt. No ORM: the services
load the facts, call `decide`, and persist what it returns.

Columns are the catalogue snapshot's templates; the last probability column is "no nudge"."""

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from nudges import baseline
from nudges.availability import (
    AvailabilityInput,
    DeliveryLimits,
    quiet_hours_end,
    unavailable_reason,
)

RECEIPT_VERSION = 1
# Probabilities in receipts keep 7 decimals (the propensity floor is 0.01, so the relative
# error of an importance weight stays under 1e-5); Decision.propensity keeps full precision.
PROBABILITY_DECIMALS = 7


@dataclass(frozen=True)
class TemplateInfo:
    id: Any
    slug: str
    version: int
    goal: str
    category: str
    intensity: str
    tags: frozenset[str]

    @property
    def key(self) -> str:
        return f"{self.slug}@{self.version}"


@dataclass(frozen=True)
class Snapshot:
    """The catalogue as one decision sees it: the templates in use, in column order, and the
    popularity of each within each medical group."""

    templates: tuple[TemplateInfo, ...]
    popularity_overall: np.ndarray  # (m,)
    popularity_by_group: Mapping[str, np.ndarray]  # group slug -> (m,)
    stamp: Any = None
    goal_index: dict[str, np.ndarray] = field(init=False, repr=False)
    slug_column: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        goals: dict[str, list[int]] = {}
        for column, template in enumerate(self.templates):
            goals.setdefault(template.goal, []).append(column)
        object.__setattr__(self, "goal_index", {g: np.array(c) for g, c in goals.items()})
        object.__setattr__(self, "slug_column", {t.slug: i for i, t in enumerate(self.templates)})

    def __len__(self) -> int:
        return len(self.templates)

    def popularity(self, groups: frozenset[str]) -> np.ndarray:
        """The mean popularity over the patient's groups that have one, else the overall."""
        rows = [
            self.popularity_by_group[g] for g in sorted(groups) if g in self.popularity_by_group
        ]
        return np.mean(rows, axis=0) if rows else self.popularity_overall


@dataclass(frozen=True)
class PatientFacts:
    """Everything a decision needs to know about one patient at one moment."""

    patient_id: Any
    timezone: str
    quiet_start: dt.time
    quiet_end: dt.time
    snoozed_until: dt.datetime | None
    is_active: bool
    agenda: Mapping[str, float]
    groups: frozenset[str]
    consent: Mapping[str, bool]
    counted_today: int
    last_nudged_at: dt.datetime | None
    recent_slugs: frozenset[str]


@dataclass(frozen=True)
class Settings:
    limits: DeliveryLimits
    repeat_window_days: int
    params: baseline.PolicyParams = baseline.PolicyParams()


@dataclass
class Outcome:
    """What was decided for one decision point, ready to persist."""

    outcome: str  # nudge, no_nudge, not_available, nothing_suitable
    reason: str
    template: TemplateInfo | None
    propensity: float | None
    receipt: dict[str, Any]
    held_until: dt.datetime | None = None  # quiet hours: deliver at this time


def decide(
    facts: Sequence[PatientFacts],
    snapshot: Snapshot,
    *,
    now: dt.datetime,
    trigger: str | Sequence[str],
    settings: Settings,
    rng: np.random.Generator,
    context: Sequence[Mapping[str, Any]] | None = None,
) -> list[Outcome]:
    """Decide for each patient in `facts` at `now`. Unavailable patients get their reason;
    the others get baseline probabilities over their candidates and a draw."""
    n, m = len(facts), len(snapshot)
    triggers = [trigger] * n if isinstance(trigger, str) else list(trigger)
    contexts = list(context) if context is not None else [{}] * n
    receipts = [_receipt_head(f, triggers[i], contexts[i], now) for i, f in enumerate(facts)]
    reasons = [unavailable_reason(_availability(f), now=now, limits=settings.limits) for f in facts]
    mask = np.zeros((n, m), dtype=bool)
    weights = np.zeros((n, m))
    popularity = np.zeros((n, m))
    for i, f in enumerate(facts):
        if reasons[i] is not None:
            continue
        mask[i], weights[i], excluded = _candidates(f, snapshot)
        popularity[i] = snapshot.popularity(f.groups)
        receipts[i]["excluded"] = excluded
    scores = baseline.scores(weights, popularity)
    probabilities = baseline.probabilities(scores, mask, params=settings.params)
    draws = rng.random(n)
    chosen = baseline.draw(probabilities, draws)
    return [
        _outcome(
            facts[i],
            snapshot,
            receipts[i],
            reasons[i],
            mask[i],
            scores[i],
            probabilities[i],
            float(draws[i]),
            int(chosen[i]),
            now,
        )
        for i in range(n)
    ]


def _availability(f: PatientFacts) -> AvailabilityInput:
    return AvailabilityInput(
        timezone=f.timezone,
        quiet_start=f.quiet_start,
        quiet_end=f.quiet_end,
        snoozed_until=f.snoozed_until,
        is_active=f.is_active,
        counted_today=f.counted_today,
        last_nudged_at=f.last_nudged_at,
    )


def _candidates(
    f: PatientFacts, snapshot: Snapshot
) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]]]:
    """Templates serving the agenda's goals, minus those sent within the repeat window."""
    m = len(snapshot)
    mask = np.zeros(m, dtype=bool)
    weights = np.zeros(m)
    for goal, weight in f.agenda.items():
        columns = snapshot.goal_index.get(goal)
        if columns is not None and weight > 0:
            mask[columns] = True
            weights[columns] = weight
    repeated = sorted(
        slug
        for slug in f.recent_slugs
        if slug in snapshot.slug_column and mask[snapshot.slug_column[slug]]
    )
    for slug in repeated:
        mask[snapshot.slug_column[slug]] = False
    return mask, weights, ({"repeat_window": repeated} if repeated else {})


def receipt_head(
    *,
    trigger: str,
    local_hour: int,
    weekday: int,
    client: Mapping[str, Any],
    consent: Mapping[str, bool],
    agenda: Mapping[str, float],
    groups: Sequence[str],
) -> dict[str, Any]:
    """What was known when deciding. The policy's part is added by receipt_finish."""
    return {
        "v": RECEIPT_VERSION,
        "policy": {"name": baseline.POLICY_NAME, "version": baseline.POLICY_VERSION},
        "context": {
            "trigger": trigger,
            "local_hour": local_hour,
            "weekday": weekday,
            "client": dict(client),
        },
        "consent": dict(consent),
        "agenda": dict(agenda),
        "groups": list(groups),
    }


def receipt_finish(
    receipt: dict[str, Any],
    *,
    keys: Sequence[str],
    probabilities: np.ndarray,
    no_nudge: float,
    draw: float,
    outcome: str,
    reason: str,
    chosen: str | None,
    propensity: float | None,
    chosen_score: float | None,
) -> dict[str, Any]:
    """Every candidate with its probability, the draw, and what came of it."""
    receipt["candidates"] = {
        "template": list(keys),
        "probability": np.round(probabilities, PROBABILITY_DECIMALS).tolist(),
    }
    receipt["no_nudge_probability"] = round(no_nudge, PROBABILITY_DECIMALS)
    receipt["draw"] = round(draw, PROBABILITY_DECIMALS)
    receipt["outcome"] = outcome
    receipt["reason"] = reason
    receipt["chosen"] = chosen
    receipt["propensity"] = propensity
    receipt["chosen_score"] = None if chosen_score is None else round(chosen_score, 6)
    return receipt


def _receipt_head(
    f: PatientFacts, trigger: str, context: Mapping[str, Any], now: dt.datetime
) -> dict[str, Any]:
    local = now.astimezone(ZoneInfo(f.timezone))
    return receipt_head(
        trigger=trigger,
        local_hour=local.hour,
        weekday=local.weekday(),
        client=context,
        consent=f.consent,
        agenda=f.agenda,
        groups=sorted(f.groups),
    )


def _outcome(
    f: PatientFacts,
    snapshot: Snapshot,
    receipt: dict[str, Any],
    reason: str | None,
    mask: np.ndarray,
    scores: np.ndarray,
    probabilities: np.ndarray,
    u: float,
    chosen: int,
    now: dt.datetime,
) -> Outcome:
    if reason is not None:
        receipt.update(outcome="not_available", reason=reason, chosen=None, propensity=None)
        return Outcome("not_available", reason, None, None, receipt)
    columns = np.flatnonzero(mask)
    m = len(snapshot)
    if len(columns) == 0:
        outcome, reason, template = "nothing_suitable", "no_candidates", None
    elif chosen == m:
        outcome, reason, template = "no_nudge", "policy_chose_none", None
    else:
        outcome, reason, template = "nudge", "chosen", snapshot.templates[chosen]
    propensity = float(probabilities[chosen]) if len(columns) else None
    receipt_finish(
        receipt,
        keys=[snapshot.templates[c].key for c in columns],
        probabilities=probabilities[columns],
        no_nudge=float(probabilities[m]),
        draw=u,
        outcome=outcome,
        reason=reason,
        chosen=template.key if template else None,
        propensity=propensity,
        chosen_score=float(scores[chosen]) if template else None,
    )
    result = Outcome(outcome, reason, template, propensity, receipt)
    if template is not None:
        result.held_until = quiet_hours_end(
            now, tz_name=f.timezone, start=f.quiet_start, end=f.quiet_end
        )
    return result
