"""Pure: a statistical audit of a built measurement (docs/privacy.md, "Audit"). Run it many
times on two neighbouring data sets D and D' (D' = D without one patient, the one who moves the
numbers most), count how often an event E happens on each, and bound epsilon from below with
Clopper-Pearson intervals:

    (epsilon, delta)-DP  =>  P[M(D) in E] <= e^epsilon P[M(D') in E] + delta
    so epsilon >= log((p_low - delta) / q_high)

where p_low and q_high are one-sided Clopper-Pearson bounds at alpha/2 each, so an honest
mechanism's lower bound passes its claim with probability at most alpha (a false alarm). E is
fixed before any run: the sum of the released cells the patient can move exceeds a threshold
(the best test for a Gaussian shift). OpenDP's noise cannot be seeded, so runs are random and
the false-alarm rate is what alpha says.

The claim audited is the (epsilon, delta) that the report's rho implies (OpenDP's conversion).
That conversion is loose for a Gaussian mechanism, so this audit catches gross faults (missing
contribution bounding, a wrong sensitivity by a factor of a few) rather than small
miscalibrations."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import beta

from privacy.dp.bounding import PATIENT
from privacy.dp.catalogue import ENGAGEMENT_REPORT, Public, ReportSpec, Sources
from privacy.dp.mechanism import Plan, plan_build
from privacy.dp.periods import Period


@dataclass(frozen=True)
class AuditResult:
    runs: int
    hits_d: int
    hits_d_prime: int
    p_low: float
    q_high: float
    epsilon_lower: float
    epsilon_claimed: float
    delta: float

    @property
    def passed(self) -> bool:
        """No evidence of more privacy loss than claimed."""
        return self.epsilon_lower <= self.epsilon_claimed


def clopper_pearson(hits: int, runs: int, alpha: float) -> tuple[float, float]:
    """One-sided bounds at level alpha each: P(p < low) <= alpha and P(p > high) <= alpha."""
    low = 0.0 if hits == 0 else float(beta.ppf(alpha, hits, runs - hits + 1))
    high = 1.0 if hits == runs else float(beta.ppf(1 - alpha, hits + 1, runs - hits))
    return low, high


def epsilon_lower_bound(
    hits_d: int, hits_d_prime: int, runs: int, *, delta: float, alpha: float
) -> tuple[float, float, float]:
    p_low, _ = clopper_pearson(hits_d, runs, alpha / 2)
    _, q_high = clopper_pearson(hits_d_prime, runs, alpha / 2)
    if p_low <= delta:
        return 0.0, p_low, q_high
    return max(0.0, math.log((p_low - delta) / q_high)), p_low, q_high


def audit_run(
    sample: Callable[[pl.LazyFrame], float],
    d: pl.LazyFrame,
    d_prime: pl.LazyFrame,
    *,
    threshold: float,
    runs: int,
    epsilon_claimed: float,
    delta: float,
    alpha: float,
) -> AuditResult:
    hits_d = sum(sample(d) > threshold for _ in range(runs))
    hits_d_prime = sum(sample(d_prime) > threshold for _ in range(runs))
    lower, p_low, q_high = epsilon_lower_bound(hits_d, hits_d_prime, runs, delta=delta, alpha=alpha)
    return AuditResult(runs, hits_d, hits_d_prime, p_low, q_high, lower, epsilon_claimed, delta)


# The standard scenario: the engagement report, a small cohort, and one heavy patient ---------

AUDIT_PERIOD = Period(2025, 2)  # four whole weeks
AUDIT_PUBLIC = Public(
    groups=("copd", "depression", "hypertension"),
    age_bands=("45-59",),
    sexes=("female",),
    goals=("activity",),
    outcomes=("approved",),
)
HEAVY = "heavy"
NUDGES_PER_DAY = 3  # the engine's daily cap: the heaviest a real patient can be


@dataclass(frozen=True)
class Scenario:
    spec: ReportSpec
    plan: Plan
    with_patient: Sources
    without_patient: Sources
    cells: pl.Expr  # which released rows the heavy patient can move
    cell_count: int
    base: float  # the exact sum of those cells without the heavy patient
    shift: float  # how much the heavy patient adds to that sum, within the bounds

    def statistic(self, microdata: pl.LazyFrame) -> float:
        """One run of the measurement, reduced to the audited sum (post-processing)."""
        released = self.plan.measurement(microdata).collect()
        return float(released.filter(self.cells)["patients"].sum())


def audit_scenario(*, budget_nanorho: int, background: int = 40, seed: int = 7) -> Scenario:
    """D: `background` patients with a few nudges each, plus one patient in every group with
    NUDGES_PER_DAY nudges every day, acted on, dismissed and ignored. D': the same without
    that patient."""
    rng = np.random.default_rng(seed)
    period = AUDIT_PERIOD
    start = period.start.timestamp()
    days = (period.next_first_day - period.first_day).days
    rows = []
    for i in range(background):
        for _ in range(int(rng.integers(1, 6))):
            at = start + float(rng.uniform(0, days * 86400))
            state = str(rng.choice(["done", "dismissed", "delivered"]))
            rows.append((f"p{i}", at, state))
    heavy = [
        (HEAVY, start + day * 86400 + 3600 * (8 + k), ("done", "dismissed", "delivered")[k % 3])
        for day in range(days)
        for k in range(NUDGES_PER_DAY)
    ]
    patients = [f"p{i}" for i in range(background)]

    def sources(extra: list) -> Sources:
        deliveries = pl.DataFrame(
            rows + extra, schema=[PATIENT, "at", "state"], orient="row"
        ).select(
            PATIENT,
            pl.from_epoch(pl.col("at"), time_unit="s")
            .dt.replace_time_zone("UTC")
            .alias("delivered_at"),
            "state",
            goal=pl.lit("activity"),
        )
        members = [(p, AUDIT_PUBLIC.groups[j % 3]) for j, p in enumerate(patients)]
        ids = patients + ([HEAVY] if extra else [])
        if extra:
            members += [(HEAVY, group) for group in AUDIT_PUBLIC.groups]
        return Sources.of(
            patients=pl.DataFrame({PATIENT: ids, "age_band": "45-59", "sex": "female"}),
            memberships=pl.DataFrame(members, schema=[PATIENT, "group"], orient="row"),
            deliveries=deliveries,
        )

    spec = ENGAGEMENT_REPORT
    plan = plan_build(spec, period, AUDIT_PUBLIC, budget_nanorho=budget_nanorho)
    with_patient, without_patient = sources(heavy), sources([])
    cells = pl.col("group").is_in(AUDIT_PUBLIC.groups)
    exact = plan.exact(spec.microdata(without_patient, period, AUDIT_PUBLIC, salt=1))
    base = float(exact.filter(cells)["patients"].sum())
    exact_with = plan.exact(spec.microdata(with_patient, period, AUDIT_PUBLIC, salt=1))
    shift = float(exact_with.filter(cells)["patients"].sum()) - base
    count = exact.filter(cells).height
    return Scenario(spec, plan, with_patient, without_patient, cells, count, base, shift)


def audit_threshold(scenario: Scenario, *, z: float = 2.5) -> float:
    """Fixed before any run: z standard deviations of the statistic's noise above its value
    on D'. (The statistic sums num_groups cells, each with noise of the plan's scale.)"""
    (aggregate,) = scenario.plan.aggregates
    return scenario.base + z * aggregate.scale * math.sqrt(scenario.cell_count)
