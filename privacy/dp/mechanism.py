"""Pure: a report's OpenDP measurement. It is built from public facts only (the report, the
period's key sets, the budget), so its privacy loss and the accuracy of every released number
are known before any data is read: the dry run is this object without the data.

Mechanism: OpenDP's polars integration (make_private_lazyframe) under zero-concentrated DP,
grouped by the public key sets (a left join from the keys, so every key is released, noisy
zeros included, and no key is ever learnt from the data), integer counts and fixed-point sums
with discrete Gaussian noise. The privacy unit is declared as a dp.polars.Bound: at most
`per_group` rows per cell and `num_groups` cells per patient, which privacy.dp.bounding
enforces before the data reaches OpenDP."""

import math
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import polars as pl

from privacy.dp import opendp
from privacy.dp.accounting import NANO, nanorho_ceil
from privacy.dp.catalogue import Public, ReportSpec, l2_sensitivity
from privacy.dp.periods import Period

# An upper bound on the rows of the bounded data, which OpenDP needs to rule out overflow in
# integer sums. Public and deliberately loose (OpenDP's guidance for max_length).
MAX_ROWS = 2**31
# The scales are derived for a hair under the budget, so that rounding the charge up to whole
# nano-rho never passes the budget asked for.
_HEADROOM = 1 - 1e-12
OPENDP_VERSION = metadata.version("opendp")
MECHANISM = (
    "discrete Gaussian noise on integer aggregates, zero-concentrated DP "
    f"(OpenDP {OPENDP_VERSION} make_private_lazyframe, polars)"
)


@dataclass(frozen=True)
class AggregatePlan:
    column: str
    label: str
    sensitivity: float  # L2, in released (integer) units
    scale: float
    accuracy: float  # half-width at the report's alpha, in released units
    divisor: int


@dataclass(frozen=True)
class Plan:
    spec: ReportSpec
    period: Period
    keys: pl.DataFrame
    measurement: Any
    d_in: Any
    rho: float
    charged_nanorho: int
    aggregates: tuple[AggregatePlan, ...]

    @property
    def per_group(self) -> int:
        return self.spec.per_group

    @property
    def num_groups(self) -> int:
        return self.d_in[0].num_groups

    def release(self, microdata: pl.LazyFrame) -> pl.DataFrame:
        """Run the measurement: the one step that spends budget. The rows come back in the
        order of the public keys."""
        noisy = self.measurement(microdata).collect()
        ordered = self.keys.with_row_index("_order")
        return noisy.join(ordered, on=list(self.spec.keys)).sort("_order").drop("_order")

    def exact(self, microdata: pl.LazyFrame) -> pl.DataFrame:
        """The same aggregates without noise, for tests of the sensitivity only. Never
        released."""
        exprs = [
            pl.len().alias(a.column)
            if a.value is None
            else pl.col(a.value).clip(*a.bounds).sum().alias(a.column)  # type: ignore[misc]
            for a in self.spec.aggregates
        ]
        keys = list(self.spec.keys)
        counted = microdata.group_by(keys).agg(exprs).collect()
        ordered = self.keys.with_row_index("_order")
        return ordered.join(counted, on=keys, how="left").sort("_order").drop("_order").fill_null(0)


def plan_build(spec: ReportSpec, period: Period, public: Public, *, budget_nanorho: int) -> Plan:
    """The measurement that spends at most `budget_nanorho`, split between the report's
    aggregates by their shares: each aggregate gets scale = sensitivity / sqrt(2 x share x rho),
    so its rho is share x budget (Gaussian: rho = sensitivity^2 / (2 scale^2))."""
    dp = opendp()
    rho_target = budget_nanorho / NANO * _HEADROOM
    keys = spec.keys_frame(period, public)
    k = spec.num_groups(period, public)
    scales = {
        a.column: l2_sensitivity(spec, a, period, public) / math.sqrt(2 * a.share * rho_target)
        for a in spec.aggregates
    }
    metric, d_in = dp.unit_of(
        contributions=[
            dp.polars.Bound(
                by=[pl.col(c) for c in spec.keys], per_group=spec.per_group, num_groups=k
            )
        ]
    )
    measurement = dp.m.make_private_lazyframe(
        _domain(spec),
        metric,
        dp.zero_concentrated_divergence(),
        keys.lazy().join(_aggregation(spec, scales), on=list(spec.keys), how="left"),
    )
    rho = float(measurement.map(d_in))
    charged = nanorho_ceil(rho)
    if charged > budget_nanorho:  # pragma: no cover - guarded by _HEADROOM
        raise ArithmeticError("the measurement would spend more than its budget")
    accuracy = _accuracy(measurement, spec.alpha)
    return Plan(
        spec=spec,
        period=period,
        keys=keys,
        measurement=measurement,
        d_in=d_in,
        rho=rho,
        charged_nanorho=charged,
        aggregates=tuple(
            AggregatePlan(
                column=a.column,
                label=a.label,
                sensitivity=l2_sensitivity(spec, a, period, public),
                scale=scales[a.column],
                accuracy=accuracy[a.column],
                divisor=a.divisor,
            )
            for a in spec.aggregates
        ),
    )


def _domain(spec: ReportSpec) -> Any:
    dp = opendp()
    series = [dp.series_domain(k, dp.atom_domain(T=str)) for k in spec.keys]
    series += [dp.series_domain(v, dp.atom_domain(T="i64")) for v in spec.values]
    return dp.with_margin(dp.lazyframe_domain(series), dp.polars.Margin(by=[], max_length=MAX_ROWS))


def _aggregation(spec: ReportSpec, scales: dict[str, float]) -> pl.LazyFrame:
    dp = opendp()  # also gives polars expressions their .dp namespace
    schema = {k: pl.String() for k in spec.keys} | {v: pl.Int64() for v in spec.values}
    exprs = [
        dp.len(scale=scales[a.column], signed=True).alias(a.column)
        if a.value is None
        else pl.col(a.value).dp.sum(a.bounds, scale=scales[a.column]).alias(a.column)  # type: ignore[attr-defined]
        for a in spec.aggregates
    ]
    return pl.LazyFrame(schema=schema).group_by(list(spec.keys)).agg(exprs)


def _accuracy(measurement: Any, alpha: float) -> dict[str, float]:
    summary = opendp().summarize_polars_measurement(measurement, alpha=alpha)
    return dict(zip(summary["column"].to_list(), summary["accuracy"].to_list(), strict=True))
