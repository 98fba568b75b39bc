"""Off-policy evaluation (nudges/ope.py) on synthetic contextual-bandit logs: a known reward
function, a known logging policy and a different target policy, so every estimate can be
checked against the target's true value. Pure: no database."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from nudges import ope
from nudges.decision_log import NONE, DecisionLog, from_records

ACTIONS = ("walk", "sleep", "water", "breathe")
K = len(ACTIONS)  # column K of the per-decision arrays below is "no nudge"
TIME = "2026-01-05T09:00:00+00:00"

# true expected reward: BASE + SLOPE * x per action, then no nudge
BASE = np.array([0.3, 0.5, 0.1, 0.4, 0.2])
SLOPE = np.array([0.5, -0.3, 0.8, 0.0, 0.1])
# policies: softmax over the available actions and no nudge of THETA + PHI * x
LOGGING = (np.array([0.0, 0.3, -0.3, 0.0, 0.5]), np.array([0.5, -0.5, 0.5, 0.0, 0.0]))
TARGET = (np.array([-1.0, 0.0, 0.0, -1.0, -1.0]), np.array([0.0, -2.0, 3.0, 0.0, 0.0]))


@pytest.fixture(autouse=True)
def catalogue() -> None:
    """Overrides the conftest fixture that loads the catalogue: these tests need no database."""


@dataclass
class Simulation:
    x: np.ndarray  # (n,) the context
    patient: np.ndarray  # (n,) patient number
    available: np.ndarray  # (n, K) bool
    logging: np.ndarray  # (n, K + 1) the logging policy's probabilities
    true: np.ndarray  # (n, K + 1) true expected rewards
    action: np.ndarray  # (n,) column drawn, K for no nudge
    reward: np.ndarray  # (n,)


def _softmax(
    policy: tuple[np.ndarray, np.ndarray], x: np.ndarray, available: np.ndarray
) -> np.ndarray:
    theta, phi = policy
    logits = theta + phi * x[:, None]
    shown = np.column_stack([available, np.ones(len(x), dtype=bool)])
    scores = np.where(shown, np.exp(logits), 0.0)
    return scores / scores.sum(axis=1, keepdims=True)


def simulate(
    n: int, *, patients: int, seed: int, noise_sd: float = 0.3, patient_sd: float = 0.0
) -> Simulation:
    """n decisions of a logging policy; the reward is the true mean plus a per-patient effect
    (shared by all of a patient's decisions) plus independent noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    patient = rng.integers(0, patients, size=n)
    available = rng.uniform(size=(n, K)) < 0.7
    logging = _softmax(LOGGING, x, available)
    true = BASE + SLOPE * x[:, None]
    action = (rng.uniform(size=(n, 1)) > logging.cumsum(axis=1)).sum(axis=1)
    action = np.minimum(action, K)  # rounding of the cumulative sum
    effect = rng.normal(0.0, patient_sd, size=patients)
    reward = true[np.arange(n), action] + effect[patient] + rng.normal(0.0, noise_sd, size=n)
    return Simulation(x, patient, available, logging, true, action, reward)


def as_records(sim: Simulation, *, without_reward: np.ndarray | None = None) -> list[dict]:
    records = []
    for i in range(len(sim.x)):
        columns = [*np.flatnonzero(sim.available[i]).tolist(), K]
        names = [ACTIONS[k] if k < K else NONE for k in columns]
        chosen = int(sim.action[i])
        missing = without_reward is not None and without_reward[i]
        records.append(
            {
                "patient": f"p{sim.patient[i]:05d}",
                "time": TIME,
                "available": names[:-1],
                "action": ACTIONS[chosen] if chosen < K else None,
                "propensity": float(sim.logging[i, chosen]),
                "context": {"x": float(sim.x[i])},
                "distribution": {
                    a: float(sim.logging[i, k]) for a, k in zip(names, columns, strict=True)
                },
                "outcome": {} if missing else {"reward": float(sim.reward[i])},
                "true_values": {
                    a: float(sim.true[i, k]) for a, k in zip(names, columns, strict=True)
                },
            }
        )
    return records


def logged(n: int, *, patients: int, seed: int, **noise: float) -> DecisionLog:
    return from_records(as_records(simulate(n, patients=patients, seed=seed, **noise)))


def as_log(sim: Simulation) -> DecisionLog:
    """The same log built directly from arrays, for sizes where records would be slow."""
    n = len(sim.x)
    decision, column = np.nonzero(sim.available)
    offsets = np.concatenate([[0], np.cumsum(sim.available.sum(axis=1))]).astype(np.int64)
    names = np.array([f"p{p:05d}" for p in range(sim.patient.max() + 1)], dtype=object)
    rows = np.arange(n)
    return DecisionLog(
        patients=names[sim.patient],
        time=np.zeros(n),
        offsets=offsets,
        avail=column.astype(np.int64),
        avail_prob=sim.logging[decision, column],
        avail_true=sim.true[decision, column],
        action=np.where(sim.action < K, sim.action, -1).astype(np.int64),
        propensity=sim.logging[rows, sim.action],
        none_prob=sim.logging[:, K],
        none_true=sim.true[:, K],
        reward=sim.reward,
        acted=np.full(n, np.nan),
        health_delta=np.full(n, np.nan),
        context={"x": sim.x},
        actions=list(ACTIONS),
    )


def columns_of(log: DecisionLog) -> np.ndarray:
    """(k,) the column in ACTIONS of each entry of log.avail."""
    return np.array([ACTIONS.index(a) for a in log.actions], dtype=np.int64)[log.avail]


def target(log: DecisionLog) -> dict[str, Any]:
    """The target policy's probabilities, computed from the log's own arrays."""
    x, decision, column = log.context["x"], log.decision_index(), columns_of(log)
    theta, phi = TARGET
    avail = np.exp(theta[column] + phi[column] * x[decision])
    none = np.exp(theta[K] + phi[K] * x)
    total = np.bincount(decision, weights=avail, minlength=len(log)) + none
    return {"target_avail": avail / total[decision], "target_none": none / total}


def perfect_model(log: DecisionLog) -> dict[str, Any]:
    return {"q_avail": log.avail_true, "q_none": log.none_true}


def wrong_model(log: DecisionLog) -> dict[str, Any]:
    """Every nudge worth 0.5 and no nudge worth nothing: wrong almost everywhere."""
    return {"q_avail": np.full(len(log.avail), 0.5), "q_none": np.zeros(len(log))}


Model = Callable[[DecisionLog], dict[str, Any]]
SEEDS = 200


@pytest.fixture(scope="module")
def many_logs() -> list[DecisionLog]:
    """Independent logs of 400 decisions by 40 patients; the reward noise is small next to
    the differences between actions."""
    return [logged(400, patients=40, seed=seed, noise_sd=0.1) for seed in range(SEEDS)]


def errors(logs: list[DecisionLog], name: str, model: Model | None = None) -> np.ndarray:
    """Per log, estimate minus the target's true value on that log."""
    out = []
    for log in logs:
        extra = model(log) if model else {}
        report = ope.evaluate(log=log, **target(log), **extra, n_boot=1)
        assert report.true_value is not None
        out.append(report.estimates[name].value - report.true_value)
    return np.array(out)


def assert_unbiased(error: np.ndarray) -> None:
    standard_error = error.std(ddof=1) / math.sqrt(len(error))
    assert abs(error.mean()) < 4 * standard_error, (error.mean(), standard_error)


# estimators


def test_ips_is_unbiased_over_many_logs(many_logs: list[DecisionLog]) -> None:
    # given logs of a logging policy unlike the target
    # when IPS estimates the target on each
    error = errors(many_logs, "ips")
    # then its errors average to zero within sampling error
    assert_unbiased(error)


def test_the_mean_logged_reward_is_biased_so_the_unbiasedness_checks_can_fail(
    many_logs: list[DecisionLog],
) -> None:
    # given the same logs
    # when the logged rewards are simply averaged (as if the target had been the logger)
    error = np.array(
        [np.nanmean(log.reward) - ope.true_value(log=log, **target(log)) for log in many_logs]
    )
    # then the check that IPS passes rejects it
    with pytest.raises(AssertionError):
        assert_unbiased(error)


def test_dr_is_unbiased_over_many_logs_with_a_wrong_reward_model(
    many_logs: list[DecisionLog],
) -> None:
    # given a reward model that is wrong almost everywhere, and the true propensities
    # when DR and the direct method estimate the target
    dr, dm = errors(many_logs, "dr", wrong_model), errors(many_logs, "dm", wrong_model)
    # then DR stays unbiased while the direct method inherits the model's error
    assert_unbiased(dr)
    with pytest.raises(AssertionError):
        assert_unbiased(dm)


def test_dr_with_a_perfect_reward_model_has_no_bias_and_less_variance_than_ips(
    many_logs: list[DecisionLog],
) -> None:
    # given the true expected rewards as the reward model
    # when DR estimates the target on each log
    dr, ips = errors(many_logs, "dr", perfect_model), errors(many_logs, "ips")
    # then it is unbiased and varies far less than IPS
    assert_unbiased(dr)
    assert dr.std() < 0.5 * ips.std()


def test_the_direct_method_with_a_perfect_model_is_the_true_value(
    many_logs: list[DecisionLog],
) -> None:
    # given the true expected rewards as the reward model
    log = many_logs[0]
    # when the direct method estimates the target
    report = ope.evaluate(log=log, **target(log), **perfect_model(log), n_boot=10)
    # then it is exactly the target's true value on these decisions
    assert report.estimates["dm"].value == pytest.approx(report.true_value, abs=1e-12)


def test_snips_converges_to_the_true_value_on_a_large_log():
    # given one large log
    log = as_log(simulate(40_000, patients=4_000, seed=7))
    # when SNIPS estimates the target
    report = ope.evaluate(log=log, **target(log), n_boot=50)
    # then it is close to the truth
    assert report.estimates["snips"].value == pytest.approx(report.true_value, abs=0.015)


def test_snips_of_a_constant_reward_is_that_constant_whatever_the_weights():
    # given a log whose every reward is 0.7, and weights far from 1
    log = logged(300, patients=30, seed=3)
    log.reward[:] = 0.7
    # when it is evaluated
    report = ope.evaluate(log=log, **target(log), n_boot=50)
    # then SNIPS and its whole interval are 0.7 while IPS is not
    snips = report.estimates["snips"]
    assert (snips.value, snips.low, snips.high) == pytest.approx((0.7, 0.7, 0.7))
    assert report.estimates["ips"].value != pytest.approx(0.7, abs=1e-3)
    assert report.max_weight > 2


def test_with_the_logging_policy_as_target_weights_are_one_and_ips_is_the_sample_mean():
    # given a log, and the logging policy's own probabilities as the target
    log = logged(500, patients=50, seed=4)
    # when it is evaluated
    report = ope.evaluate(log=log, target_avail=log.avail_prob, target_none=log.none_prob)
    # then every weight is 1 and both IPS and SNIPS are the mean logged reward
    assert report.max_weight == pytest.approx(1.0)
    assert report.ess == pytest.approx(500)
    assert report.estimates["ips"].value == pytest.approx(log.reward.mean())
    assert report.estimates["snips"].value == pytest.approx(log.reward.mean())


def test_estimate_returns_only_the_estimators_it_can_compute():
    # given a log
    log = logged(200, patients=20, seed=5)
    # when it is estimated without and with a reward model
    without = ope.estimate(log=log, **target(log), n_boot=20)
    with_model = ope.estimate(log=log, **target(log), **wrong_model(log), n_boot=20)
    # then the model-based estimators appear only with the model
    assert set(without) == {"ips", "snips"}
    assert set(with_model) == {"ips", "snips", "dm", "dr"}
    assert all(isinstance(v, ope.Interval) for v in with_model.values())


# intervals


def test_the_bootstrap_interval_covers_the_true_value_about_95_percent_of_the_time(
    many_logs: list[DecisionLog],
) -> None:
    # given 100 independent logs
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for log in many_logs[:100]:
        # when each is evaluated with a 95% interval
        report = ope.evaluate(log=log, **target(log), **wrong_model(log), seed=1)
        assert report.true_value is not None
        for name in covered:
            interval = report.estimates[name]
            covered[name] += interval.low <= report.true_value <= interval.high
    # then the intervals cover the truth in about 95 of them
    assert all(count >= 85 for count in covered.values()), covered


def test_the_interval_halves_when_the_log_is_four_times_longer():
    # given a log and one four times as long, from as many decisions per patient
    small = as_log(simulate(2_000, patients=200, seed=8))
    large = as_log(simulate(8_000, patients=800, seed=9))

    # when both are evaluated
    def width(log: DecisionLog) -> float:
        interval = ope.estimate(log=log, **target(log))["ips"]
        return interval.high - interval.low

    # then the interval is about half as wide (not merely wide enough to cover)
    assert 0.35 < width(large) / width(small) < 0.65


def test_resampling_by_patient_widens_the_interval_when_a_patients_rewards_are_correlated():
    # given few patients with many decisions each, and a strong per-patient reward effect
    log = as_log(simulate(2_000, patients=20, seed=10, noise_sd=0.1, patient_sd=1.0))
    # when the bootstrap resamples patients (the default) and, for comparison, decisions
    by_patient = ope.estimate(log=log, **target(log))["ips"]
    by_row = ope.estimate(log=log, **target(log), clusters=np.arange(len(log)))["ips"]
    # then the patient interval is much wider, as the correlation demands
    assert by_patient.high - by_patient.low > 2 * (by_row.high - by_row.low)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    log = logged(300, patients=30, seed=11)
    first = ope.estimate(log=log, **target(log), seed=1)["ips"]
    assert ope.estimate(log=log, **target(log), seed=1)["ips"] == first
    assert ope.estimate(log=log, **target(log), seed=2)["ips"] != first


# inputs


def test_decisions_without_a_reward_are_dropped():
    # given a log where every fifth decision has no reward
    sim = simulate(500, patients=50, seed=12)
    missing = np.arange(500) % 5 == 0
    log = from_records(as_records(sim, without_reward=missing))
    # when it is evaluated
    report = ope.evaluate(log=log, **target(log), **wrong_model(log))
    # then the result is that of the log without those decisions
    kept = log.select(np.flatnonzero(~missing))
    expected = ope.evaluate(log=kept, **target(kept), **wrong_model(kept))
    assert report.estimates == expected.estimates
    assert (report.n, report.dropped) == (400, 100)
    assert report.true_value == pytest.approx(expected.true_value)


def test_a_target_whose_probabilities_do_not_sum_to_one_is_refused():
    log = logged(50, patients=5, seed=13)
    policy = target(log)
    with pytest.raises(ValueError, match="sum to 1"):
        ope.estimate(
            log=log, target_avail=policy["target_avail"], target_none=policy["target_none"] * 2
        )


def test_a_reward_model_needs_both_its_parts():
    log = logged(50, patients=5, seed=13)
    with pytest.raises(ValueError, match="both"):
        ope.estimate(log=log, **target(log), q_avail=log.avail_true)


# helpers


def hand_log() -> DecisionLog:
    record = {"patient": "p", "time": TIME, "propensity": 0.5, "outcome": {"reward": 1.0}}
    return from_records(
        [
            {**record, "available": ["a", "b", "c"], "action": "b"},
            {**record, "available": ["c", "a"], "action": None},
            {**record, "available": ["c", "a", "b"], "action": "a"},
            {**record, "available": ["b"], "action": "b"},
        ]
    )


def test_logged_action_index_finds_actions_mid_segment_and_marks_no_nudge():
    # given decisions whose avail segments are [0, 3), [3, 5), [5, 8) and [8, 9)
    log = hand_log()
    # when the logged actions are located
    index = ope.logged_action_index(log)
    # then "b" of the first is entry 1, no nudge is -1, "a" of the third is entry 6
    assert index.tolist() == [1, -1, 6, 8]
    assert (log.avail[index[[0, 2, 3]]] == log.action[[0, 2, 3]]).all()


def test_true_value_is_the_mean_of_the_targets_expected_true_reward():
    # given two decisions with known true values
    log = from_records(
        [
            {
                "patient": "p",
                "time": TIME,
                "available": ["a", "b"],
                "action": "a",
                "propensity": 0.5,
                "true_values": {"a": 1.0, "b": 0.0, NONE: 0.5},
            },
            {
                "patient": "q",
                "time": TIME,
                "available": [],
                "action": None,
                "propensity": 1.0,
                "true_values": {NONE: 0.2},
            },
        ]
    )
    # when the target takes a, b, nothing with 0.5, 0.25, 0.25, then nothing
    value = ope.true_value(
        log=log, target_avail=np.array([0.5, 0.25]), target_none=np.array([0.25, 1.0])
    )
    # then the value is ((0.5 + 0 + 0.125) + 0.2) / 2
    assert value == pytest.approx(0.4125)


def test_true_value_is_none_for_a_log_without_true_values():
    log = hand_log()
    policy: dict[str, Any] = {
        "target_avail": np.zeros(len(log.avail)),
        "target_none": np.ones(len(log)),
    }
    assert ope.true_value(log=log, **policy) is None
    assert ope.evaluate(log=log, **policy, n_boot=5).true_value is None


def test_effective_sample_size_counts_equal_weights_fully_and_uneven_ones_less():
    assert ope.effective_sample_size(np.ones(10)) == pytest.approx(10)
    assert ope.effective_sample_size(np.array([1.0, 1.0, 2.0])) == pytest.approx(16 / 6)


def test_a_million_decisions_by_ten_thousand_patients_evaluate_with_200_resamples():
    # given a log of a million decisions
    log = as_log(simulate(1_000_000, patients=10_000, seed=14))
    # when it is evaluated with a reward model and 200 patient resamples
    report = ope.evaluate(log=log, **target(log), **wrong_model(log), n_boot=200)
    # then every estimator is close to the truth, inside a narrow interval
    assert report.n == 1_000_000
    for interval in report.estimates.values():
        assert interval.low < interval.value < interval.high
        assert interval.high - interval.low < 0.02
    assert report.estimates["dr"].value == pytest.approx(report.true_value, abs=0.01)
