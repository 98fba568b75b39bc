"""Pure: off-policy evaluation of a target policy on a decision log (nudges/decision_log.py).

The estimators (IPS, self-normalised IPS, the direct method and the doubly robust estimator)
and their 95% intervals from a bootstrap that resamples patients, not decisions: one patient's
decisions are correlated, so resampling rows would give intervals that are too narrow.

A target policy is given per decision as `target_avail`, aligned with `log.avail`, and
`target_none`, one per decision; a reward model likewise as `q_avail` and `q_none`.
Decisions whose reward is NaN (unknown) are dropped before anything is computed.
Everything is vectorised over decisions; the bootstrap works on per-patient sums."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nudges.decision_log import DecisionLog

BOOT_CELLS = 4_000_000  # resamples x clusters drawn at once; bounds the bootstrap's memory


@dataclass(frozen=True)
class Interval:
    """A point estimate and its (by default 95%) percentile bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Report:
    """The estimates, the importance weights' effective sample size and largest value, the
    number of decisions evaluated (`n`) and dropped for want of a reward, and the target's
    true value on the evaluated decisions when the log is simulated (else None)."""

    estimates: dict[str, Interval]
    ess: float
    max_weight: float
    n: int
    dropped: int
    true_value: float | None


def logged_action_index(log: DecisionLog) -> np.ndarray:
    """(n,) for each decision, the index into `log.avail` of its logged action, or -1 when
    it logged no nudge."""
    decision = log.decision_index()
    match = log.avail == log.action[decision]
    index = np.full(len(log), -1, dtype=np.int64)
    index[decision[match]] = np.flatnonzero(match)
    if np.any((log.action >= 0) & (index < 0)):
        raise ValueError("a logged action is not among its decision's available actions")
    return index


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted decisions the weights are worth."""
    weights = np.asarray(weights, dtype=float)
    squares = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def _per_action_sum(log: DecisionLog, per_avail: np.ndarray, per_none: np.ndarray) -> np.ndarray:
    """(n,) per decision, the sum over its available actions plus the no-nudge term."""
    return np.bincount(log.decision_index(), weights=per_avail, minlength=len(log)) + per_none


def _check_policy(log: DecisionLog, target_avail: np.ndarray, target_none: np.ndarray) -> None:
    if np.any(target_avail < 0) or np.any(target_none < 0):
        raise ValueError("target probabilities must not be negative")
    totals = _per_action_sum(log, target_avail, target_none)
    if not np.allclose(totals, 1.0, atol=1e-6):
        raise ValueError("target probabilities must sum to 1 at every decision")


def _terms(
    log: DecisionLog,
    target_avail: np.ndarray,
    target_none: np.ndarray,
    q_avail: np.ndarray | None,
    q_none: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Per decision (all of them, NaN rewards included): the importance weight w, w * r and,
    with a reward model, the direct-method and doubly robust terms."""
    index = logged_action_index(log)
    logged = index >= 0
    safe = np.where(logged, index, 0)
    if len(log.avail) == 0:
        target_logged = target_none
    else:
        target_logged = np.where(logged, target_avail[safe], target_none)
    w = target_logged / log.propensity
    terms = {"w": w, "wr": w * log.reward}
    if q_avail is not None and q_none is not None:
        dm = _per_action_sum(log, target_avail * q_avail, target_none * q_none)
        q_logged = q_none if len(log.avail) == 0 else np.where(logged, q_avail[safe], q_none)
        terms["dm"] = dm
        terms["dr"] = dm + w * (log.reward - q_logged)
    return terms


def _point(sums: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Estimates from totals: columns are count, sum w, sum w r, then sums of `names`.
    Works on one row of totals or on a row per bootstrap resample."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"ips": sums[..., 2] / sums[..., 0], "snips": sums[..., 2] / sums[..., 1]}
        for j, name in enumerate(names):
            out[name] = sums[..., 3 + j] / sums[..., 0]
    return out


def _codes(clusters: np.ndarray) -> np.ndarray:
    """Cluster ids (any hashable values) as codes 0..C-1."""
    keys = clusters.astype(str) if clusters.dtype == object else clusters
    return np.unique(keys, return_inverse=True)[1].reshape(-1)


def _bootstrap(per_cluster: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, columns) totals of `per_cluster` (C, columns) over resamples that draw C
    clusters with replacement: multiplicities per cluster, then one matrix product."""
    clusters = len(per_cluster)
    step = max(1, BOOT_CELLS // clusters)
    totals = []
    for start in range(0, n_boot, step):
        rows = min(step, n_boot - start)
        draws = rng.integers(0, clusters, size=(rows, clusters))
        draws += clusters * np.arange(rows)[:, None]
        counts = np.bincount(draws.ravel(), minlength=rows * clusters).reshape(rows, clusters)
        totals.append(counts @ per_cluster)
    return np.concatenate(totals)


def _true_per_decision(
    log: DecisionLog, target_avail: np.ndarray, target_none: np.ndarray
) -> np.ndarray:
    """(n,) the target's expected true reward at each decision; actions the target never
    takes count as 0 even when their true value is unknown."""
    on_avail = np.where(target_avail > 0, target_avail * log.avail_true, 0.0)
    on_none = np.where(target_none > 0, target_none * log.none_true, 0.0)
    return _per_action_sum(log, on_avail, on_none)


def true_value(
    *, log: DecisionLog, target_avail: np.ndarray, target_none: np.ndarray
) -> float | None:
    """The target's true value on a simulated log: the mean over its decisions of
    sum_a pi(a|x) * true expected reward of a. None when the log has no true values."""
    if not log.has_true_values:
        return None
    target_avail, target_none = _policy(log, target_avail, target_none)
    value = float(_true_per_decision(log, target_avail, target_none).mean())
    if not np.isfinite(value):
        raise ValueError("true values are missing for actions the target policy may take")
    return value


def _policy(
    log: DecisionLog, per_avail: np.ndarray, per_none: np.ndarray, *, probabilities: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-action values as float arrays, checked against the log's shape and, for a
    policy, checked to be probabilities summing to 1 at every decision."""
    per_avail, per_none = np.asarray(per_avail, float), np.asarray(per_none, float)
    if per_avail.shape != log.avail.shape or per_none.shape != (len(log),):
        raise ValueError("values must align with log.avail and, for no nudge, with decisions")
    if probabilities:
        _check_policy(log, per_avail, per_none)
    return per_avail, per_none


def evaluate(
    *,
    log: DecisionLog,
    target_avail: np.ndarray,
    target_none: np.ndarray,
    q_avail: np.ndarray | None = None,
    q_none: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> Report:
    """Estimate the target policy's value on `log`: "ips" and "snips" always, "dm" and "dr"
    when a reward model (q_avail and q_none) is given, each with a percentile interval at
    level 1 - alpha from `n_boot` resamples of `clusters` (default: the patients), drawn
    with replacement; every estimator is recomputed on each resample. Decisions whose
    reward is NaN are dropped. Deterministic for a given seed."""
    target_avail, target_none = _policy(log, target_avail, target_none)
    model: tuple[np.ndarray, np.ndarray] | None = None
    if q_avail is not None and q_none is not None:
        model = _policy(log, q_avail, q_none, probabilities=False)
    elif q_avail is not None or q_none is not None:
        raise ValueError("give both q_avail and q_none, or neither")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError("n_boot must be at least 1 and alpha lie in (0, 1)")
    clusters = log.patients if clusters is None else np.asarray(clusters)
    if clusters.shape != (len(log),):
        raise ValueError("clusters must give one cluster per decision")

    keep = np.isfinite(log.reward)
    if not keep.any():
        raise ValueError("no decision has a reward")
    terms = {
        name: values[keep]
        for name, values in _terms(log, target_avail, target_none, *(model or (None, None))).items()
    }
    names = [name for name in ("dm", "dr") if name in terms]
    columns = np.column_stack(
        [np.ones(int(keep.sum())), terms["w"], terms["wr"], *(terms[m] for m in names)]
    )
    codes = _codes(clusters[keep])
    per_cluster = np.stack(
        [np.bincount(codes, weights=col, minlength=codes.max() + 1) for col in columns.T], axis=1
    )
    point = _point(columns.sum(axis=0), names)
    boot = _point(_bootstrap(per_cluster, n_boot, np.random.default_rng(seed)), names)
    truth = None
    if log.has_true_values:
        truth = float(_true_per_decision(log, target_avail, target_none)[keep].mean())
    return Report(
        estimates={
            name: _interval(float(point[name]), boot[name], alpha)
            for name in ("ips", "snips", *names)
        },
        ess=effective_sample_size(terms["w"]),
        max_weight=float(terms["w"].max()),
        n=int(keep.sum()),
        dropped=int((~keep).sum()),
        true_value=truth,
    )


def _interval(value: float, resampled: np.ndarray, alpha: float) -> Interval:
    """Percentiles of the resampled estimates; resamples where an estimator is undefined
    (SNIPS when every drawn weight is 0) are left out."""
    finite = resampled[np.isfinite(resampled)]
    if len(finite) == 0:
        return Interval(value=value, low=np.nan, high=np.nan)
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Interval(value=value, low=float(low), high=float(high))


def estimate(
    *,
    log: DecisionLog,
    target_avail: np.ndarray,
    target_none: np.ndarray,
    q_avail: np.ndarray | None = None,
    q_none: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    n_boot: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Interval]:
    """The estimates of `evaluate` alone: "ips" = mean(w r), "snips" = sum(w r) / sum(w)
    and, with a reward model, "dm" = mean(sum_a pi(a|x) q(x, a)) and
    "dr" = mean(dm_i + w_i (r_i - q(x_i, a_i))), where w_i = pi(a_i|x_i) / propensity_i.
    Decisions whose reward is NaN are dropped."""
    return evaluate(
        log=log,
        target_avail=target_avail,
        target_none=target_none,
        q_avail=q_avail,
        q_none=q_none,
        clusters=clusters,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
    ).estimates
