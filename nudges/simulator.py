"""Pure: the ground-truth simulator. A cohort with hidden traits receives nudges at decision
points; whether a patient acts depends on the patient, their groups and goals, the context
and the template; habituation to a template fades over days; accumulated burden raises the
daily chance of disengaging, which removes later decision points; health measures respond to
acts with a lag. docs/simulator.md gives the equations and fixes the parameters.

Everything is vectorised over patients. A policy sees only what the engine could see
(Observation) and returns, for each decision point, probabilities over the templates and
"no nudge" (the last column)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nudges import baseline

GOALS = ("activity", "medication", "sleep", "diet", "mood", "hydration", "monitoring")
CATEGORIES = ("reminder", "tip", "challenge", "reflection", "tracking")
INTENSITIES = ("low", "moderate", "high")
AGE_BANDS = ("18-29", "30-44", "45-59", "60-74", "75+")
SEXES = ("female", "male", "other", "unknown")
SLOT_HOURS = (9.0, 18.5)  # local times of the daily decision points (NUDGE_SLOTS)


@dataclass(frozen=True)
class SimParams:
    """The true parameters. Fixed in docs/simulator.md before the recommender was tuned."""

    base_logit: float = -1.0
    patient_sd: float = 0.6
    template_sd: float = 0.35
    goal_interest: float = 0.8
    chronotype_bonus: float = 0.4
    weekend: float = -0.2
    habituation_step: float = 0.6
    habituation_decay: float = 0.7
    burden_decay: float = 0.6
    burden_fatigue: float = 0.08
    disengage_base: float = -6.9
    disengage_burden: float = 0.3
    health_decay: float = 0.9
    lag_kernel: tuple[float, ...] = (0.0, 0.5, 0.3, 0.2)
    sensitivity_sd: float = 0.3
    tolerance_sd: float = 0.3
    effect_sd: float = 0.25
    measure_noise: float = 0.8
    open_lift: float = 1.5
    dismiss_share: float = 0.5
    oracle_burden_cost: float = 0.05
    category_logit: tuple[float, ...] = (0.5, 0.0, -0.4, -0.2, 0.2)
    intensity_logit: tuple[float, ...] = (0.3, 0.0, -0.6)
    category_effect: tuple[float, ...] = (0.8, 0.7, 1.2, 0.9, 1.0)
    intensity_effect: tuple[float, ...] = (0.3, 0.7, 1.2)
    intensity_burden: tuple[float, ...] = (0.6, 1.0, 1.6)
    age_logit: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.15, 0.1)
    # (group, attribute, value, logit change, effect multiplier): how a medical group changes
    # the response to a kind of nudge.
    group_modifiers: tuple[tuple[str, str, str, float, float], ...] = (
        ("depression", "intensity", "high", -0.5, 0.8),
        ("depression", "category", "reflection", 0.3, 1.2),
        ("depression", "goal", "mood", 0.2, 1.3),
        ("copd", "intensity", "high", -0.6, 0.7),
        ("copd", "goal", "medication", 0.3, 1.3),
        ("type-2-diabetes", "goal", "diet", 0.2, 1.3),
        ("type-2-diabetes", "category", "tracking", 0.3, 1.0),
        ("insulin-treated", "goal", "monitoring", 0.4, 1.2),
        ("hypertension", "goal", "monitoring", 0.2, 1.2),
        ("hypertension", "goal", "medication", 0.2, 1.3),
        ("heart-failure", "goal", "medication", 0.4, 1.4),
        ("heart-failure", "intensity", "high", -0.5, 0.6),
        ("pregnancy", "goal", "sleep", 0.3, 1.2),
        ("chronic-kidney-disease", "goal", "medication", 0.2, 1.2),
    )


@dataclass(frozen=True)
class Catalogue:
    """The templates as the simulator sees them: index arrays into GOALS, CATEGORIES and
    INTENSITIES, plus the slugs for receipts."""

    slugs: tuple[str, ...]
    goal: np.ndarray
    category: np.ndarray
    intensity: np.ndarray

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> "Catalogue":
        return cls(
            slugs=tuple(r["slug"] for r in records),
            goal=np.array([GOALS.index(r["goal"]) for r in records]),
            category=np.array([CATEGORIES.index(r["category"]) for r in records]),
            intensity=np.array([INTENSITIES.index(r["intensity"]) for r in records]),
        )

    def __len__(self) -> int:
        return len(self.slugs)


@dataclass(frozen=True)
class Cohort:
    """What the engine knows of each patient: agenda weights (n, goals), medical groups
    (n, groups) as booleans, age band and sex indices, and the time zone offset in hours."""

    weights: np.ndarray
    groups: np.ndarray
    group_names: tuple[str, ...]
    age_band: np.ndarray
    sex: np.ndarray

    def __len__(self) -> int:
        return len(self.age_band)


@dataclass(frozen=True)
class World:
    """The hidden truth: per-patient traits and per-template appeal, effect and burden."""

    params: SimParams
    cohort: Cohort
    catalogue: Catalogue
    responsiveness: np.ndarray  # (n,) log-odds
    chronotype: np.ndarray  # (n,) 0 morning person, 1 evening person
    sensitivity: np.ndarray  # (n, goals) multiplier of health effects
    tolerance: np.ndarray  # (n,) divides burden in the disengagement hazard
    appeal: np.ndarray  # (m,) log-odds
    effect: np.ndarray  # (m,) health units per act
    burden: np.ndarray  # (m,)
    group_logit: np.ndarray  # (n, m) from the patient's groups
    group_effect: np.ndarray  # (n, m) multiplier from the patient's groups

    @classmethod
    def build(
        cls, cohort: Cohort, catalogue: Catalogue, *, seed: int, params: SimParams | None = None
    ) -> "World":
        params = params or SimParams()
        rng = np.random.default_rng([seed, 7])
        n, m = len(cohort), len(catalogue)
        cat_logit = np.asarray(params.category_logit)[catalogue.category]
        int_logit = np.asarray(params.intensity_logit)[catalogue.intensity]
        appeal = cat_logit + int_logit + rng.normal(0.0, params.template_sd, m)
        effect = (
            np.asarray(params.category_effect)[catalogue.category]
            * np.asarray(params.intensity_effect)[catalogue.intensity]
            * rng.lognormal(0.0, params.effect_sd, m)
        )
        group_logit, group_effect = _group_modifiers(cohort, catalogue, params)
        return cls(
            params=params,
            cohort=cohort,
            catalogue=catalogue,
            responsiveness=rng.normal(0.0, params.patient_sd, n),
            chronotype=rng.integers(0, 2, n),
            sensitivity=rng.lognormal(0.0, params.sensitivity_sd, (n, len(GOALS))),
            tolerance=rng.lognormal(0.0, params.tolerance_sd, n),
            appeal=appeal,
            effect=effect,
            burden=np.asarray(params.intensity_burden)[catalogue.intensity],
            group_logit=group_logit,
            group_effect=group_effect,
        )

    def template_weights(self) -> np.ndarray:
        """(n, m): the agenda weight of each template's goal for each patient."""
        return self.cohort.weights[:, self.catalogue.goal]


def _group_modifiers(
    cohort: Cohort, catalogue: Catalogue, params: SimParams
) -> tuple[np.ndarray, np.ndarray]:
    n, m = len(cohort), len(catalogue)
    logit = np.zeros((n, m))
    log_effect = np.zeros((n, m))
    attributes = {
        "goal": (catalogue.goal, GOALS),
        "category": (catalogue.category, CATEGORIES),
        "intensity": (catalogue.intensity, INTENSITIES),
    }
    for group, attribute, value, d_logit, multiplier in params.group_modifiers:
        if group not in cohort.group_names:
            continue
        index, names = attributes[attribute]
        hit = (index == names.index(value)).astype(float)  # (m,)
        member = cohort.groups[:, cohort.group_names.index(group)].astype(float)  # (n,)
        logit += np.outer(member, hit) * d_logit
        log_effect += np.outer(member, hit) * np.log(multiplier)
    return logit, np.exp(log_effect)


@dataclass
class History:
    """What the engine can observe so far, per patient and template: totals, and the
    decayed counts the recommender's features use (nudges.features), kept with exact
    exponential decay between decision times (in days) so they equal a replay of the log."""

    sent: np.ndarray  # (n, m) nudges delivered
    acted: np.ndarray  # (n, m) acted on
    last_sent_day: np.ndarray  # (n, m), -10**6 when never
    daily_sent: np.ndarray  # (n, 7): nudges on each of the last 7 days, newest first
    joined: np.ndarray  # (n,) enrolment day
    time: float = 0.0  # days, the moment the decayed counts are at
    last_sent_time: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    last_goal_time: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    decayed: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int, m: int, joined: np.ndarray | None = None) -> "History":
        return cls(
            sent=np.zeros((n, m)),
            acted=np.zeros((n, m)),
            last_sent_day=np.full((n, m), -(10**6)),
            daily_sent=np.zeros((n, 7)),
            joined=np.zeros(n) if joined is None else np.asarray(joined, dtype=float),
            last_sent_time=np.full((n, m), np.nan),
            last_goal_time=np.full((n, len(GOALS)), np.nan),
            decayed={
                name: np.zeros(shape)
                for name, shape in {
                    "sent_3d": (n,),
                    "acts_7d": (n,),
                    "sent_14d": (n,),
                    "acts_14d": (n,),
                    "pair_sent_7d": (n, m),
                    "pair_acted_14d": (n, m),
                    "category_sent_14d": (n, len(CATEGORIES)),
                    "category_acts_14d": (n, len(CATEGORIES)),
                }.items()
            },
        )

    def advance(self, time: float) -> None:
        """Decay every count to `time`."""
        elapsed = time - self.time
        if elapsed > 0:
            for name, values in self.decayed.items():
                values *= np.exp(-elapsed / DECAY_DAYS[name])
            self.time = time

    def record(
        self,
        rows: np.ndarray,
        actions: np.ndarray,
        acted: np.ndarray,
        category: np.ndarray,
        goal: np.ndarray,
    ) -> None:
        """Nudges `actions` sent to patients `rows` now; `acted` says which were acted on."""
        d = self.decayed
        ones, acts = np.ones(len(rows)), acted.astype(float)
        np.add.at(d["sent_3d"], rows, ones)
        np.add.at(d["acts_7d"], rows, acts)
        np.add.at(d["sent_14d"], rows, ones)
        np.add.at(d["acts_14d"], rows, acts)
        np.add.at(d["pair_sent_7d"], (rows, actions), ones)
        np.add.at(d["pair_acted_14d"], (rows, actions), acts)
        np.add.at(d["category_sent_14d"], (rows, category[actions]), ones)
        np.add.at(d["category_acts_14d"], (rows, category[actions]), acts)
        self.last_sent_time[rows, actions] = self.time
        self.last_goal_time[rows, goal[actions]] = self.time


DECAY_DAYS = {
    "sent_3d": 3.0,
    "acts_7d": 7.0,
    "sent_14d": 14.0,
    "acts_14d": 14.0,
    "pair_sent_7d": 7.0,
    "pair_acted_14d": 14.0,
    "category_sent_14d": 14.0,
    "category_acts_14d": 14.0,
}


@dataclass(frozen=True)
class Observation:
    """One step's decision points, as the engine sees them."""

    rows: np.ndarray  # patient indices
    day: int
    slot: int
    weekday: int
    mask: np.ndarray  # (len(rows), m) candidates: on the agenda, allowed, not repeated
    cohort: Cohort
    catalogue: Catalogue
    history: History
    truth: "Truth | None" = None  # hidden state; only the oracle may read it


@dataclass(frozen=True)
class Truth:
    p_act: np.ndarray  # (len(rows), m) the true chance of acting now


@dataclass(frozen=True)
class Step:
    """One step's decision points and what happened, for a caller that streams them."""

    obs: Observation
    probabilities: np.ndarray
    action: np.ndarray
    opened: np.ndarray
    acted: np.ndarray
    dismissed: np.ndarray
    draws: np.ndarray  # the uniform draw that chose each action
    values: np.ndarray | None = None  # (k, m + 1) true expected reward of every action
    reward: np.ndarray | None = None  # (k,) agenda-weighted health the action added


Policy = Callable[[Observation], np.ndarray]


@dataclass
class SimLog:
    """Every decision point of a run, one entry per point, plus daily measures."""

    patient: list[np.ndarray] = field(default_factory=list)
    day: list[np.ndarray] = field(default_factory=list)
    slot: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)  # m means "no nudge"
    propensity: list[np.ndarray] = field(default_factory=list)
    probabilities: list[np.ndarray] = field(default_factory=list)  # (k, m + 1) per step
    mask: list[np.ndarray] = field(default_factory=list)
    opened: list[np.ndarray] = field(default_factory=list)
    acted: list[np.ndarray] = field(default_factory=list)
    dismissed: list[np.ndarray] = field(default_factory=list)
    value: list[np.ndarray] = field(default_factory=list)  # true expected value of the action
    policy_value: list[np.ndarray] = field(default_factory=list)  # sum_a pi(a) value(a)
    measures: list[np.ndarray] = field(default_factory=list)  # per day, (n, goals); nan if gone
    engaged_days: np.ndarray | None = None
    horizon_value: float = 0.0

    def concat(self, name: str) -> np.ndarray:
        return np.concatenate(getattr(self, name)) if getattr(self, name) else np.array([])


def act_probability(
    world: World,
    rows: np.ndarray,
    *,
    slot: int,
    weekday: int,
    habituation: np.ndarray,
    burden: np.ndarray,
) -> np.ndarray:
    """(len(rows), m): the true chance that each patient acts on each template now."""
    p = world.params
    chrono = np.where(
        (slot == 0) & (world.chronotype[rows] == 0)
        | (slot == len(SLOT_HOURS) - 1) & (world.chronotype[rows] == 1),
        p.chronotype_bonus,
        0.0,
    )
    logit = (
        p.base_logit
        + world.responsiveness[rows, None]
        + np.asarray(p.age_logit)[world.cohort.age_band[rows]][:, None]
        + chrono[:, None]
        + (p.weekend if weekday >= 5 else 0.0)
        + world.appeal[None, :]
        + p.goal_interest * world.template_weights()[rows]
        + world.group_logit[rows]
        - p.habituation_step * habituation[rows]
        - p.burden_fatigue * burden[rows, None]
    )
    return 1.0 / (1.0 + np.exp(-logit))


def health_value(world: World, rows: np.ndarray) -> np.ndarray:
    """(len(rows), m): agenda-weighted health units one act on each template adds."""
    goal = world.catalogue.goal
    return (
        world.template_weights()[rows]
        * world.effect[None, :]
        * world.sensitivity[rows][:, goal]
        * world.group_effect[rows]
    )


def simulate(
    world: World,
    policy: Policy,
    *,
    days: int,
    seed: int,
    allowed: np.ndarray | None = None,
    repeat_window_days: int = 3,
    start_weekday: int = 0,
    on_step: Callable[[Step], None] | None = None,
    on_day: Callable[[int, np.ndarray], None] | None = None,
    keep_probabilities: bool = False,
    enrolment_day: np.ndarray | None = None,
) -> SimLog:
    """Run `policy` for `days` days of three decision points each. `allowed` (n, m) removes
    templates that safety forbids for a patient. Returns the log with the true values;
    on_step sees each step's decision points as they happen, on_day each day's measures
    (n, goals; NaN for a patient who has left or not joined). enrolment_day (n,) staggers
    when patients join (default: all on day 0)."""
    p = world.params
    rng = np.random.default_rng([seed, 11])
    n, m = len(world.cohort), len(world.catalogue)
    n_goals = len(GOALS)
    on_agenda = world.template_weights() > 0
    allowed = on_agenda if allowed is None else (allowed & on_agenda)
    joined = np.zeros(n, dtype=int) if enrolment_day is None else np.asarray(enrolment_day)
    engaged = np.ones(n, dtype=bool)  # has not disengaged
    habituation = np.zeros((n, m))
    burden = np.zeros(n)
    health = np.zeros((n, n_goals))
    kernel = np.asarray(p.lag_kernel)
    pending = np.zeros((n, n_goals, len(kernel)))
    history = History.empty(n, m, joined)
    log = SimLog()
    engaged_days = np.zeros(n)
    horizon = 0.0
    for day in range(days):
        weekday = (start_weekday + day) % 7
        today = np.zeros(n)
        present = engaged & (joined <= day)
        for slot in range(len(SLOT_HOURS)):
            rows = np.flatnonzero(present)
            if len(rows) == 0:
                break
            history.advance(day + SLOT_HOURS[slot] / 24.0)
            mask = allowed[rows] & (day - history.last_sent_day[rows] > repeat_window_days)
            p_act = act_probability(
                world, rows, slot=slot, weekday=weekday, habituation=habituation, burden=burden
            )
            obs = Observation(
                rows, day, slot, weekday, mask, world.cohort, world.catalogue, history, Truth(p_act)
            )
            probs = policy(obs)
            _check_probabilities(probs, mask)
            draws = rng.random(len(rows))
            action = baseline.draw(probs, draws)
            values = np.concatenate(
                [p_act * health_value(world, rows), np.zeros((len(rows), 1))], axis=1
            )
            nudged = action < m
            k = np.arange(len(rows))
            chosen_p = np.where(nudged, p_act[k, np.minimum(action, m - 1)], 0.0)
            acted = nudged & (rng.random(len(rows)) < chosen_p)
            opened = acted | (
                nudged & (rng.random(len(rows)) < _sigmoid(_logit(chosen_p) + p.open_lift))
            )
            dismissed = nudged & ~acted & (rng.random(len(rows)) < p.dismiss_share)
            ra, aa = rows[acted], action[acted]
            gain = (
                world.effect[aa]
                * world.sensitivity[ra, world.catalogue.goal[aa]]
                * world.group_effect[ra, aa]
            )
            reward = np.zeros(len(rows))
            reward[acted] = gain * world.template_weights()[ra, aa]
            step = Step(obs, probs, action, opened, acted, dismissed, draws, values, reward)
            _record(log, step, values, keep_probabilities)
            if on_step is not None:
                on_step(step)
            r, a = rows[nudged], action[nudged]
            history.record(r, a, acted[nudged], world.catalogue.category, world.catalogue.goal)
            habituation[r, a] += 1.0
            burden[r] += world.burden[a]
            today[r] += 1
            history.sent[r, a] += 1
            history.last_sent_day[r, a] = day
            history.acted[ra, aa] += 1
            np.add.at(pending, (ra, world.catalogue.goal[aa]), gain[:, None] * kernel[None, :])
        # End of the day: lagged effects land, measures are taken, traits decay, some leave.
        health = p.health_decay * health + pending[:, :, 0]
        pending = np.concatenate([pending[:, :, 1:], np.zeros((n, n_goals, 1))], axis=2)
        horizon += float((world.cohort.weights * health).sum()) * (1 - p.health_decay)
        measured = health + rng.normal(0.0, p.measure_noise, (n, n_goals))
        measured = np.where(present[:, None], measured, np.nan)
        log.measures.append(measured)
        engaged_days += present
        habituation *= p.habituation_decay
        burden *= p.burden_decay
        history.daily_sent = np.concatenate([today[:, None], history.daily_sent[:, :-1]], axis=1)
        hazard = _sigmoid(p.disengage_base + p.disengage_burden * burden / world.tolerance)
        engaged &= (rng.random(n) >= hazard) | ~present
        if on_day is not None:
            on_day(day, measured)
    log.engaged_days = engaged_days
    log.horizon_value = horizon / n
    return log


def _record(log: SimLog, step: Step, values: np.ndarray, keep_probabilities: bool) -> None:
    rows, probs, action = step.obs.rows, step.probabilities, step.action
    k = np.arange(len(rows))
    log.patient.append(rows)
    log.day.append(np.full(len(rows), step.obs.day))
    log.slot.append(np.full(len(rows), step.obs.slot))
    log.action.append(action)
    log.propensity.append(probs[k, action])
    if keep_probabilities:
        log.probabilities.append(probs)
        log.mask.append(step.obs.mask)
    log.opened.append(step.opened)
    log.acted.append(step.acted)
    log.dismissed.append(step.dismissed)
    log.value.append(values[k, action])
    log.policy_value.append((probs * values).sum(axis=1))


def _check_probabilities(probs: np.ndarray, mask: np.ndarray) -> None:
    if probs.shape != (mask.shape[0], mask.shape[1] + 1):
        raise ValueError("policy returned probabilities of the wrong shape")
    if (probs[:, :-1][~mask] > 0).any():
        raise ValueError("policy gave probability to a template that is not a candidate")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("policy probabilities do not sum to 1")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


# Reference policies -------------------------------------------------------------------------


def never_policy(obs: Observation) -> np.ndarray:
    probs = np.zeros((len(obs.rows), obs.mask.shape[1] + 1))
    probs[:, -1] = 1.0
    return probs


def oracle_policy(world: World) -> Policy:
    """Knows the true parameters and the hidden state: picks the action with the highest true
    expected health value net of a burden cost, or no nudge when none is positive. It is
    one-step greedy: it does not plan for disengagement beyond the burden cost."""

    def policy(obs: Observation) -> np.ndarray:
        assert obs.truth is not None
        net = obs.truth.p_act * health_value(world, obs.rows)
        net = net - world.params.oracle_burden_cost * world.burden[None, :]
        net = np.where(obs.mask, net, -np.inf)
        best = np.argmax(net, axis=1)
        nudge = net[np.arange(len(best)), best] > 0
        probs = np.zeros((len(obs.rows), obs.mask.shape[1] + 1))
        probs[np.arange(len(best)), np.where(nudge, best, obs.mask.shape[1])] = 1.0
        return probs

    return policy


class BaselinePolicy:
    """The engine's baseline (nudges.baseline) as the simulator runs it: popularity is each
    template's smoothed act rate within the patient's medical groups, from what was observed
    up to the previous day (the engine refreshes it nightly). `last_scores` holds the scores
    of the latest call, for receipts."""

    def __init__(self, params: baseline.PolicyParams | None = None) -> None:
        self.params = params or baseline.PolicyParams()
        self._day: int | None = None
        self._popularity = np.zeros((0, 0))
        self.last_scores = np.zeros((0, 0))

    def __call__(self, obs: Observation) -> np.ndarray:
        if self._day != obs.day:
            self._popularity = group_popularity(obs.cohort, obs.history)
            self._day = obs.day
        weights = obs.cohort.weights[obs.rows][:, obs.catalogue.goal]
        self.last_scores = baseline.scores(weights, self._popularity[obs.rows])
        return baseline.probabilities(self.last_scores, obs.mask, params=self.params)


def group_popularity(cohort: Cohort, history: History) -> np.ndarray:
    """(n, m): the mean over each patient's groups of the template's smoothed act rate in that
    group; the rate over everyone for a patient in no group."""
    member = cohort.groups.astype(float)  # (n, K)
    rate = baseline.smoothed_rate(member.T @ history.acted, member.T @ history.sent)  # (K, m)
    overall = baseline.smoothed_rate(history.acted.sum(axis=0), history.sent.sum(axis=0))  # (m,)
    count = member.sum(axis=1, keepdims=True)
    in_groups = (member @ rate) / np.where(count > 0, count, 1.0)
    return np.where(count > 0, in_groups, overall[None, :])
