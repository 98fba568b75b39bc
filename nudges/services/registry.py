"""The model registry: storing a trained model (artefact file + hash + schema + metrics),
promoting a challenger that beats the champion, rolling back, and the champion as decisions
use it, loaded once per process and re-checked by a version stamp. A missing or corrupt
artefact never stops decisions: they fall back to the baseline and say so, and readiness
reports the degradation."""

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core import pipeline
from core.errors import ApplicationError
from core.stamps import stamp_bump, stamps_read, stamps_reader
from nudges import baseline
from nudges.decide import Recommender, Snapshot
from nudges.models import ModelStatus, ModelVersion
from nudges.recommender import ModelBundle, ModelError, sha256
from nudges.services.catalogue import STAMPS, catalogue_snapshot

logger = logging.getLogger(__name__)
MODELS_STAMP = "models"


@dataclass(frozen=True)
class Champion:
    """The champion as loaded: the bundle when it is a usable model, or why it is not."""

    version: str
    bundle: ModelBundle | None
    problem: str | None  # no_model (the baseline is champion), model_unavailable


_lock = threading.Lock()
_cached: tuple[Any, Champion] | None = None
_recommenders: dict[tuple[str, Any], Recommender] = {}


def champion(stamp: tuple[int, ...] | None = None) -> Champion:
    """The serving model, cached per process until the registry's stamp moves (read here
    unless the caller read it already)."""
    global _cached
    stamp = stamps_read((MODELS_STAMP,)) if stamp is None else stamp
    cached = _cached
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _lock:
        if _cached is None or _cached[0] != stamp:
            _cached = (stamp, _load_champion())
        return _cached[1]


def _load_champion() -> Champion:
    row = ModelVersion.objects.filter(status=ModelStatus.CHAMPION).first()
    if row is None or row.kind == "baseline":
        return Champion(row.version if row else baseline.POLICY_VERSION, None, "no_model")
    try:
        blob = (settings.NUDGE_MODELS_DIR / row.artefact).read_bytes()
        if sha256(blob) != row.sha256:
            raise ModelError("artefact hash differs from the registry")
        bundle = ModelBundle.loads(blob)
        bundle.explainer()  # built now, with the model, rather than in a decision
        return Champion(row.version, bundle, None)
    except (OSError, ModelError) as error:
        logger.error("champion model %s unusable (%s); the baseline serves", row.version, error)
        return Champion(row.version, None, "model_unavailable")


ServingState = tuple[Snapshot, Recommender | None, str | None]


def serving_state_reader() -> pipeline.Reader[ServingState]:
    """What a decision serves with: the catalogue snapshot and the recommender prepared for
    it (or None and why not), with one read of all their cache stamps: a reader
    (core.pipeline), read with the decision's other reads."""
    *versions, models = yield from stamps_reader((*STAMPS, MODELS_STAMP))
    snapshot = catalogue_snapshot(tuple(versions))
    return (snapshot, *recommender_for(snapshot, models_stamp=(models,)))


def recommender_for(
    snapshot: Snapshot, *, models_stamp: tuple[int, ...] | None = None
) -> tuple[Recommender | None, str | None]:
    """The champion prepared for this catalogue snapshot (each template's index in the
    model's schema), or None with the reason decisions fall back to the baseline."""
    current = champion(models_stamp)
    if current.bundle is None:
        return None, current.problem
    key = (current.version, snapshot.stamp)
    found = _recommenders.get(key)
    if found is None:
        found = Recommender(
            bundle=current.bundle,
            schema_index=current.bundle.schema.index_of([t.key for t in snapshot.templates]),
            min_tenure_days=float(settings.NUDGE_MIN_TENURE_DAYS),
        )
        _recommenders.clear()
        _recommenders[key] = found
    return found, None


def model_health() -> dict[str, str]:
    """For readiness: which version serves, and whether it is degraded."""
    current = champion()
    state = "degraded" if current.problem == "model_unavailable" else "ok"
    return {"model": state, "model_version": current.version}


@transaction.atomic
def model_register(
    *,
    bundle: ModelBundle,
    metrics: dict[str, Any],
    trained_from: dt.datetime,
    trained_to: dt.datetime,
    status: str = ModelStatus.CANDIDATE,
    note: str = "",
) -> ModelVersion:
    """Write the artefact file and its registry row (the file first: a row never names a
    file that is not there)."""
    blob = bundle.dumps()
    directory: Path = settings.NUDGE_MODELS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{bundle.version}.json"
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(blob)
    tmp.replace(directory / name)
    return ModelVersion.objects.create(
        version=bundle.version,
        kind="agenda",
        status=status,
        artefact=name,
        sha256=sha256(blob),
        schema={"features": bundle.schema.names, "templates": list(bundle.schema.actions)},
        trained_from=trained_from,
        trained_to=trained_to,
        metrics=_jsonable(metrics),
        note=note[:300],
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@transaction.atomic
def baseline_ensure() -> ModelVersion:
    """The baseline is the first champion: a registry row without artefact."""
    row, _ = ModelVersion.objects.get_or_create(
        version=baseline.POLICY_VERSION,
        defaults={
            "kind": "baseline",
            "status": ModelStatus.CHAMPION
            if not ModelVersion.objects.filter(status=ModelStatus.CHAMPION).exists()
            else ModelStatus.RETIRED,
            "promoted_at": timezone.now(),
            "note": "The baseline policy (goal weight x popularity): the first champion.",
        },
    )
    return row


@transaction.atomic
def model_promote(*, version: str, note: str = "") -> ModelVersion:
    """Make `version` the champion; the current one is retired."""
    row = ModelVersion.objects.select_for_update().filter(version=version).first()
    if row is None:
        raise ApplicationError("No such model version.", code="not_found", status=404)
    if row.status == ModelStatus.CHAMPION:
        return row
    ModelVersion.objects.select_for_update().filter(status=ModelStatus.CHAMPION).update(
        status=ModelStatus.RETIRED, updated_at=timezone.now()
    )
    row.status = ModelStatus.CHAMPION
    row.promoted_at = timezone.now()
    if note:
        row.note = note[:300]
    row.save(update_fields=["status", "promoted_at", "note", "updated_at"])
    stamp_bump(MODELS_STAMP)
    return row


@transaction.atomic
def model_rollback() -> ModelVersion:
    """One command back: the champion before the current one serves again (the current one
    is retired)."""
    current = ModelVersion.objects.select_for_update().filter(status=ModelStatus.CHAMPION).first()
    earlier = ModelVersion.objects.filter(status=ModelStatus.RETIRED, promoted_at__isnull=False)
    if current is not None:
        earlier = earlier.exclude(pk=current.pk)
    previous = earlier.order_by("-promoted_at").first()
    if previous is None:
        raise ApplicationError(
            "There is no earlier champion to roll back to.", code="no_previous", status=409
        )
    if current is not None:
        # Forgetting when it was promoted keeps a second rollback from returning to it.
        current.status = ModelStatus.RETIRED
        current.promoted_at = None
        current.note = (f"rolled back on {timezone.now():%Y-%m-%d %H:%M} UTC; " + current.note)[
            :300
        ]
        current.save(update_fields=["status", "promoted_at", "note", "updated_at"])
    previous.status = ModelStatus.CHAMPION
    previous.promoted_at = timezone.now()
    previous.save(update_fields=["status", "promoted_at", "updated_at"])
    stamp_bump(MODELS_STAMP)
    return previous
