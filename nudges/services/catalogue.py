"""The template catalogue: loading the reviewed file, and the in-process snapshot every
decision reads (rebuilt only when a template or the popularity table changes)."""

import json
import threading
from pathlib import Path

import numpy as np
from django.db import transaction

from core.stamps import stamp_bump, stamps_read
from nudges.decide import Snapshot, TemplateInfo
from nudges.models import Template, TemplatePopularity

TEMPLATES_FILE = Path(__file__).resolve().parent.parent / "data" / "templates.json"
CATALOGUE_STAMP = "catalogue"
POPULARITY_STAMP = "popularity"
STAMPS = (CATALOGUE_STAMP, POPULARITY_STAMP)
DEFAULT_POPULARITY = 0.3

_lock = threading.Lock()
_cached: Snapshot | None = None


@transaction.atomic
def templates_load(*, path: Path = TEMPLATES_FILE) -> int:
    """Create the templates of the reviewed catalogue file that do not exist yet (by slug and
    version); an existing version is never edited in place. Returns how many were created."""
    records = json.loads(path.read_text())
    existing = set(Template.objects.values_list("slug", "version"))
    fresh = [
        Template(
            slug=r["slug"],
            version=r["version"],
            title=r["title"],
            body=r["body"],
            goal=r["goal"],
            category=r["category"],
            intensity=r["intensity"],
            tags=sorted(r["tags"]),
        )
        for r in records
        if (r["slug"], r["version"]) not in existing
    ]
    for template in fresh:
        template.full_clean()
    Template.objects.bulk_create(fresh)
    if fresh:
        stamp_bump(CATALOGUE_STAMP)
    return len(fresh)


def catalogue_snapshot() -> Snapshot:
    """The templates in use and their popularity, cached per process until a stamp moves.
    Costs one small query when nothing changed."""
    global _cached
    stamp = stamps_read(STAMPS)
    snapshot = _cached
    if snapshot is not None and snapshot.stamp == stamp:
        return snapshot
    with _lock:
        if _cached is None or _cached.stamp != stamp:
            _cached = _build_snapshot(stamp)
        return _cached


def _build_snapshot(stamp: tuple[int, ...]) -> Snapshot:
    templates = _templates_in_use()
    column = {t.id: i for i, t in enumerate(templates)}
    m = len(templates)
    overall = np.full(m, DEFAULT_POPULARITY)
    by_group: dict[str, np.ndarray] = {}
    rows = TemplatePopularity.objects.filter(template_id__in=column).values_list(
        "template_id", "group__slug", "rate"
    )
    for template_id, group, rate in rows:
        if group is None:
            overall[column[template_id]] = rate
        else:
            by_group.setdefault(group, np.full(m, np.nan))[column[template_id]] = rate
    for values in by_group.values():
        # A template never sent in a group takes its overall popularity there.
        np.copyto(values, overall, where=np.isnan(values))
    return Snapshot(
        templates=tuple(templates),
        popularity_overall=overall,
        popularity_by_group=by_group,
        stamp=stamp,
    )


def _templates_in_use() -> list[TemplateInfo]:
    """The newest active version of each slug, ordered by slug."""
    latest: dict[str, Template] = {}
    for template in Template.objects.filter(is_active=True).order_by("slug", "-version"):
        latest.setdefault(template.slug, template)
    return [
        TemplateInfo(
            id=t.id,
            slug=t.slug,
            version=t.version,
            goal=t.goal,
            category=t.category,
            intensity=t.intensity,
            tags=frozenset(t.tags),
        )
        for t in latest.values()
    ]
