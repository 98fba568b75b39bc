"""The DP reports' mechanism, without the database: every report's charge and noise scale
against formulas derived by hand, the sensitivity against neighbouring data sets, contribution
bounding, periods, budgets and the interval of a mean."""

import datetime as dt
import math

import numpy as np
import opendp.prelude as dp
import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nudges import measures
from privacy.dp.accounting import NANO, BudgetError, epsilon_at, nanorho_parse
from privacy.dp.bounding import PATIENT, cells_per_patient, contributions_bound
from privacy.dp.catalogue import REPORTS, Public, Sources
from privacy.dp.mechanism import plan_build
from privacy.dp.periods import Period, PeriodError, period_parse
from privacy.dp.results import ratio_interval

PUBLIC = Public(
    groups=("copd", "depression", "heart-failure", "hypertension", "pregnancy"),
    age_bands=("18-29", "30-44", "45-59", "60-74", "75+"),
    sexes=("female", "male", "other", "unknown"),
    goals=measures.GOALS,
    outcomes=("pending", "approved", "rejected", "expired", "acknowledged", "withdrawn"),
)
# Weeks (Monday to Sunday, cut at the month's edges) counted on a calendar by hand.
WEEKS = {Period(2025, 2): 5, Period(2025, 3): 6, Period(2027, 2): 4}


def hand_sensitivities(name: str, weeks: int) -> dict[str, float]:
    """L2 sensitivity per released column: rows per cell x value bound x sqrt(cells)."""
    return {
        "engagement": {"patients": math.sqrt(3 * weeks * 3)},
        "acceptance": {"patients": 1.0, "rate_sum": 1000.0},
        "health_change": {"patients": math.sqrt(4), "change_sum": 2000 * math.sqrt(4)},
        "review_outcomes": {"requests": 2 * math.sqrt(4)},
    }[name]


@pytest.mark.parametrize("name", list(REPORTS))
@pytest.mark.parametrize("period", list(WEEKS))
@pytest.mark.parametrize("budget", [0.01, 0.25, 2.0])
def test_every_report_charges_its_budget_and_scales_its_noise_as_derived_by_hand(
    name, period, budget
):
    sensitivities = hand_sensitivities(name, WEEKS[period])
    share = 1 / len(sensitivities)  # the budget is split evenly between a report's numbers

    plan = plan_build(REPORTS[name], period, PUBLIC, budget_nanorho=round(budget * NANO))

    scales = {a.column: a.scale for a in plan.aggregates}
    assert set(scales) == set(sensitivities)
    for column, delta in sensitivities.items():
        assert scales[column] == pytest.approx(delta / math.sqrt(2 * share * budget), rel=1e-8)
    # Gaussian mechanism under zCDP: rho = sensitivity^2 / (2 scale^2), summed over columns.
    by_hand = sum(delta**2 / (2 * scales[c] ** 2) for c, delta in sensitivities.items())
    assert plan.rho == pytest.approx(by_hand, rel=1e-9)
    assert plan.rho <= budget
    assert plan.charged_nanorho == round(budget * NANO)


@pytest.mark.parametrize("name", list(REPORTS))
def test_every_half_width_is_the_discrete_gaussian_quantile_of_its_scale(name):
    plan = plan_build(REPORTS[name], Period(2025, 3), PUBLIC, budget_nanorho=NANO // 10)
    alpha = REPORTS[name].alpha
    z = {0.05: 1.959964, 0.025: 2.241403}[alpha]

    for a in plan.aggregates:
        assert a.accuracy == dp.discrete_gaussian_scale_to_accuracy(a.scale, alpha)
        assert abs(a.accuracy - z * a.scale) <= 1.5


# Neighbouring data sets ---------------------------------------------------------------------

PERIOD = Period(2025, 3)
WORST = "worst"


def _at(day: int, hour: int = 9) -> dt.datetime:
    return dt.datetime(2025, 3, day, hour, tzinfo=dt.UTC)


def _background(rng: np.random.Generator, n: int = 40) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in ("patients", "memberships", "deliveries", "events")}
    rows["reviews"] = []
    for i in range(n):
        pid = f"p{i}"
        rows["patients"].append((pid, PUBLIC.age_bands[i % 5], PUBLIC.sexes[i % 4]))
        if i % 3:
            rows["memberships"].append((pid, PUBLIC.groups[i % 5]))
        for _ in range(int(rng.integers(1, 8))):
            day = int(rng.integers(1, 32))
            goal = measures.GOALS[int(rng.integers(0, 7))]
            state = ("done", "dismissed", "expired")[int(rng.integers(0, 3))]
            rows["deliveries"].append((pid, _at(day), state, goal))
        for day in range(1, 32):
            goal = measures.GOALS[i % 7]
            value = float(rng.normal(10, 2)) * measures.MEASURES[goal].scale
            rows["events"].append((pid, measures.MEASURES[goal].kind, value, _at(day, 20)))
        if i % 4 == 0:
            outcome = PUBLIC.outcomes[i % 6]
            rows["reviews"].append((pid, _at(10), outcome, PUBLIC.groups[i % 5]))
    return rows


def _worst_patient() -> dict[str, list]:
    """In every group, three nudges every day (two acted on, one dismissed: near the
    acceptance report's maximum), nudges for all seven goals with huge changes of their
    measures, and many review requests in every group and outcome."""
    rows: dict[str, list] = {
        "patients": [(WORST, "60-74", "male")],
        "memberships": [(WORST, g) for g in PUBLIC.groups],
        "deliveries": [],
        "events": [],
        "reviews": [],
    }
    for day in range(1, 32):
        for k, state in enumerate(("done", "dismissed", "done")):
            goal = measures.GOALS[(day + k) % 7]
            rows["deliveries"].append((WORST, _at(day, 8 + k), state, goal))
        for measure in measures.MEASURES.values():
            level = 0.0 if day <= 15 else 50 * measure.scale
            rows["events"].append((WORST, measure.kind, level, _at(day, 21)))
    for goal in measures.GOALS:
        rows["deliveries"] += [(WORST, _at(15, 22), "done", goal)]
    for group in PUBLIC.groups:
        for outcome in PUBLIC.outcomes:
            rows["reviews"] += [(WORST, _at(day), outcome, group) for day in range(3, 9)]
    return rows


def _sources(rows: dict[str, list]) -> Sources:
    from privacy.dp.catalogue import SCHEMAS

    return Sources.of(
        **{
            name: pl.DataFrame(rows[name], schema=list(SCHEMAS[name]), orient="row")
            for name in SCHEMAS
        }
    )


def _neighbours() -> tuple[Sources, Sources]:
    background = _background(np.random.default_rng(5))
    worst = _worst_patient()
    with_worst = {k: background[k] + worst[k] for k in background}
    return _sources(with_worst), _sources(background)


def _l2(a: pl.DataFrame, b: pl.DataFrame, column: str) -> float:
    diff = (a[column].cast(pl.Float64) - b[column].cast(pl.Float64)).to_numpy()
    return float(np.sqrt((diff**2).sum()))


@pytest.mark.parametrize("name", list(REPORTS))
def test_exact_aggregates_without_the_worst_case_patient_differ_by_at_most_the_sensitivity(name):
    spec = REPORTS[name]
    plan = plan_build(spec, PERIOD, PUBLIC, budget_nanorho=NANO)
    with_worst, without = _neighbours()

    exact_d = plan.exact(spec.microdata(with_worst, PERIOD, PUBLIC, salt=11))
    exact_d_prime = plan.exact(spec.microdata(without, PERIOD, PUBLIC, salt=11))

    for a in plan.aggregates:
        moved = _l2(exact_d, exact_d_prime, a.column)
        assert moved <= a.sensitivity + 1e-9
        # The patient is a worst case: they move the numbers by most of what is allowed.
        assert moved >= 0.5 * a.sensitivity


@pytest.mark.parametrize("name", ["engagement", "health_change", "review_outcomes"])
def test_without_contribution_bounding_the_worst_case_patient_exceeds_the_sensitivity(name):
    spec = REPORTS[name]
    plan = plan_build(spec, PERIOD, PUBLIC, budget_nanorho=NANO)
    with_worst, without = _neighbours()

    def unbounded(sources: Sources) -> pl.LazyFrame:
        return spec.without_patient(spec.rows(sources, PERIOD, PUBLIC, 11))

    (counted, *_) = plan.aggregates
    moved = _l2(plan.exact(unbounded(with_worst)), plan.exact(unbounded(without)), counted.column)
    assert moved > counted.sensitivity


def test_patients_without_research_consent_never_reach_the_aggregates():
    with_worst, without = _neighbours()
    # The worst-case patient's rows stay in every source; only their consent is gone.
    not_consenting = Sources.of(
        patients=with_worst.patients.filter(pl.col(PATIENT) != WORST),
        memberships=with_worst.memberships,
        deliveries=with_worst.deliveries,
        events=with_worst.events,
        reviews=with_worst.reviews,
    )

    for name, report in REPORTS.items():
        exact = plan_build(report, PERIOD, PUBLIC, budget_nanorho=NANO).exact
        assert exact(report.microdata(not_consenting, PERIOD, PUBLIC, salt=3)).equals(
            exact(report.microdata(without, PERIOD, PUBLIC, salt=3))
        ), name


# Contribution bounding ----------------------------------------------------------------------

rows_strategy = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=120
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, per_group=st.integers(1, 3), num_groups=st.integers(1, 4))
def test_after_bounding_no_patient_exceeds_the_bounds_and_others_rows_do_not_change(
    rows, per_group, num_groups
):
    frame = pl.DataFrame(
        [(f"p{p}", f"a{a}", f"b{b}") for p, a, b in rows],
        schema=[PATIENT, "a", "b"],
        orient="row",
    )

    def bound(f: pl.DataFrame) -> pl.DataFrame:
        return contributions_bound(
            f.lazy(), keys=["a", "b"], per_group=per_group, num_groups=num_groups, salt=99
        ).collect()

    bounded = bound(frame)
    counts = cells_per_patient(bounded, ["a", "b"])
    assert (counts["most_in_a_cell"] <= per_group).all()
    assert (counts["cells"] <= num_groups).all()
    # Removing one patient leaves everyone else's bounded rows as they were.
    removed = frame[PATIENT][0]
    rest = bound(frame.filter(pl.col(PATIENT) != removed))
    kept = bounded.filter(pl.col(PATIENT) != removed)
    assert sorted(rest.rows()) == sorted(kept.rows())


# Periods and budgets ------------------------------------------------------------------------


@pytest.mark.parametrize("period", list(WEEKS))
def test_every_day_of_a_period_falls_in_one_of_its_public_weeks(period):
    days = [period.first_day + dt.timedelta(days=i) for i in range(period.last_day.day)]
    frame = pl.DataFrame(
        {"at": [dt.datetime.combine(d, dt.time(23, 59), tzinfo=dt.UTC) for d in days]}
    )

    weeks = frame.select(period.week_of("at"))["at"].to_list()

    assert len(period.weeks) == WEEKS[period]
    assert set(weeks) == set(period.weeks)
    assert weeks == sorted(weeks)
    assert all(dt.date.fromisoformat(w) <= d for w, d in zip(weeks, days, strict=True))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2025-13", "YYYY-MM"),
        ("march", "YYYY-MM"),
        ("2023-12", "no reports before"),
        ("2026-12", "has not begun"),
    ],
)
def test_a_period_that_is_malformed_too_early_or_not_begun_is_refused(text, problem):
    with pytest.raises(PeriodError, match=problem):
        period_parse(text, today=dt.date(2026, 11, 5), first="2024-01")


def test_the_current_month_is_a_period():
    assert period_parse("2026-11", today=dt.date(2026, 11, 5), first="2024-01").label == "2026-11"


@pytest.mark.parametrize("value", ["0", "-0.1", "abc", "nan", "inf", "0.0000000001", ""])
def test_a_budget_that_is_not_a_positive_number_is_refused(value):
    with pytest.raises(BudgetError):
        nanorho_parse(value)


def test_budgets_are_whole_nano_rho():
    assert nanorho_parse("0.1") == 100_000_000
    assert nanorho_parse(0.25) == 250_000_000
    assert nanorho_parse("1e-9") == 1


def test_epsilon_at_delta_is_within_the_textbook_bound():
    for rho in (0.01, 0.1, 1.0):
        textbook = rho + 2 * math.sqrt(rho * math.log(1e6))
        assert rho < epsilon_at(rho, 1e-6) <= textbook


# The interval of a mean ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n_lo=st.floats(-50, 50),
    n_width=st.floats(0, 40),
    d_lo=st.floats(-5, 60),
    d_width=st.floats(0, 40),
    data=st.data(),
)
def test_the_mean_lies_in_the_interval_whenever_both_parts_lie_in_theirs(
    n_lo, n_width, d_lo, d_width, data
):
    d_candidates = [d for d in range(max(1, math.ceil(d_lo)), math.floor(d_lo + d_width) + 1)]
    if not d_candidates:
        return
    d = data.draw(st.sampled_from(d_candidates))
    # A true numerator is a sum of d values in [-2, 2] and within its interval.
    lowest, highest = max(n_lo, -2 * d), min(n_lo + n_width, 2 * d)
    assume(lowest <= highest)
    n = data.draw(st.floats(lowest, highest))

    low, high = ratio_interval((n_lo, n_lo + n_width), (d_lo, d_lo + d_width), low=-2, high=2)

    assert low - 1e-12 <= n / d <= high + 1e-12


def test_a_mean_whose_denominator_may_be_zero_gets_the_whole_range():
    assert ratio_interval((3, 9), (-2, 6), low=0, high=1) == (0, 1)


def test_a_mean_interval_from_two_intervals_by_hand():
    # N in [40, 60], D in [80, 100]: N/D in [0.4, 0.75].
    assert ratio_interval((40, 60), (80, 100), low=0, high=1) == (0.4, 0.75)
