"""Offline evaluation (nudges/offline.py) and its commands (simulate, evaluate_policy,
simulation_study) on small simulated worlds. Pure: no database."""

import json
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from nudges import offline, ope
from nudges import simulator as sim
from nudges.decision_log import DecisionLog, from_records, iter_lines, read_lines
from nudges.recommender import ModelBundle

PATIENTS, DAYS = 150, 20
FLUIDS = ("water-with-meals", "refill-bottle", "hydration-target", "morning-glass")


@pytest.fixture(autouse=True)
def catalogue() -> None:
    """Overrides the conftest fixture that loads the catalogue: these tests need no database."""


@pytest.fixture(scope="module")
def setup() -> offline.SimSetup:
    return offline.world_from_cohort(PATIENTS, 1)


@pytest.fixture(scope="module")
def bundle(setup: offline.SimSetup) -> ModelBundle:
    return offline.train_on_baseline(setup, days=DAYS, seed=1002).bundle


@pytest.fixture(scope="module")
def explore_log(setup: offline.SimSetup) -> DecisionLog:
    run = offline.run_policy(setup, "explore:0.2", days=DAYS, seed=4, record=True)
    assert run.records is not None
    return from_records(run.records)


@pytest.fixture(scope="module")
def explore_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "explore.jsonl"
    call_command(
        "simulate",
        "--patients=200",
        "--days=20",
        "--seed=5",
        "--policy=explore:0.2",
        f"--out={path}",
        verbosity=0,
        stdout=_Sink(),
    )
    return path


class _Sink:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def steps_of(setup: offline.SimSetup, policy: sim.Policy, *, days: int = 6) -> list[sim.Step]:
    steps: list[sim.Step] = []
    sim.simulate(
        setup.world, policy, days=days, seed=7, allowed=setup.allowed, on_step=steps.append
    )
    return steps


def slug_column(setup: offline.SimSetup, slug: str) -> int:
    return [k.split("@")[0] for k in setup.keys].index(slug)


# The world ----------------------------------------------------------------------------------


def test_safety_mask_excludes_fluid_nudges_for_heart_failure_and_allows_all_without_groups(
    setup: offline.SimSetup,
) -> None:
    # given the demo world built with the shipped rule set
    cohort = setup.world.cohort
    heart_failure = cohort.groups[:, cohort.group_names.index("heart-failure")]
    no_groups = ~cohort.groups.any(axis=1)
    assert heart_failure.any() and no_groups.any()
    # when / then: the fluid nudges (blocked for heart failure) are never candidates for them
    for slug in FLUIDS:
        assert not setup.allowed[heart_failure, slug_column(setup, slug)].any()
    # and a patient in no medical group has no rule against any template
    assert setup.allowed[no_groups].all()


# Policies in the simulator ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["baseline", "oracle", "never", "explore:0.3", "agenda", "engagement"]
)
def test_simulator_policies_give_valid_probabilities_over_candidates_only(
    setup: offline.SimSetup, bundle: ModelBundle, name: str
) -> None:
    # given a named policy
    policy = offline.sim_policy(name, setup.world, setup.keys, setup.schema, bundle)
    # when it runs in the simulator
    steps = steps_of(setup, policy)
    # then every row is a distribution over that row's candidates and no nudge
    for step in steps:
        probs, mask = step.probabilities, step.obs.mask
        assert (probs >= 0).all()
        assert np.allclose(probs.sum(axis=1), 1.0)
        assert (probs[:, :-1][~mask] == 0).all()


def test_always_picks_only_its_template_and_picks_it_whenever_it_is_a_candidate(
    setup: offline.SimSetup,
) -> None:
    # given "always" on a template many patients have on their agenda
    column = slug_column(setup, "walk-after-dinner")
    policy = offline.sim_policy(
        f"always:{setup.keys[column]}", setup.world, setup.keys, setup.schema
    )
    # when it runs
    steps = steps_of(setup, policy)
    # then it sends that template at every point where it is a candidate, and nothing else
    m = len(setup.keys)
    for step in steps:
        candidate = step.obs.mask[:, column]
        assert (step.action[candidate] == column).all()
        assert (step.action[~candidate] == m).all()
    assert any(step.obs.mask[:, column].any() for step in steps)


def test_explore_gives_every_candidate_at_least_its_uniform_share(
    setup: offline.SimSetup,
) -> None:
    # given the baseline mixed with a uniform choice at weight 0.2
    policy = offline.sim_policy("explore:0.2", setup.world, setup.keys, setup.schema)
    # when it runs, then each candidate and no nudge get at least 0.2 / (candidates + 1)
    for step in steps_of(setup, policy, days=3):
        valid = np.concatenate([step.obs.mask, np.ones((len(step.obs.rows), 1), bool)], axis=1)
        share = 0.2 / valid.sum(axis=1, keepdims=True)
        assert (
            step.probabilities[valid] >= np.broadcast_to(share, valid.shape)[valid] - 1e-12
        ).all()


@pytest.mark.parametrize(
    "name", ["nope", "always:no-such-template@1", "explore:2", "explore:x", "baseline:1"]
)
def test_unknown_simulator_policies_are_refused(setup: offline.SimSetup, name: str) -> None:
    with pytest.raises(offline.PolicyError):
        offline.sim_policy(name, setup.world, setup.keys, setup.schema)


def test_model_policies_need_a_model(setup: offline.SimSetup) -> None:
    with pytest.raises(offline.PolicyError, match="needs a trained model"):
        offline.sim_policy("agenda", setup.world, setup.keys, setup.schema)


# Target policies on a log -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["current", "engagement", "baseline", "never", "always:first"])
def test_log_policy_rows_sum_to_one_at_every_decision(
    setup: offline.SimSetup, bundle: ModelBundle, explore_log: DecisionLog, name: str
) -> None:
    # given a simulated log and a target policy
    name = name.replace("first", explore_log.actions[0])
    # when its probabilities are computed at every decision
    target_avail, target_none = offline.log_policy(name, explore_log, setup.schema, bundle)
    # then they are non-negative and sum to 1 per decision
    assert target_avail.shape == explore_log.avail.shape
    assert (target_avail >= 0).all() and (target_none >= 0).all()
    totals = np.bincount(
        explore_log.decision_index(), weights=target_avail, minlength=len(explore_log)
    )
    assert np.allclose(totals + target_none, 1.0)


def test_always_on_a_log_puts_all_mass_on_its_action_where_available(
    setup: offline.SimSetup, explore_log: DecisionLog
) -> None:
    key = explore_log.actions[2]
    target_avail, target_none = offline.log_policy(f"always:{key}", explore_log, setup.schema)
    code = explore_log.actions.index(key)
    assert (target_avail[explore_log.avail == code] == 1).all()
    assert (target_avail[explore_log.avail != code] == 0).all()
    available = np.bincount(
        explore_log.decision_index(),
        weights=(explore_log.avail == code).astype(float),
        minlength=len(explore_log),
    )
    assert (target_none == 1 - available).all()


def test_baseline_on_a_baseline_log_reproduces_the_logged_probabilities(
    setup: offline.SimSetup,
) -> None:
    # given the log of a baseline run
    run = offline.run_policy(setup, "baseline", days=DAYS, seed=3, record=True)
    assert run.records is not None
    log = from_records(run.records)
    # when the baseline is recomputed from the log alone (popularity refreshed daily)
    target_avail, target_none = offline.log_policy("baseline", log, setup.schema)
    # then it is the policy that ran
    assert np.allclose(target_avail, np.nan_to_num(log.avail_prob), atol=1e-9)
    assert np.allclose(target_none, log.none_prob, atol=1e-9)


@pytest.mark.parametrize("name", ["nope", "always:no-such-template@1", "oracle", "explore:0.1"])
def test_unknown_log_policies_are_refused(
    setup: offline.SimSetup, explore_log: DecisionLog, name: str
) -> None:
    with pytest.raises(offline.PolicyError):
        offline.log_policy(name, explore_log, setup.schema)


# The reward model and cross-fitting ---------------------------------------------------------


def test_reward_model_predicts_nothing_for_no_nudge_when_no_nudge_earned_nothing(
    setup: offline.SimSetup, explore_log: DecisionLog
) -> None:
    # given a simulated log, where no nudge earns 0 by definition
    assert (explore_log.reward[explore_log.action < 0] == 0).all()
    features = offline.log_pair_features(explore_log, setup.schema)
    # when the reward model is fitted on it
    q = offline.reward_model(
        explore_log,
        setup.schema,
        train_rows=np.arange(len(explore_log)),
        seed=1,
        features=features,
    )
    q_avail, q_none = q(features.pairs, features.none)
    # then q(none) is 0 and q of the nudges tracks their true expected reward
    assert q.none is None and (q_none == 0).all()
    assert np.corrcoef(q_avail, explore_log.avail_true)[0, 1] > 0.5


def test_patient_folds_put_each_patient_in_exactly_one_fold() -> None:
    patients = np.array([f"p{i % 37}" for i in range(1000)], dtype=object)
    fold = offline.patient_folds(patients, 4, seed=3)
    for patient in np.unique(patients):
        assert len(set(fold[patients == patient])) == 1
    per_fold = [len(set(patients[fold == f])) for f in range(4)]
    assert sorted(per_fold) == [9, 9, 9, 10]


def test_cross_fit_fits_each_fold_on_the_other_patients_only(
    setup: offline.SimSetup,
    explore_log: DecisionLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the reward model watched for the rows it is fitted on
    fitted_on: list[np.ndarray] = []
    real = offline.reward_model

    def watched(*args, **kwargs):
        fitted_on.append(kwargs["train_rows"])
        return real(*args, **kwargs)

    monkeypatch.setattr(offline, "reward_model", watched)
    # when the log is cross-fitted with 3 folds
    fit = offline.cross_fit(explore_log, setup.schema, 3, policy="baseline", seed=2)
    # then the folds are the patient folds, and fold f's model never saw fold f's patients
    assert (fit.fold == offline.patient_folds(explore_log.patients, 3, seed=2)).all()
    assert len(fitted_on) == 3
    for f, rows in enumerate(fitted_on):
        held = set(explore_log.patients[fit.fold == f])
        assert held and not held & set(explore_log.patients[rows])
    # and every decision got its values
    assert np.isfinite(fit.q_avail).all() and (fit.q_avail != 0).any()


def test_cross_fit_needs_two_folds(setup: offline.SimSetup, explore_log: DecisionLog) -> None:
    with pytest.raises(offline.PolicyError, match="at least 2 folds"):
        offline.cross_fit(explore_log, setup.schema, 1, policy="baseline")


# The commands -------------------------------------------------------------------------------


def test_simulate_writes_a_valid_log_with_true_values(tmp_path: Path) -> None:
    # given an output path
    out = tmp_path / "baseline.jsonl"
    sink = _Sink()
    # when the baseline is simulated
    call_command(
        "simulate",
        "--patients=60",
        "--days=10",
        "--seed=3",
        "--policy=baseline",
        f"--out={out}",
        stdout=sink,
    )
    # then the log reads back and carries true values, and the summary describes the run
    log = read_lines(iter_lines(out))
    summary = json.loads(sink.text)
    assert log.has_true_values and len(log) == summary["decisions"] > 0
    assert summary["horizon_value"] > 0 and 0 < summary["retention"] <= 1
    expected = np.nan_to_num(log.avail_prob * log.avail_true).sum() / len(log)
    assert summary["one_step_value"] == pytest.approx(expected, rel=1e-6)


def test_simulate_refuses_an_unknown_policy(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="unknown action"):
        call_command("simulate", "--patients=10", "--policy=always:nope", f"--out={tmp_path / 'x'}")


def test_evaluate_policy_writes_the_estimates_and_the_true_value(
    explore_file: Path, tmp_path: Path
) -> None:
    # given a simulated log of an exploring baseline
    out = tmp_path / "baseline.json"
    # when the baseline is evaluated on it
    call_command(
        "evaluate_policy",
        f"--decisions={explore_file}",
        "--policy=baseline",
        "--bootstrap=50",
        f"--json={out}",
        stdout=_Sink(),
    )
    # then the JSON has every estimator with an interval, and the true value
    result = json.loads(out.read_text())
    assert result["policy"] == "baseline" and result["n"] > 0
    assert set(result["estimates"]) == {"ips", "snips", "dm", "dr"}
    for interval in result["estimates"].values():
        assert interval["low"] <= interval["value"] <= interval["high"]
    assert result["true_value"] > 0
    assert result["estimates"]["snips"]["value"] == pytest.approx(result["true_value"], rel=0.2)


@pytest.mark.slow
def test_evaluate_policy_cross_fits_the_current_policy_by_patient(
    explore_file: Path, tmp_path: Path
) -> None:
    # given a simulated log and no model
    out = tmp_path / "current.json"
    # when the current policy is evaluated with 2-fold cross-fitting
    call_command(
        "evaluate_policy",
        f"--decisions={explore_file}",
        "--policy=current",
        "--cross-fit=2",
        "--bootstrap=50",
        f"--json={out}",
        stdout=_Sink(),
    )
    # then the policy model was trained per fold and the report has the true value
    result = json.loads(out.read_text())
    assert result["model"] == "trained per fold (cross-fit)"
    assert result["reward_model"] == "cross-fitted by patient, 2 folds"
    assert result["true_value"] > 0 and result["estimates"]["dr"]["value"] > 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--policy=nope"], "unknown policy"),
        (["--policy=always:no-such-template@1"], "unknown action"),
        (["--policy=baseline", "--cross-fit=1"], "K >= 2"),
    ],
)
def test_evaluate_policy_refuses_bad_arguments(
    explore_file: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command(
            "evaluate_policy",
            f"--decisions={explore_file}",
            f"--json={tmp_path / 'out.json'}",
            *arguments,
        )


def test_evaluate_policy_refuses_a_bad_log_naming_the_line(
    explore_file: Path, tmp_path: Path
) -> None:
    # given a log whose second line is broken
    lines = explore_file.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(lines[0] + b'{"patient": "x"}\n' + lines[2])
    # when / then it is refused with the line's number and reason
    with pytest.raises(CommandError, match="line 2: missing field"):
        call_command(
            "evaluate_policy",
            f"--decisions={bad}",
            "--policy=baseline",
            f"--json={tmp_path / 'out.json'}",
        )


@pytest.mark.slow
def test_simulation_study_quick_writes_the_report(tmp_path: Path) -> None:
    # given the quick study
    out, raw = tmp_path / "evaluation.md", tmp_path / "evaluation.json"
    # when it runs
    call_command("simulation_study", "--quick", f"--out={out}", f"--json={raw}", stdout=_Sink())
    # then the report has the online and off-policy tables and the targets
    text = out.read_text()
    for heading in ("## Protocol", "## Results in the simulator", "## Off-policy evaluation"):
        assert heading in text
    result = json.loads(raw.read_text())
    assert [s["seed"] for s in result["seeds"]] == list(offline.QUICK.seeds)
    for s in result["seeds"]:
        online = s["online"]
        assert online["never"]["horizon_value"] == 0
        assert online["oracle"]["horizon_value"] > online["baseline"]["horizon_value"]
        for target in offline.OPE_TARGETS:
            assert s["ope"][target]["true_value"] > 0


def test_ope_true_value_of_never_is_zero(setup: offline.SimSetup, explore_log: DecisionLog) -> None:
    target_avail, target_none = offline.log_policy("never", explore_log, setup.schema)
    assert ope.true_value(log=explore_log, target_avail=target_avail, target_none=target_none) == 0
