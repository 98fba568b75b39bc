"""Pure: the decision path for a batch of decision points (one point is a batch of one).
Availability, candidates, safety, policy probabilities, the draw and the receipt. No ORM: the
services load the facts, call `decide`, and persist what it returns.

Columns are the catalogue snapshot's templates; the last probability column is "no nudge".
Safety runs before the policy: a blocked template is removed from the candidates, so its
probability is exactly 0, whatever the policy or its exploration does."""

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from nudges import agenda, baseline
from nudges import features as F
from nudges.availability import (
    AvailabilityInput,
    DeliveryLimits,
    quiet_hours_end,
    unavailable_reason,
)
from nudges.why import explain, explain_model
from safety.rules import Action, CompiledRules, Verdict, approval_covers, evaluate_all

if TYPE_CHECKING:
    from nudges.recommender import ModelBundle

logger = logging.getLogger(__name__)

RECEIPT_VERSION = 1
HOLDOUT_POLICY = ("holdout", "holdout-1")  # the experiment's no-nudge arm
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
    # What clinicians read of each rule a review request names (code -> detail, None for a
    # code not in the rule set), filled by the service that opens reviews: the rules in force
    # do not change while the snapshot stands.
    rule_details: dict[str, Any] = field(init=False, repr=False, default_factory=dict)

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
    arm: str = "treatment"  # experiment arm: treatment (the model), control, holdout
    group_keys: Mapping[str, Any] = field(default_factory=dict)  # group slug -> its key


@dataclass(frozen=True)
class ModelInputs:
    """What the recommender needs beyond the facts, per decision row, for every template of
    the snapshot (columns): built by the service from the patients' records."""

    context: F.Context
    patient: F.PatientHistory
    pair: Mapping[str, np.ndarray]  # PairHistory field -> (n, m)


@dataclass(frozen=True)
class Recommender:
    """The champion model as decisions use it: the bundle, and each snapshot template's
    index in the model's schema (-1: a template the model has not seen)."""

    bundle: "ModelBundle"
    schema_index: np.ndarray
    min_tenure_days: float = 7.0


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
    policy: tuple[str, str] = (baseline.POLICY_NAME, baseline.POLICY_VERSION)
    arm: str = ""
    model_version: str = ""
    why: str | None = None  # the patient's "why", when the model explains the choice


def decide(
    facts: Sequence[PatientFacts],
    snapshot: Snapshot,
    *,
    now: dt.datetime,
    trigger: str | Sequence[str],
    settings: Settings,
    rng: np.random.Generator,
    context: Sequence[Mapping[str, Any]] | None = None,
    recommender: Recommender | None = None,
    inputs: ModelInputs | None = None,
    model_problem: str | None = None,
) -> list[Outcome]:
    """Decide for each patient in `facts` at `now`. Unavailable patients get their reason;
    the others get probabilities over their candidates (after safety) and a draw: from the
    agenda policy of `recommender`, or from the baseline for the control arm, without
    personalisation consent, for a new patient or template, or when there is no usable model
    (the receipt's `fallback` says which); the holdout arm gets no nudge."""
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
    plan = _plan(facts, reasons, mask, recommender, inputs, model_problem)
    model_rows = np.flatnonzero(plan.policy == "agenda")
    scored = _agenda(model_rows, mask, recommender, inputs, plan) if len(model_rows) else None
    if scored is not None:
        probabilities[model_rows] = scored.probabilities
        scores[model_rows] = scored.scores
    holdout = plan.policy == "holdout"
    probabilities[holdout] = 0.0
    probabilities[holdout, m] = 1.0
    draws = rng.random(n)
    chosen = baseline.draw(probabilities, draws)
    outcomes = [
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
    _annotate(outcomes, plan, chosen, scored, recommender, facts, snapshot, m)
    return outcomes


@dataclass
class _Plan:
    policy: np.ndarray  # per row: agenda, baseline, holdout
    fallback: list[str | None]
    arm: list[str]


def _plan(
    facts: Sequence[PatientFacts],
    reasons: list[str | None],
    mask: np.ndarray,
    recommender: Recommender | None,
    inputs: ModelInputs | None,
    model_problem: str | None,
) -> _Plan:
    """Which policy decides each row, and why not the model when it does not."""
    n = len(facts)
    policy = np.full(n, "baseline", dtype=object)
    fallback: list[str | None] = [None] * n
    for i, f in enumerate(facts):
        if reasons[i] is not None:
            continue
        if f.arm == "holdout":
            policy[i] = "holdout"
        elif f.arm == "control":
            pass
        elif not f.consent.get("personalisation", False):
            fallback[i] = "no_personalisation_consent"
        elif recommender is None or inputs is None:
            fallback[i] = model_problem or "no_model"
        elif inputs.context.tenure_days[i] < recommender.min_tenure_days:
            fallback[i] = "new_patient"
        elif (mask[i] & (recommender.schema_index < 0)).any():
            fallback[i] = "new_template"
        elif mask[i].any():
            policy[i] = "agenda"
    return _Plan(policy=policy, fallback=fallback, arm=[f.arm for f in facts])


@dataclass
class _Scored:
    rows: np.ndarray
    scores: np.ndarray  # (len(rows), m), agenda scores (NaN off the candidates)
    probabilities: np.ndarray  # (len(rows), m + 1)
    features: np.ndarray  # features of the candidate pairs
    pair_row: np.ndarray  # index into rows of each pair
    pair_column: np.ndarray
    p_act: np.ndarray
    effect: np.ndarray


def _agenda(
    rows: np.ndarray,
    mask: np.ndarray,
    recommender: Recommender | None,
    inputs: ModelInputs | None,
    plan: _Plan,
) -> _Scored | None:
    """Scores and probabilities of the agenda policy for `rows`, all candidate pairs at once.
    Any failure of the model sends these rows to the baseline (fallback model_error)."""
    assert recommender is not None and inputs is not None
    bundle = recommender.bundle
    try:
        pair_row, column = np.nonzero(mask[rows])
        decision = rows[pair_row]
        pair = F.PairHistory(
            **{name: values[decision, column] for name, values in inputs.pair.items()}
        )
        features = F.assemble(
            bundle.schema,
            inputs.context,
            inputs.patient,
            decision,
            recommender.schema_index[column],
            pair,
        )
        p_act, effect = bundle.predict(features)
        names = bundle.schema.names
        value = agenda.agenda_scores(
            goal_weight=np.nan_to_num(features[:, names.index("goal_weight")]),
            p_act=p_act,
            effect=effect,
            intensity=np.nan_to_num(features[:, names.index("intensity")], nan=1).astype(int),
            days_since_goal=features[:, names.index("days_since_goal")],
            params=bundle.params,
        )
        m = mask.shape[1]
        table = np.full((len(rows), m), -np.inf)
        table[pair_row, column] = value
        probabilities = agenda.agenda_probabilities(table, mask[rows], bundle.params)
        if not np.isfinite(probabilities).all():
            raise ValueError("non-finite probabilities")
    except Exception as error:  # fail over to the baseline, never to no decision
        logger.error("model scoring failed (%s); baseline used", type(error).__name__)
        for i in rows:
            plan.policy[i] = "baseline"
            plan.fallback[i] = "model_error"
        return None
    return _Scored(
        rows=rows,
        scores=np.where(np.isfinite(table), table, np.nan),
        probabilities=probabilities,
        features=features,
        pair_row=pair_row,
        pair_column=column,
        p_act=p_act,
        effect=effect,
    )


def _annotate(
    outcomes: list[Outcome],
    plan: _Plan,
    chosen: np.ndarray,
    scored: _Scored | None,
    recommender: Recommender | None,
    facts: Sequence[PatientFacts],
    snapshot: Snapshot,
    m: int,
) -> None:
    """Record in each receipt which policy decided and why; for a nudge the model chose, its
    predictions and the per-feature contributions behind it, and the patient's "why"."""
    model_at = {int(r): k for k, r in enumerate(scored.rows)} if scored is not None else {}
    explain_pairs: list[tuple[int, int]] = []
    for i, out in enumerate(outcomes):
        receipt = out.receipt
        out.arm = plan.arm[i]
        receipt["arm"] = plan.arm[i]
        if out.outcome == "not_available":
            continue
        if plan.policy[i] == "holdout":
            out.outcome, out.reason, out.template, out.verdict = "no_nudge", "holdout", None, None
            out.policy = HOLDOUT_POLICY
            receipt.update(outcome="no_nudge", reason="holdout", chosen=None)
            receipt["policy"] = {"name": HOLDOUT_POLICY[0], "version": HOLDOUT_POLICY[1]}
            out.held_until = None
        if plan.fallback[i]:
            receipt["fallback"] = plan.fallback[i]
        if i not in model_at or recommender is None:
            continue
        version = recommender.bundle.version
        out.policy = ("agenda", version)
        out.model_version = version
        receipt["policy"] = {"name": "agenda", "version": version}
        receipt["model"] = version
        if out.template is not None and chosen[i] < m:
            explain_pairs.append((i, int(chosen[i])))
    if scored is None or not explain_pairs:
        return
    assert recommender is not None
    # Pairs come from np.nonzero, so (row within scored.rows, column) keys are sorted.
    position_of_row = {int(r): k for k, r in enumerate(scored.rows)}
    keys = scored.pair_row * m + scored.pair_column
    wanted = np.array([position_of_row[i] * m + c for i, c in explain_pairs])
    pairs = np.searchsorted(keys, wanted).tolist()
    contributions = recommender.bundle.contributions(scored.features[pairs])
    names = recommender.bundle.schema.names
    for (i, column), k, contribution in zip(explain_pairs, pairs, contributions, strict=True):
        out, f = outcomes[i], facts[i]
        receipt = out.receipt
        receipt["prediction"] = {
            "p_act": round(float(scored.p_act[k]), 4),
            "effect": round(float(scored.effect[k]), 4),
        }
        top = np.argsort(-np.abs(contribution[:-1]))[:5]
        receipt["explanation"] = [
            {
                "feature": names[j],
                "value": None
                if not np.isfinite(scored.features[k, j])
                else round(float(scored.features[k, j]), 3),
                "contribution": round(float(contribution[j]), 4),
            }
            for j in top
        ]
        out.why = explain_model(
            goal=snapshot.templates[column].goal,
            category=snapshot.templates[column].category,
            agenda=f.agenda,
            contributions=[
                (names[j], float(contribution[j])) for j in np.argsort(-contribution[:-1])[:3]
            ],
        )


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


@dataclass(frozen=True)
class Route:
    """Where a chosen nudge goes first, and with what."""

    state: str  # awaiting_review, held, ready
    due_at: dt.datetime | None
    expires_at: dt.datetime
    why: str
    note: str
    safety_action: str
    safety_rules: list[str]
    transition_reason: str
    review: bool  # open a review request
    push: bool  # queue a push notification


def route(
    outcome: Outcome, facts: PatientFacts, *, now: dt.datetime, expiry: dt.timedelta
) -> Route:
    """A chosen nudge waits for review when rules of the patient's groups ask for it (and no
    standing approval covers it); else it is held until the quiet hours end; else it is ready,
    pushed when the patient consents to notifications."""
    template, verdict = outcome.template, outcome.verdict
    assert template is not None and verdict is not None
    review = verdict.action == Action.REVIEW and not outcome.approved
    release = None if review else outcome.held_until
    if review:
        state, reason = "awaiting_review", "rule_review"
    elif release is not None:
        state, reason = "held", "quiet_hours"
    else:
        state, reason = "ready", ""
    return Route(
        state=state,
        due_at=release,
        expires_at=(release or now) + expiry,
        why=outcome.why or explain(goal=template.goal, agenda=facts.agenda),
        note=" ".join(verdict.notes)[:300] if verdict.action == Action.ALLOW_WITH_NOTE else "",
        safety_action="approved" if outcome.approved else verdict.name,
        safety_rules=list(verdict.rules),
        transition_reason=reason,
        review=review,
        push=state == "ready" and bool(facts.consent.get("notifications")),
    )
