"""Pure: the report catalogue. Each report says what one patient contributes (its rows, after
consent and the period filter), how those rows are bounded, which public key sets it is
grouped by, and which aggregates it releases. The privacy unit is one patient throughout;
wherever the question allows, a report counts patients rather than events, since an event
count's sensitivity grows with the number of events one patient may have.

Values that are summed are integers in fixed point (thousandths), so every released number
is an integer aggregate with an exact sensitivity (no floating-point sums)."""

import datetime as dt
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from nudges import measures
from nudges.simlog import DELTA_AFTER, DELTA_BEFORE
from privacy.dp.bounding import PATIENT, contributions_bound
from privacy.dp.periods import Period

NO_GROUP = "none"  # the key of patients in no medical group
GROUPS_PER_PATIENT = 3  # medical groups kept per patient (a salted choice among more)
ACTED, DISMISSED = "done", "dismissed"  # nudges.models.DeliveryState values
ENGAGEMENT = ("delivered", "acted_on", "dismissed")
MILLI = 1000
HEALTH_CLIP = 2.0  # standard units of the goal's measure (nudges.measures)


@dataclass(frozen=True)
class Public:
    """The public key sets, known without looking at any patient's data: configuration and
    the models' choices."""

    groups: tuple[str, ...]
    age_bands: tuple[str, ...]
    sexes: tuple[str, ...]
    goals: tuple[str, ...]
    outcomes: tuple[str, ...]


SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "patients": {PATIENT: pl.Categorical(), "age_band": pl.String(), "sex": pl.String()},
    "memberships": {PATIENT: pl.Categorical(), "group": pl.String()},
    "deliveries": {
        PATIENT: pl.Categorical(),
        "delivered_at": pl.Datetime("us", "UTC"),
        "state": pl.String(),
        "goal": pl.String(),
    },
    "events": {
        PATIENT: pl.Categorical(),
        "kind": pl.String(),
        "value": pl.Float64(),
        "occurred_at": pl.Datetime("us", "UTC"),
    },
    "reviews": {
        PATIENT: pl.Categorical(),
        "created_at": pl.Datetime("us", "UTC"),
        "state": pl.String(),
        "group": pl.String(),
    },
}


@dataclass(frozen=True)
class Sources:
    """The raw rows a report may read. `patients` are the patients who consent to research
    reporting; every other frame is cut down to them here as well, whatever its loader did."""

    patients: pl.DataFrame
    memberships: pl.DataFrame
    deliveries: pl.DataFrame
    events: pl.DataFrame
    reviews: pl.DataFrame

    @classmethod
    def of(cls, **frames: pl.DataFrame | None) -> "Sources":
        return cls(**{name: _framed(name, frames.get(name)) for name in SCHEMAS})

    def consented(self, name: str) -> pl.LazyFrame:
        frame = getattr(self, name).lazy()
        if name == "patients":
            return frame
        return frame.join(self.patients.lazy().select(PATIENT), on=PATIENT, how="semi")


def _framed(name: str, frame: pl.DataFrame | None) -> pl.DataFrame:
    schema = SCHEMAS[name]
    if frame is None:
        return pl.DataFrame(schema=schema)
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()])


@dataclass(frozen=True)
class Aggregate:
    """One released column: a count of rows per cell, or the sum of an integer column clipped
    to `bounds`. `divisor` turns the released fixed-point sum back into units."""

    column: str
    label: str
    share: float  # of the report's budget
    value: str | None = None
    bounds: tuple[int, int] | None = None
    divisor: int = 1

    @property
    def magnitude(self) -> int:
        """The most one row can move this aggregate."""
        return 1 if self.bounds is None else max(abs(self.bounds[0]), abs(self.bounds[1]))


@dataclass(frozen=True)
class Ratio:
    """A mean derived from two released aggregates (numerator / denominator): post-processing,
    free of budget. The per-patient values lie in [low, high], so the mean does too."""

    column: str
    label: str
    numerator: str
    denominator: str
    low: float
    high: float


Rows = Callable[[Sources, Period, Public, int], pl.LazyFrame]


@dataclass(frozen=True)
class ReportSpec:
    name: str
    title: str
    description: str
    keys: tuple[str, ...]
    key_sets: Callable[[Period, Public], dict[str, Sequence[str]]]
    per_group: int
    num_groups: Callable[[Period, Public], int]
    aggregates: tuple[Aggregate, ...]
    rows: Rows  # one patient's rows: patient, the keys and the summed columns, unbounded
    sources: tuple[str, ...]  # which Sources frames `rows` reads (besides patients)
    bounds_text: str
    ratio: Ratio | None = None
    order: str | None = None  # which rows a patient keeps first within a cell

    @property
    def headline(self) -> str:
        return self.ratio.column if self.ratio else self.aggregates[0].column

    @property
    def alpha(self) -> float:
        """Per released aggregate: 0.05, or 0.025 each when two make one ratio, so that both
        intervals hold together with 95% (Bonferroni)."""
        return 0.025 if self.ratio else 0.05

    @property
    def values(self) -> list[str]:
        return [a.value for a in self.aggregates if a.value is not None]

    def keys_frame(self, period: Period, public: Public) -> pl.DataFrame:
        sets = self.key_sets(period, public)
        combos = list(itertools.product(*(sets[k] for k in self.keys)))
        return pl.DataFrame(combos, schema={k: pl.String() for k in self.keys}, orient="row")

    def microdata(
        self, sources: Sources, period: Period, public: Public, *, salt: int
    ) -> pl.LazyFrame:
        """The bounded rows OpenDP aggregates: the keys and the summed columns, without the
        patient."""
        bounded = contributions_bound(
            self.rows(sources, period, public, salt),
            keys=list(self.keys),
            per_group=self.per_group,
            num_groups=self.num_groups(period, public),
            salt=salt,
            order=self.order,
        )
        return self.without_patient(bounded)

    def without_patient(self, rows: pl.LazyFrame) -> pl.LazyFrame:
        return rows.select([*(pl.col(k).cast(pl.String) for k in self.keys), *self.values])


def _in_period(column: str, period: Period) -> pl.Expr:
    return pl.col(column).is_between(period.start, period.end, closed="left")


def _groups_of_patients(sources: Sources, public: Public, salt: int) -> pl.LazyFrame:
    """Each consenting patient's medical groups (NO_GROUP for none), at most
    GROUPS_PER_PATIENT of them."""
    known = sources.consented("memberships").filter(pl.col("group").is_in(public.groups))
    patients = sources.consented("patients").select(PATIENT)
    grouped = patients.join(known, on=PATIENT, how="left").with_columns(
        pl.col("group").fill_null(NO_GROUP)
    )
    return contributions_bound(
        grouped, keys=["group"], per_group=1, num_groups=GROUPS_PER_PATIENT, salt=salt
    )


# 1. Engagement per medical group and week ----------------------------------------------------


def _engagement_rows(sources: Sources, period: Period, public: Public, salt: int) -> pl.LazyFrame:
    # Keys as enums of their public values: the bounding then hashes and sorts small codes.
    week, measure = pl.Enum(period.weeks), pl.Enum(ENGAGEMENT)
    delivered = (
        sources.consented("deliveries")
        .filter(_in_period("delivered_at", period))
        .select(PATIENT, "state", week=period.week_of("delivered_at").cast(week))
    )
    events = pl.concat(
        [
            delivered.select(PATIENT, "week", measure=pl.lit(ENGAGEMENT[0], dtype=measure)),
            delivered.filter(pl.col("state") == ACTED).select(
                PATIENT, "week", measure=pl.lit(ENGAGEMENT[1], dtype=measure)
            ),
            delivered.filter(pl.col("state") == DISMISSED).select(
                PATIENT, "week", measure=pl.lit(ENGAGEMENT[2], dtype=measure)
            ),
        ]
    )
    groups = _groups_of_patients(sources, public, salt).with_columns(
        pl.col("group").cast(pl.Enum([*public.groups, NO_GROUP]))
    )
    return events.join(groups, on=PATIENT, how="inner")


ENGAGEMENT_REPORT = ReportSpec(
    name="engagement",
    title="Nudges delivered, acted on and dismissed, per medical group and week",
    description=(
        "Per medical group and week of the month: how many patients had at least one nudge "
        "delivered, acted on one (done), and dismissed one. Patients are counted, not nudges: "
        "a count of nudges would need noise scaled to the most nudges one patient can get."
    ),
    keys=("group", "week", "measure"),
    key_sets=lambda period, public: {
        "group": (*public.groups, NO_GROUP),
        "week": period.weeks,
        "measure": ENGAGEMENT,
    },
    per_group=1,
    num_groups=lambda period, public: GROUPS_PER_PATIENT * len(period.weeks) * len(ENGAGEMENT),
    aggregates=(Aggregate("patients", "Patients", share=1.0),),
    rows=_engagement_rows,
    sources=("memberships", "deliveries"),
    bounds_text=(
        f"A patient counts at most once per cell, in at most {GROUPS_PER_PATIENT} medical "
        "groups (a random choice among more), so in at most "
        f"{GROUPS_PER_PATIENT} x weeks x {len(ENGAGEMENT)} cells."
    ),
)


# 2. Acceptance rate per age band and sex ----------------------------------------------------


def _acceptance_rows(sources: Sources, period: Period, public: Public, salt: int) -> pl.LazyFrame:
    per_patient = (
        sources.consented("deliveries")
        .filter(_in_period("delivered_at", period))
        .group_by(PATIENT)
        .agg(delivered=pl.len(), acted=(pl.col("state") == ACTED).sum())
    )
    rate = (pl.col("acted") * MILLI / pl.col("delivered")).round().cast(pl.Int64)
    return per_patient.join(sources.consented("patients"), on=PATIENT, how="inner").select(
        PATIENT, "age_band", "sex", rate_milli=rate
    )


ACCEPTANCE_REPORT = ReportSpec(
    name="acceptance",
    title="Acceptance rate per age band and sex (fairness view)",
    description=(
        "Per age band and sex: the patients who had nudges delivered in the month, and their "
        "mean acceptance rate (each patient's share of delivered nudges acted on, averaged "
        "over patients, so every patient weighs the same)."
    ),
    keys=("age_band", "sex"),
    key_sets=lambda period, public: {"age_band": public.age_bands, "sex": public.sexes},
    per_group=1,
    num_groups=lambda period, public: 1,
    aggregates=(
        Aggregate("patients", "Patients with a nudge delivered", share=0.5),
        Aggregate(
            "rate_sum",
            "Sum of the patients' acceptance rates",
            share=0.5,
            value="rate_milli",
            bounds=(0, MILLI),
            divisor=MILLI,
        ),
    ),
    ratio=Ratio("acceptance_rate", "Mean acceptance rate", "rate_sum", "patients", 0.0, 1.0),
    rows=_acceptance_rows,
    sources=("deliveries",),
    bounds_text=(
        "One row per patient (their own rate, in thousandths, within [0, 1]) in the one cell "
        "of their age band and sex."
    ),
)


# 3. Mean change in the goal's health measure per goal -----------------------------------------

GOALS_PER_PATIENT = 4


def _health_rows(sources: Sources, period: Period, public: Public, salt: int) -> pl.LazyFrame:
    """Per patient and goal: the mean observed change of the goal's measure around the
    patient's delivered nudges for that goal (nudges.measures.health_delta, in standard units,
    higher is better), over nudges whose whole window lies in the month, so a report reads no
    data of another month."""
    goals = list(measures.GOALS)
    kinds = {m.kind: i for i, m in enumerate(measures.MEASURES.values())}
    first = period.first_day + dt.timedelta(days=DELTA_BEFORE - 1)
    last = period.last_day - dt.timedelta(days=DELTA_AFTER)
    nudges = (
        sources.consented("deliveries")
        .filter(_in_period("delivered_at", period), pl.col("goal").is_in(goals))
        .with_columns(day=pl.col("delivered_at").dt.date())
        .filter(pl.col("day").is_between(first, last))
        .select(PATIENT, "goal", "day")
        .collect()
    )
    taken = (
        sources.consented("events")
        .filter(_in_period("occurred_at", period), pl.col("kind").is_in(list(kinds)))
        .select(PATIENT, "kind", "value", day=pl.col("occurred_at").dt.date())
        .collect()
    )
    numbers = (
        pl.concat([nudges.select(PATIENT), taken.select(PATIENT)]).unique().with_row_index("no")
    )
    nudges = nudges.join(numbers, on=PATIENT)
    taken = taken.join(numbers, on=PATIENT)
    means = measures.daily_means(
        taken["no"].to_numpy(),
        taken["kind"].replace_strict(kinds, return_dtype=pl.Int64).to_numpy(),
        taken["day"].cast(pl.Int32).to_numpy(),
        taken["value"].to_numpy(),
    )
    delta = measures.health_delta(
        means,
        nudges["no"].to_numpy(),
        nudges["goal"]
        .replace_strict(goals, list(range(len(goals))), return_dtype=pl.Int64)
        .to_numpy(),
        nudges["day"].cast(pl.Int32).to_numpy().astype(np.int64),
    )
    clipped = pl.col("delta").mean().clip(-HEALTH_CLIP, HEALTH_CLIP)
    return (
        nudges.with_columns(delta=pl.Series(delta, dtype=pl.Float64))
        .lazy()
        .filter(pl.col("delta").is_not_nan())
        .filter(pl.col("goal").is_in(public.goals))
        .group_by(PATIENT, "goal")
        .agg(delta_milli=(clipped * MILLI).round().cast(pl.Int64))
    )


HEALTH_REPORT = ReportSpec(
    name="health_change",
    title="Mean change in the goal's health measure, per goal",
    description=(
        "Per care-plan goal: the patients with a measured change around their nudges for "
        "that goal, and the mean change (the mean over the three days after a nudge minus the "
        "mean over its day and the two before, in standard units of the goal's measure, "
        "higher is better; per patient the mean over their nudges, clipped to "
        f"[-{HEALTH_CLIP:g}, {HEALTH_CLIP:g}])."
    ),
    keys=("goal",),
    key_sets=lambda period, public: {"goal": public.goals},
    per_group=1,
    num_groups=lambda period, public: min(GOALS_PER_PATIENT, len(public.goals)),
    aggregates=(
        Aggregate("patients", "Patients with a measured change", share=0.5),
        Aggregate(
            "change_sum",
            "Sum of the patients' mean changes",
            share=0.5,
            value="delta_milli",
            bounds=(-round(HEALTH_CLIP * MILLI), round(HEALTH_CLIP * MILLI)),
            divisor=MILLI,
        ),
    ),
    ratio=Ratio("mean_change", "Mean change", "change_sum", "patients", -HEALTH_CLIP, HEALTH_CLIP),
    rows=_health_rows,
    sources=("deliveries", "events"),
    bounds_text=(
        f"One row per patient and goal, in at most {GOALS_PER_PATIENT} goals (a random choice "
        f"among more), each a mean change clipped to [-{HEALTH_CLIP:g}, {HEALTH_CLIP:g}] "
        "standard units, in thousandths."
    ),
)


# 4. Review-queue outcomes per medical group ---------------------------------------------------

REVIEWS_PER_CELL, REVIEW_CELLS = 2, 4


def _review_rows(sources: Sources, period: Period, public: Public, salt: int) -> pl.LazyFrame:
    return (
        sources.consented("reviews")
        .filter(_in_period("created_at", period))
        .with_columns(
            group=pl.when(pl.col("group").is_in(public.groups))
            .then(pl.col("group"))
            .otherwise(pl.lit(NO_GROUP)),
            outcome=pl.col("state"),
        )
        .select(PATIENT, "group", "outcome", "created_at")
    )


REVIEWS_REPORT = ReportSpec(
    name="review_outcomes",
    title="Review-queue outcomes per medical group",
    description=(
        "Per medical group and outcome (approved, rejected, expired, ...): the review requests "
        "opened in the month, each counted in every group that had to decide on it. A patient "
        f"adds at most {REVIEWS_PER_CELL} requests to one cell (their earliest) and touches at "
        f"most {REVIEW_CELLS} cells."
    ),
    keys=("group", "outcome"),
    key_sets=lambda period, public: {
        "group": (*public.groups, NO_GROUP),
        "outcome": public.outcomes,
    },
    per_group=REVIEWS_PER_CELL,
    num_groups=lambda period, public: REVIEW_CELLS,
    aggregates=(Aggregate("requests", "Review requests", share=1.0),),
    rows=_review_rows,
    sources=("reviews",),
    order="created_at",
    bounds_text=(
        f"At most {REVIEWS_PER_CELL} requests per patient in one cell (the earliest) and at "
        f"most {REVIEW_CELLS} cells per patient (a random choice among more)."
    ),
)


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (ENGAGEMENT_REPORT, ACCEPTANCE_REPORT, HEALTH_REPORT, REVIEWS_REPORT)
}


def l2_sensitivity(spec: ReportSpec, aggregate: Aggregate, period: Period, public: Public) -> float:
    """By hand: one patient moves each of at most num_groups cells by at most per_group rows
    of at most `magnitude` each, so the vector of cells moves by per_group x magnitude x
    sqrt(num_groups) in L2. (What OpenDP derives from the same bounds; the tests check both.)"""
    k = spec.num_groups(period, public)
    return spec.per_group * aggregate.magnitude * math.sqrt(k)
