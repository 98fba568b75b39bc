"""The ground-truth simulator (nudges/simulator.py) on a small synthetic world: the synthetic
cohort of demo/cohort.py and the reviewed catalogue in nudges/data/templates.json."""

import json
from pathlib import Path

import numpy as np
import pytest

import nudges
from demo.cohort import CONDITIONS, synthetic_cohort
from nudges import simulator as sim

TEMPLATES = json.loads((Path(nudges.__file__).parent / "data" / "templates.json").read_text())
CATALOGUE = sim.Catalogue.from_records(TEMPLATES)


def make_cohort(n: int, *, seed: int = 1) -> sim.Cohort:
    patients = synthetic_cohort(n, seed=seed)
    names = tuple(CONDITIONS)
    return sim.Cohort(
        weights=np.array([[p.goals.get(g, 0.0) for g in sim.GOALS] for p in patients]),
        groups=np.array([[g in p.groups for g in names] for p in patients], dtype=bool),
        group_names=names,
        age_band=np.array([sim.AGE_BANDS.index(p.age_band) for p in patients]),
        sex=np.array([sim.SEXES.index(p.sex) for p in patients]),
    )


def make_world(n: int = 50, *, seed: int = 1, **params) -> sim.World:
    return sim.World.build(
        make_cohort(n, seed=seed), CATALOGUE, seed=seed, params=sim.SimParams(**params)
    )


def one_hot(obs: sim.Observation, columns: np.ndarray) -> np.ndarray:
    """Probability 1 on `columns` per row; m (or -1) means no nudge."""
    m = obs.mask.shape[1]
    probs = np.zeros((len(obs.rows), m + 1))
    probs[np.arange(len(obs.rows)), np.where(columns < 0, m, columns)] = 1.0
    return probs


def first_candidate(obs: sim.Observation) -> np.ndarray:
    return np.where(obs.mask.any(axis=1), np.argmax(obs.mask, axis=1), -1)


def nudge_once(pick):
    """A policy that nudges every patient once, at the first slot of day 0 (choosing with
    `pick`), and never again."""

    def policy(obs: sim.Observation) -> np.ndarray:
        if obs.day == 0 and obs.slot == 0:
            return one_hot(obs, pick(obs))
        return sim.never_policy(obs)

    return policy


def always_heaviest(world: sim.World):
    """Nudges at every decision point with the most burdensome candidate."""

    def policy(obs: sim.Observation) -> np.ndarray:
        burden = np.where(obs.mask, world.burden[None, :], -np.inf)
        return one_hot(obs, np.where(obs.mask.any(axis=1), np.argmax(burden, axis=1), -1))

    return policy


# --- act probability --------------------------------------------------------------------------


def test_act_probability_falls_with_habituation_to_that_template_only():
    world = make_world()
    n, m = len(world.cohort), len(CATALOGUE)
    rows = np.arange(n)
    fresh = np.zeros((n, m))
    once, twice = fresh.copy(), fresh.copy()
    once[:, 5], twice[:, 5] = 1.0, 2.0

    def p(habituation):
        return sim.act_probability(
            world, rows, slot=0, weekday=2, habituation=habituation, burden=np.zeros(n)
        )

    assert (p(once)[:, 5] < p(fresh)[:, 5]).all()
    assert (p(twice)[:, 5] < p(once)[:, 5]).all()
    others = np.arange(m) != 5
    np.testing.assert_array_equal(p(once)[:, others], p(fresh)[:, others])


def test_act_probability_falls_with_burden_for_every_template():
    world = make_world()
    n, m = len(world.cohort), len(CATALOGUE)
    rows = np.arange(n)
    habituation = np.zeros((n, m))

    light = sim.act_probability(
        world, rows, slot=1, weekday=0, habituation=habituation, burden=np.zeros(n)
    )
    heavy = sim.act_probability(
        world, rows, slot=1, weekday=0, habituation=habituation, burden=np.full(n, 6.0)
    )

    assert (heavy < light).all()
    assert ((light > 0) & (light < 1)).all()


def test_the_habituation_effect_fades_over_the_following_days():
    # given every patient nudged once with their first candidate on day 0
    world = make_world(n=40)
    chosen: dict[int, int] = {}
    penalty: dict[int, list[float]] = {}  # day -> habituation penalty in log-odds, per patient
    baseline_gap: dict[int, float] = {}

    def pick(obs):
        columns = first_candidate(obs)
        chosen.update({int(i): int(c) for i, c in zip(obs.rows, columns, strict=True) if c >= 0})
        return columns

    inner = nudge_once(pick)

    def policy(obs):
        if obs.slot == 0:
            logit = np.log(obs.truth.p_act / (1 - obs.truth.p_act))
            for k, i in enumerate(obs.rows.tolist()):
                j = chosen.get(i, int(first_candidate(obs)[k]))
                reference = (j + 1) % logit.shape[1]
                gap = logit[k, j] - logit[k, reference]  # cancels what all templates share
                if obs.day == 0:
                    baseline_gap[i] = gap
                elif i in chosen:
                    penalty.setdefault(obs.day, []).append(baseline_gap[i] - gap)
        return inner(obs)

    # when the days pass without another nudge
    sim.simulate(world, policy, days=12, seed=3)

    # then the penalty on the nudged template is there the next day and shrinks every day
    by_day = [float(np.mean(penalty[d])) for d in range(1, 12)]
    assert by_day[0] > 0.1
    assert all(later < earlier for earlier, later in zip(by_day, by_day[1:], strict=False))
    assert by_day[-1] < 0.1 * by_day[0]


# --- disengagement ----------------------------------------------------------------------------


def test_a_never_nudge_policy_retains_more_patients_than_an_always_nudge_policy():
    world = make_world(n=400, seed=2)

    never = sim.simulate(world, sim.never_policy, days=60, seed=5)
    always = sim.simulate(world, always_heaviest(world), days=60, seed=5)

    retained_never = int(np.isfinite(never.measures[-1][:, 0]).sum())
    retained_always = int(np.isfinite(always.measures[-1][:, 0]).sum())
    assert retained_never > retained_always + 40
    assert never.engaged_days is not None and always.engaged_days is not None
    assert never.engaged_days.sum() > always.engaged_days.sum()


def test_a_patient_who_disengaged_has_no_further_decision_points():
    world = make_world(n=400, seed=2)

    log = sim.simulate(world, always_heaviest(world), days=60, seed=5)

    gone = ~np.isfinite(log.measures[-1][:, 0])
    assert gone.any()
    patients, days = log.concat("patient"), log.concat("day")
    assert log.engaged_days is not None
    for i in np.flatnonzero(gone)[:20]:
        last_day = int(log.engaged_days[i]) - 1
        assert days[patients == i].max() == last_day


# --- health effects ---------------------------------------------------------------------------


def test_health_effects_land_with_a_lag_not_on_the_day_of_acting():
    # given exact measurements (no noise) and one nudge each, with the likeliest template
    world = make_world(n=80, measure_noise=0.0)
    steps: list[sim.Step] = []

    def likeliest(obs):
        p = np.where(obs.mask, obs.truth.p_act, -1.0)
        return np.where(obs.mask.any(axis=1), np.argmax(p, axis=1), -1)

    log = sim.simulate(world, nudge_once(likeliest), days=4, seed=9, on_step=steps.append)

    first = steps[0]
    acted_rows = first.obs.rows[first.acted]
    assert len(acted_rows) > 5
    # then nothing changes on the day of acting
    np.testing.assert_array_equal(log.measures[0], 0.0)
    # and the next day the acted-on goal (and only it) has improved
    day1 = log.measures[1]
    for k in np.flatnonzero(first.acted):
        i, a = int(first.obs.rows[k]), int(first.action[k])
        goal = int(CATALOGUE.goal[a])
        gain = world.effect[a] * world.sensitivity[i, goal] * world.group_effect[i, a]
        assert day1[i, goal] == pytest.approx(world.params.lag_kernel[1] * gain)
        assert np.count_nonzero(day1[i]) == 1
    idle = np.setdiff1d(np.arange(len(world.cohort)), acted_rows)
    np.testing.assert_array_equal(day1[idle], 0.0)


def test_a_health_effect_keeps_arriving_over_the_following_days():
    world = make_world(n=80, measure_noise=0.0)
    steps: list[sim.Step] = []

    log = sim.simulate(world, nudge_once(first_candidate), days=5, seed=9, on_step=steps.append)

    first = steps[0]
    k = int(np.flatnonzero(first.acted)[0])
    i, goal = int(first.obs.rows[k]), int(CATALOGUE.goal[first.action[k]])
    series = [float(m[i, goal]) for m in log.measures]
    assert series[0] == 0.0
    assert series[1] < series[2]  # the second day adds more than decay takes away
    assert all(value > 0 for value in series[1:])


# --- policies ---------------------------------------------------------------------------------


def test_the_oracle_beats_the_baseline_on_one_step_value():
    # given the same decision points, shown to both policies
    world = make_world(n=200, seed=4)
    oracle, baseline = sim.oracle_policy(world), sim.BaselinePolicy()
    value: dict[str, list[np.ndarray]] = {"oracle": [], "baseline": []}
    net: dict[str, list[np.ndarray]] = {"oracle": [], "baseline": []}

    def both(obs):
        gains = obs.truth.p_act * sim.health_value(world, obs.rows)
        values = np.concatenate([gains, np.zeros((len(obs.rows), 1))], axis=1)
        costs = np.append(world.params.oracle_burden_cost * world.burden, 0.0)
        chosen = {"oracle": oracle(obs), "baseline": baseline(obs)}
        for name, probs in chosen.items():
            value[name].append((probs * values).sum(axis=1))
            net[name].append((probs * (values - costs[None, :])).sum(axis=1))
        return chosen["baseline"]

    sim.simulate(world, both, days=10, seed=6)

    oracle_value, baseline_value = map(np.concatenate, (value["oracle"], value["baseline"]))
    assert oracle_value.mean() > 1.5 * baseline_value.mean()
    # point by point the oracle is never worse on the value it optimises
    assert (np.concatenate(net["oracle"]) >= np.concatenate(net["baseline"]) - 1e-12).all()


def test_a_policy_that_gives_probability_to_a_non_candidate_is_rejected():
    world = make_world()

    def reckless(obs):
        outside = ~obs.mask
        return one_hot(obs, np.where(outside.any(axis=1), np.argmax(outside, axis=1), -1))

    with pytest.raises(ValueError, match="not a candidate"):
        sim.simulate(world, reckless, days=1, seed=1)


def test_a_template_safety_forbids_is_never_a_candidate():
    world = make_world()
    allowed = np.ones((len(world.cohort), len(CATALOGUE)), dtype=bool)
    allowed[:, :10] = False
    seen = []

    def record(obs):
        seen.append(obs.mask[:, :10].any())
        return one_hot(obs, np.zeros(len(obs.rows), dtype=int))

    with pytest.raises(ValueError, match="not a candidate"):
        sim.simulate(world, record, days=1, seed=1, allowed=allowed)
    assert seen == [False]


@pytest.mark.parametrize(
    "broken",
    [
        lambda obs: np.full((len(obs.rows), obs.mask.shape[1]), 0.0),  # no "no nudge" column
        lambda obs: np.full((len(obs.rows), obs.mask.shape[1] + 1), 0.0),  # sums to 0
    ],
    ids=["wrong_shape", "does_not_sum_to_one"],
)
def test_a_policy_that_is_not_a_distribution_over_the_choices_is_rejected(broken):
    with pytest.raises(ValueError):
        sim.simulate(make_world(), broken, days=1, seed=1)


def test_a_template_sent_is_not_a_candidate_again_within_the_repeat_window():
    world = make_world(n=30)
    masks: dict[tuple[int, int], np.ndarray] = {}
    chosen: dict[int, int] = {}

    def pick(obs):
        columns = first_candidate(obs)
        chosen.update({int(i): int(c) for i, c in zip(obs.rows, columns, strict=True) if c >= 0})
        return columns

    inner = nudge_once(pick)

    def policy(obs):
        for k, i in enumerate(obs.rows.tolist()):
            masks[(obs.day, i)] = obs.mask[k].copy()
        return inner(obs)

    sim.simulate(world, policy, days=6, seed=2, repeat_window_days=3)

    for i, j in chosen.items():
        if (5, i) not in masks:
            continue  # left early
        assert [bool(masks[(d, i)][j]) for d in range(1, 6)] == [False, False, False, True, True]


# --- reproducibility --------------------------------------------------------------------------


def _run(seed: int) -> sim.SimLog:
    world = make_world(n=60, seed=1)
    return sim.simulate(world, sim.BaselinePolicy(), days=8, seed=seed)


def test_the_same_seed_reproduces_the_run_exactly():
    first, second = _run(11), _run(11)

    for name in ("patient", "action", "acted", "opened", "dismissed", "propensity"):
        np.testing.assert_array_equal(first.concat(name), second.concat(name))
    np.testing.assert_array_equal(np.stack(first.measures), np.stack(second.measures))
    assert first.horizon_value == second.horizon_value


def test_a_different_seed_gives_a_different_run():
    first, second = _run(11), _run(12)

    assert not np.array_equal(first.concat("action"), second.concat("action"))


def test_the_same_seed_builds_the_same_world():
    a, b = make_world(seed=3), make_world(seed=3)

    np.testing.assert_array_equal(a.appeal, b.appeal)
    np.testing.assert_array_equal(a.responsiveness, b.responsiveness)
