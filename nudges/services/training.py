"""Training a challenger on the engine's own decisions and deciding whether it serves.

The log is the engine's decisions of the last NUDGE_TRAINING_DAYS days (decision_logs.
engine_log); the models train on the first 80% of that time and validate on the rest. On the
validation decisions, the challenger's agenda policy and the champion's policy are both
evaluated off-policy (self-normalised IPS and doubly robust, with a reward model fitted on the
training part); the challenger is promoted only when both estimates say it does better."""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from nudges import features as F
from nudges import offline, ope
from nudges.decision_log import DecisionLog
from nudges.models import ModelStatus, ModelVersion, Template
from nudges.recommender import ModelBundle, train
from nudges.services.decision_logs import engine_log
from nudges.services.registry import baseline_ensure, champion, model_promote, model_register
from safety.models import MedicalGroup


@dataclass
class TrainOutcome:
    row: ModelVersion
    metrics: dict[str, Any]
    comparison: dict[str, Any]
    promoted: bool

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.row.version,
            "status": self.row.status,
            "promoted": self.promoted,
            "metrics": self.metrics,
            "comparison": self.comparison,
        }

    def report_lines(self) -> list[str]:
        c = self.comparison
        lines = [f"Trained {self.row.version} ({self.row.status})."]
        lines += [f"  {name}: {value}" for name, value in self.metrics.items()]
        for who in ("challenger", "champion"):
            estimates = c[who]["estimates"]
            lines.append(
                f"  {who} {c[who]['version']}: "
                + ", ".join(
                    f"{name} {e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"
                    for name, e in estimates.items()
                    if name in ("snips", "dr")
                )
            )
        lines.append("  promoted" if self.promoted else f"  not promoted: {c['decision']}")
        return lines


def training_schema() -> F.Schema:
    """The groups and every template version the engine has ever had, so old decisions'
    nudges keep their identity."""
    templates = [
        {"key": f"{slug}@{version}", "goal": goal, "category": category, "intensity": intensity}
        for slug, version, goal, category, intensity in Template.objects.order_by(
            "slug", "version"
        ).values_list("slug", "version", "goal", "category", "intensity")
    ]
    return F.Schema.from_templates(MedicalGroup.objects.values_list("slug", flat=True), templates)


def model_train(
    *,
    days: int | None = None,
    now: dt.datetime | None = None,
    promote: bool = True,
    progress: Callable[[str], None] | None = None,
) -> TrainOutcome:
    """Train, register, and promote when the challenger beats the champion offline."""
    say = progress or (lambda _: None)
    now = now or timezone.now()
    since = now - dt.timedelta(days=days or settings.NUDGE_TRAINING_DAYS)
    baseline_ensure()
    say(f"Reading the decisions since {since:%Y-%m-%d}...")
    log = engine_log(since=since, until=now)
    schema = training_schema()
    version = f"agenda-{now:%Y%m%d-%H%M%S}"
    say(f"Training on {int((log.action >= 0).sum())} logged nudges of {len(log)} decisions...")
    result = train(log, schema, version=version)
    say("Comparing with the champion on the validation window...")
    comparison = _compare(log, result.bundle, result.validation, schema)
    row = model_register(
        bundle=result.bundle,
        metrics={**result.metrics, "offline": comparison},
        trained_from=since,
        trained_to=now,
    )
    promoted = False
    if promote and comparison["beats_champion"]:
        model_promote(version=version, note="beat the champion offline (SNIPS and DR)")
        promoted = True
    elif promote:
        row.status = ModelStatus.REJECTED
        row.note = comparison["decision"][:300]
        row.save(update_fields=["status", "note", "updated_at"])
    row.refresh_from_db()
    return TrainOutcome(row=row, metrics=result.metrics, comparison=comparison, promoted=promoted)


def _compare(
    log: DecisionLog, challenger: ModelBundle, validation: np.ndarray, schema: F.Schema
) -> dict[str, Any]:
    training = np.setdiff1d(np.arange(len(log)), validation)
    features = offline.log_pair_features(log, schema)
    reward = offline.reward_model(log, schema, train_rows=training, seed=1, features=features)
    positions = offline.pair_positions(log, validation)
    held = log.select(validation)
    q_avail, q_none = reward(features.pairs[positions], features.none[validation])
    current = champion()

    def value(bundle: ModelBundle | None) -> dict[str, Any]:
        if bundle is None:
            target_avail, target_none = offline.baseline_on_log(log, schema)
            target = target_avail[positions], target_none[validation]
        else:
            pair_features = (
                features
                if bundle.schema == schema
                else offline.log_pair_features(log, bundle.schema)
            )
            predictions = bundle.predict(pair_features.pairs[positions])
            full = (np.zeros(len(log.avail)), np.zeros(len(log.avail)))
            full[0][positions], full[1][positions] = predictions
            target = offline.model_policy_on_log(
                bundle, log, pair_features.pairs, full, validation, engagement=False
            )
        report = ope.evaluate(
            log=held,
            target_avail=target[0],
            target_none=target[1],
            q_avail=q_avail,
            q_none=q_none,
            n_boot=300,
            seed=1,
        )
        return offline.report_summary(report)

    mine = {"version": challenger.version, **value(challenger)}
    theirs = {"version": current.version, **value(current.bundle)}
    wins = [
        mine["estimates"][name]["value"] > theirs["estimates"][name]["value"]
        for name in ("snips", "dr")
    ]
    beats = all(wins)
    decision = (
        "beats the champion on SNIPS and DR"
        if beats
        else "does not beat the champion on both SNIPS and DR"
    )
    return {
        "validation_decisions": int(len(validation)),
        "challenger": mine,
        "champion": theirs,
        "beats_champion": beats,
        "decision": decision,
    }
