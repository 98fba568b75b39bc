"""Pure: the decision path for a batch of decision points (one point is a batch of one).
Availability, candidates, safety, policy probabilities, the draw and the receipt. No ORM: the
services load the facts, call `decide`, and persist what it returns.

Columns are the catalogue snapshot's templates; the last probability column is "no nudge".
Safety runs before the policy: a blocked template is removed from the candidates, so its
probability is exactly 0, whatever the policy or its exploration does."""

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
from safety.rules import Action, CompiledRules, Verdict, approval_covers, evaluate_all

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
class SafetyTable:
    """The verdicts on every template for one set of medical groups, with the actions as an
    array for masking."""

    verdicts: tuple[Verdict, ...]
    actions: np.ndarray  # (m,) of Action values


@dataclass(frozen=True)
class Snapshot:
    """The catalogue as one decision sees it: the templates in use, in column order, the
    popularity of each within each medical group, and the contraindication rules in force.
    Verdicts depend only on the set of groups, so they are computed once per set and kept."""

    templates: tuple[TemplateInfo, ...]
    popularity_overall: np.ndarray  # (m,)
    popularity_by_group: Mapping[str, np.ndarray]  # group slug -> (m,)
    rules: CompiledRules | None
    stamp: Any = None
    goal_index: dict[str, np.ndarray] = field(init=False, repr=False)
    slug_column: dict[str, int] = field(init=False, repr=False)
    _safety: dict[frozenset[str] | None, SafetyTable] = field(
        init=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        goals: dict[str, list[int]] = {}
        for column, template in enumerate(self.templates):
            goals.setdefault(template.goal, []).append(column)
        object.__setattr__(self, "goal_index", {g: np.array(c) for g, c in goals.items()})
        object.__setattr__(self, "slug_column", {t.slug: i for i, t in enumerate(self.templates)})

    @property
    def ruleset_version(self) -> int | None:
        return self.rules.version if self.rules else None

    def safety(self, groups: frozenset[str] | None) -> SafetyTable:
        table = self._safety.get(groups)
        if table is None:
            verdicts = tuple(
                evaluate_all(groups=groups, templates=self.templates, rules=self.rules)
            )
            table = SafetyTable(verdicts, np.array([int(v.action) for v in verdicts], dtype=int))
            self._safety[groups] = table
        return table

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
    groups: frozenset[str] | None  # None: not known (fails closed to review)
    consent: Mapping[str, bool]
    counted_today: int
    last_nudged_at: dt.datetime | None
    recent_slugs: frozenset[str]
    declined: frozenset[str] = frozenset()  # templates the patient said are not for them
    # template slug -> groups whose clinicians gave a standing approval (safety.selectors)
    approved: Mapping[str, frozenset[str]] = field(default_factory=dict)


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
    verdict: Verdict | None = None  # safety's verdict on the chosen template
    approved: bool = False  # a standing approval covers the review the verdict asks for


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
    safety: list[SafetyTable | None] = [None] * n
    for i, f in enumerate(facts):
        if reasons[i] is not None:
            continue
        mask[i], weights[i], excluded = _candidates(f, snapshot)
        safety[i] = table = snapshot.safety(f.groups)
        mask[i] &= table.actions != Action.BLOCK
        popularity[i] = snapshot.popularity(f.groups or frozenset())
        receipts[i]["excluded"] = excluded
        receipts[i]["safety"] = safety_receipt(snapshot, table, weights[i] > 0, f.approved)
    scores = baseline.scores(weights, popularity)
    probabilities = baseline.probabilities(scores, mask, params=settings.params)
    draws = rng.random(n)
    chosen = baseline.draw(probabilities, draws)
    return [
        _outcome(
            facts[i],
            snapshot,
            safety[i],
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


def _covered(approved: Mapping[str, frozenset[str]], slug: str, verdict: Verdict) -> bool:
    return approval_covers(verdict.groups, approved.get(slug, frozenset()))


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
    """Templates serving the agenda's goals, minus those sent within the repeat window and
    those the patient declined."""
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
    declined = sorted(
        slug
        for slug in f.declined
        if slug in snapshot.slug_column and mask[snapshot.slug_column[slug]]
    )
    for slug in repeated + declined:
        mask[snapshot.slug_column[slug]] = False
    excluded = {}
    if repeated:
        excluded["repeat_window"] = repeated
    if declined:
        excluded["declined_by_patient"] = declined
    return mask, weights, excluded


def safety_receipt(
    snapshot: Snapshot,
    table: SafetyTable,
    on_agenda: np.ndarray,
    approved: Mapping[str, frozenset[str]],
) -> dict[str, Any]:
    """The rule-set version, and every template of the agenda that a rule touched, with the
    rules: blocked ones (probability 0), those that need review, those allowed with a note,
    and reviews a standing approval covers."""
    out: dict[str, Any] = {"ruleset": snapshot.ruleset_version}
    for column in np.flatnonzero(on_agenda & (table.actions != Action.ALLOW)):
        verdict = table.verdicts[column]
        template = snapshot.templates[column]
        bucket = verdict.name
        if verdict.action == Action.REVIEW and _covered(approved, template.slug, verdict):
            bucket = "approved"
        out.setdefault(bucket, {})[template.key] = verdict.as_receipt()
    return out


def receipt_head(
    *,
    trigger: str,
    local_hour: int,
    weekday: int,
    client: Mapping[str, Any],
    consent: Mapping[str, bool],
    agenda: Mapping[str, float],
    groups: Sequence[str] | None,
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
        "groups": None if groups is None else list(groups),
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
        groups=None if f.groups is None else sorted(f.groups),
    )


def _outcome(
    f: PatientFacts,
    snapshot: Snapshot,
    safety: SafetyTable | None,
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
    if template is not None and safety is not None:
        result.verdict = safety.verdicts[chosen]
        result.approved = result.verdict.action == Action.REVIEW and _covered(
            f.approved, template.slug, result.verdict
        )
        result.held_until = quiet_hours_end(
            now, tz_name=f.timezone, start=f.quiet_start, end=f.quiet_end
        )
    return result
