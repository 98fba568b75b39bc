"""Pure: released numbers with their 95% intervals, and a mean's interval from the intervals
of its numerator and denominator (docs/privacy.md, "Intervals"). Everything here is
post-processing of released values and public accuracies: it costs no budget."""

import math
from typing import Any

import polars as pl

from privacy.dp.mechanism import Plan


def ratio_interval(
    numerator: tuple[float, float],
    denominator: tuple[float, float],
    *,
    low: float,
    high: float,
) -> tuple[float, float]:
    """Interval arithmetic: if the true numerator N lies in `numerator` and the true
    denominator D (a count of patients, a whole number) in `denominator`, then N / D lies in
    the returned interval. Each input holds with 97.5%, so both do with at least 95%
    (Bonferroni), and so does the result. Per-patient values lie in [low, high], so the mean
    does too: the result is cut to it, and is all of it when D may be 0."""
    n_lo, n_hi = numerator
    d_lo, d_hi = max(1, math.ceil(denominator[0])), math.floor(denominator[1])
    if denominator[0] <= 0 or d_hi < d_lo:
        return low, high
    corners = [n_lo / d_lo, n_lo / d_hi, n_hi / d_lo, n_hi / d_hi]
    return max(low, min(corners)), min(high, max(corners))


def results_rows(plan: Plan, noisy: pl.DataFrame) -> list[dict[str, Any]]:
    """One flat row per cell: the keys, each released aggregate with its interval (in units),
    and the report's mean with its interval when it has one."""
    spec = plan.spec
    rows = []
    for record in noisy.iter_rows(named=True):
        row: dict[str, Any] = {k: record[k] for k in spec.keys}
        bounds: dict[str, tuple[float, float]] = {}
        for a in plan.aggregates:
            value = int(record[a.column])
            # The true value is an integer, so the floor of OpenDP's half-width keeps the
            # coverage (OpenDP's own note on its discrete accuracies).
            half = math.floor(a.accuracy)
            low, high = value - half, value + half
            row[a.column] = _units(value, a.divisor)
            row[f"{a.column}_low"] = _units(low, a.divisor)
            row[f"{a.column}_high"] = _units(high, a.divisor)
            bounds[a.column] = (low / a.divisor, high / a.divisor)
        if spec.ratio is not None:
            ratio = spec.ratio
            numerator, denominator = row[ratio.numerator], row[ratio.denominator]
            estimate = None
            if denominator > 0:
                estimate = min(ratio.high, max(ratio.low, numerator / denominator))
            low_r, high_r = ratio_interval(
                bounds[ratio.numerator], bounds[ratio.denominator], low=ratio.low, high=ratio.high
            )
            row[ratio.column] = None if estimate is None else round(estimate, 6)
            row[f"{ratio.column}_low"] = round(low_r, 6)
            row[f"{ratio.column}_high"] = round(high_r, 6)
        rows.append(row)
    return rows


def result_columns(plan: Plan) -> list[str]:
    spec = plan.spec
    columns = list(spec.keys)
    for a in plan.aggregates:
        columns += [a.column, f"{a.column}_low", f"{a.column}_high"]
    if spec.ratio is not None:
        c = spec.ratio.column
        columns += [c, f"{c}_low", f"{c}_high"]
    return columns


def _units(value: int, divisor: int) -> int | float:
    return value if divisor == 1 else value / divisor
