"""The LightGBM models behind the agenda policy: P(act), the chance a patient acts on a nudge,
and the expected health effect when they do (the change in the goal's measure). Training on a
decision log with a time-based split, the metrics, the artefact format, and the per-feature
contributions that explain a choice. No ORM: the training service reads the logs and keeps
the registry."""

import datetime as dt
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.stats import rankdata

from nudges import features as F
from nudges.agenda import AgendaParams
from nudges.decision_log import DecisionLog
from nudges.treeshap import PathTables

logger = logging.getLogger(__name__)

ARTEFACT_FORMAT = 1
ACT_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "verbose": -1,
}
EFFECT_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "verbose": -1,
}
MAX_ROUNDS = 400
SMALL_TRAINING_ROWS = 100_000  # below this a model trains on one thread
EARLY_STOP = 30


class ModelError(Exception):
    """A model artefact that cannot be used (missing, corrupt, of another format)."""


@dataclass
class ModelBundle:
    version: str
    schema: F.Schema
    act: lgb.Booster
    effect: lgb.Booster
    params: AgendaParams = field(default_factory=AgendaParams)
    info: dict[str, Any] = field(default_factory=dict)
    _tables: list[PathTables | None] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _tables_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(act) and the expected effect for each feature row."""
        if len(features) == 0:
            return np.zeros(0), np.zeros(0)
        threads = _threads(features)
        # LightGBM types predict() as ndarray | sparse | list: dense rows give ndarrays.
        return (  # type: ignore[return-value]
            self.act.predict(features, num_threads=threads),
            self.effect.predict(features, num_threads=threads),
        )

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the log-odds of acting, what LightGBM's pred_contrib
        gives (the last column is the bias): from the P(act) model's TreeSHAP tables, 3-4x
        faster per row than LightGBM's own recursion (nudges/treeshap.py), or LightGBM's when
        the model's paths are too long for tables."""
        tables = self.explainer()
        if tables is not None:
            try:
                return tables.contributions(features)
            except Exception as error:  # never an explanation's failure for a decision's
                logger.error("TreeSHAP tables failed (%s); LightGBM's used", type(error).__name__)
        return self.act.predict(  # type: ignore[return-value]  # LightGBM: a dense array here
            features, pred_contrib=True, num_threads=_threads(features)
        )

    def explainer(self) -> PathTables | None:
        """The P(act) model's TreeSHAP tables, built on first use (about half a second);
        None when the model has none (LightGBM's TreeSHAP explains it)."""
        if not self._tables:
            with self._tables_lock:
                if not self._tables:
                    self._tables.append(_tables_for(self.act))
        return self._tables[0]

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "format": ARTEFACT_FORMAT,
                "version": self.version,
                "schema": json.loads(self.schema.to_json()),
                "params": self.params.as_dict(),
                "info": self.info,
                "act": self.act.model_to_string(),
                "effect": self.effect.model_to_string(),
            }
        ).encode()

    @classmethod
    def loads(cls, blob: bytes) -> "ModelBundle":
        try:
            data = json.loads(blob)
            if data.get("format") != ARTEFACT_FORMAT:
                raise ModelError("unknown artefact format")
            return cls(
                version=data["version"],
                schema=F.Schema.from_json(json.dumps(data["schema"])),
                act=lgb.Booster(model_str=data["act"]),
                effect=lgb.Booster(model_str=data["effect"]),
                params=AgendaParams(**data["params"]),
                info=data.get("info", {}),
            )
        except ModelError:
            raise
        except Exception as error:  # a corrupt file: JSON, keys, LightGBM's own parser
            raise ModelError(f"unreadable artefact ({type(error).__name__})") from None


def _tables_for(booster: lgb.Booster) -> PathTables | None:
    try:
        return PathTables.build(booster)
    except Exception as error:  # a model these tables do not understand: LightGBM explains it
        logger.error("TreeSHAP tables not built (%s)", type(error).__name__)
        return None


# Threads for a large prediction: 0 is LightGBM's default, all cores. A process that is one of
# several sharing the cores (a Celery pool process, config/celery.py) sets 1: the processes are
# the parallelism, and OpenMP threads competing for the same cores only spin.
BATCH_THREADS = 0


def _threads(features: np.ndarray) -> int:
    """One thread for the few rows of a live decision (starting OpenMP's threads costs ten
    times the prediction); BATCH_THREADS for batches."""
    return 1 if len(features) < 2_000 else BATCH_THREADS


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@dataclass
class TrainingResult:
    bundle: ModelBundle
    metrics: dict[str, Any]
    validation: np.ndarray  # decisions of the log held out for validation (time split)


def train(
    log: DecisionLog,
    schema: F.Schema,
    *,
    version: str,
    params: AgendaParams | None = None,
    validation_share: float = 0.2,
    seed: int = 1,
    threads: int = 2,
) -> TrainingResult:
    """Train both models on the log's nudges: the first (1 - validation_share) of the time
    span trains, the rest validates (and stops boosting early). P(act) learns from every nudge
    with a known outcome; the effect model from the nudges acted on whose goal measure was
    seen before and after."""
    nudged = np.flatnonzero((log.action >= 0) & np.isfinite(log.acted))
    if len(nudged) < 200:
        raise ModelError(f"too few logged nudges with an outcome to train on ({len(nudged)})")
    features = F.log_features(log, schema, nudged, log.action[nudged])
    acted = log.acted[nudged]
    delta = log.health_delta[nudged]
    cut = np.quantile(log.time[nudged], 1.0 - validation_share)
    fit, held = log.time[nudged] < cut, log.time[nudged] >= cut
    names = schema.names
    categorical = [names.index(c) for c in F.CATEGORICAL]

    def booster(
        base: dict, x: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, held_rows: np.ndarray
    ) -> lgb.Booster:
        # OpenMP threads spin while they wait: on a small data set, or on cores other work
        # shares, two threads ran 5x slower than one (docs/benchmarks.md).
        x_fit = x[fit_rows]
        n_threads = threads if len(x_fit) >= SMALL_TRAINING_ROWS else 1
        options = {**base, "seed": seed, "num_threads": n_threads, "deterministic": True}
        train_set = lgb.Dataset(
            x_fit,
            y[fit_rows],
            feature_name=names,
            categorical_feature=categorical,
            free_raw_data=False,
        )
        valid_set = lgb.Dataset(x[held_rows], y[held_rows], reference=train_set)
        return lgb.train(
            options,
            train_set,
            MAX_ROUNDS,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False)],
        )

    act = booster(ACT_PARAMS, features, acted, fit, held)
    with_delta = (acted == 1) & np.isfinite(delta)
    if with_delta[fit].sum() < 100 or with_delta[held].sum() < 20:
        raise ModelError("too few acted-on nudges with a measured health change")
    effect = booster(
        EFFECT_PARAMS, features, np.nan_to_num(delta), fit & with_delta, held & with_delta
    )
    bundle = ModelBundle(
        version=version,
        schema=schema,
        act=act,
        effect=effect,
        params=params or AgendaParams(),
        info={
            "trained_at": dt.datetime.now(dt.UTC).isoformat(),
            "rows": int(fit.sum()),
            "validation_rows": int(held.sum()),
            "window_days": [float(log.time[nudged].min()), float(log.time[nudged].max())],
            "split_day": float(cut),
        },
    )
    p_held: np.ndarray = act.predict(features[held])  # type: ignore[assignment]  # dense
    metrics = {
        "act_auc": round(auc(acted[held], p_held), 4),
        "act_log_loss": round(log_loss(acted[held], p_held), 4),
        "act_calibration_error": round(calibration_error(acted[held], p_held), 4),
        "act_rounds": act.best_iteration,
        "effect_rounds": effect.best_iteration,
        "effect_corr": round(
            float(
                np.corrcoef(effect.predict(features[held & with_delta]), delta[held & with_delta])[
                    0, 1
                ]
            ),
            4,
        ),
        "ndcg_at_5": round(ndcg_acted(log, bundle, nudged[held], k=5), 4),
        "train_rows": int(fit.sum()),
        "validation_rows": int(held.sum()),
    }
    validation = np.flatnonzero(log.time >= cut)
    return TrainingResult(bundle=bundle, metrics=metrics, validation=validation)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (the rank formula, ties given their average rank)."""
    positives = y == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins of the predicted probability."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(total)


def ndcg_acted(log: DecisionLog, bundle: ModelBundle, decisions: np.ndarray, *, k: int) -> float:
    """For the held-out nudges that were acted on: rank all of the decision's candidates by
    predicted P(act); the acted-on template is the one relevant item, so NDCG@k is the mean of
    1/log2(1 + its rank) when its rank is at most k."""
    acted = decisions[log.acted[decisions] == 1]
    if len(acted) == 0:
        return float("nan")
    acted = acted[:20_000]  # enough for the figure
    starts, ends = log.offsets[acted], log.offsets[acted + 1]
    lengths = ends - starts
    pair_decision = np.repeat(acted, lengths)
    positions = (
        np.arange(lengths.sum())
        - np.repeat(np.cumsum(lengths) - lengths, lengths)
        + np.repeat(starts, lengths)
    )
    pair_action = log.avail[positions]
    x = F.log_features(log, bundle.schema, pair_decision, pair_action)
    p = bundle.act.predict(x)
    segment = np.repeat(np.arange(len(acted)), lengths)
    chosen_score = p[pair_action == log.action[pair_decision]]
    chosen_segment = segment[pair_action == log.action[pair_decision]]
    better = np.bincount(
        segment,
        weights=(p > chosen_score[np.searchsorted(chosen_segment, segment)]).astype(float),
        minlength=len(acted),
    )
    rank = better + 1
    gains = np.where(rank <= k, 1.0 / np.log2(1.0 + rank), 0.0)
    return float(gains.mean())
