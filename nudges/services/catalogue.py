"""The template catalogue: loading the reviewed file, clinicians' sign-off and emergency stop
of templates, and the in-process snapshot every decision reads (rebuilt only when a template,
the popularity table or the active rule set changes, or the day turns)."""

import datetime as dt
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from core.errors import ApplicationError
from core.locks import safety_lock_exclusive
from core.stamps import stamp_bump, stamps_read
from nudges import lifecycle
from nudges.decide import Snapshot, TemplateInfo
from nudges.models import (
    Delivery,
    ReviewRequest,
    ReviewState,
    Template,
    TemplatePopularity,
    TemplateStatus,
)
from nudges.services.transitions import deliveries_block
from safety.selectors import active_rule_set, compiled_rules
from safety.services import RULES_STAMP

TEMPLATES_FILE = Path(__file__).resolve().parent.parent / "data" / "templates.json"
CATALOGUE_STAMP = "catalogue"
POPULARITY_STAMP = "popularity"
STAMPS = (CATALOGUE_STAMP, POPULARITY_STAMP, RULES_STAMP)
DEFAULT_POPULARITY = 0.3

_lock = threading.Lock()
_cached: Snapshot | None = None


@transaction.atomic
def templates_load(*, path: Path = TEMPLATES_FILE) -> int:
    """Create the templates of the reviewed catalogue file that do not exist yet (by slug and
    version); an existing version is never edited in place. New versions wait for a
    clinician's sign-off (template_signoff) before any decision uses them. Returns how many
    were created."""
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
    return len(fresh)


@transaction.atomic
def template_signoff(*, template: Template, by: User) -> Template:
    """A clinician signs a pending version off: it comes into use, and the version of the
    same template in use until now is retired."""
    [signed] = templates_signoff(templates=[template], by=by)
    return signed


@transaction.atomic
def templates_signoff(*, templates: list[Template], by: User) -> list[Template]:
    """Sign off several pending versions at once (e.g. a reviewed catalogue file): all or
    none. At most one version per template."""
    if not by.groups.filter(name="clinician").exists():
        raise ApplicationError(
            "Only a clinician may sign a template off.", code="permission_denied", status=403
        )
    locked = list(Template.objects.select_for_update().filter(pk__in=[t.pk for t in templates]))
    for template in locked:
        if template.status != TemplateStatus.PENDING:
            raise ApplicationError(
                f"Only a template awaiting sign-off can be signed off ({template} is "
                f"{template.status}).",
                code="not_pending",
                status=409,
            )
    slugs = [t.slug for t in locked]
    if len(set(slugs)) != len(slugs):
        raise ApplicationError("Sign off one version per template at a time.", status=409)
    now = timezone.now()
    Template.objects.filter(slug__in=slugs, status=TemplateStatus.ACTIVE).update(
        status=TemplateStatus.RETIRED, updated_at=now
    )
    Template.objects.filter(pk__in=[t.pk for t in locked]).update(
        status=TemplateStatus.ACTIVE, signed_off_by=by, signed_off_at=now, updated_at=now
    )
    stamp_bump(CATALOGUE_STAMP)
    for template in locked:
        template.status, template.signed_off_by, template.signed_off_at = (
            TemplateStatus.ACTIVE,
            by,
            now,
        )
    return locked


@transaction.atomic
def template_stop(*, template: Template, by: User, reason: str) -> int:
    """Emergency stop: the template is out of use at once. Every delivery of it not yet in
    the patient's app is blocked, and those in the app but not acted on are recalled
    (blocked too, so the app stops showing them); their pending reviews are withdrawn. The
    exclusive safety lock orders the stop against deliveries checking the gate. Returns how
    many deliveries were blocked."""
    if not reason.strip():
        raise ApplicationError("Say why the template is stopped.", fields={"reason": "required"})
    safety_lock_exclusive()
    template = Template.objects.select_for_update().get(pk=template.pk)
    if template.status not in (TemplateStatus.ACTIVE, TemplateStatus.PENDING):
        raise ApplicationError(
            f"This template is {template.status}; only one in use or pending can be stopped.",
            code="not_stoppable",
            status=409,
        )
    now = timezone.now()
    template.status = TemplateStatus.STOPPED
    template.stopped_by = by
    template.stopped_at = now
    template.stop_reason = reason.strip()[:300]
    template.save(update_fields=["status", "stopped_by", "stopped_at", "stop_reason", "updated_at"])
    stamp_bump(CATALOGUE_STAMP)
    affected = list(
        Delivery.objects.filter(
            template=template, state__in=lifecycle.PENDING | lifecycle.RECALLABLE
        ).values_list("pk", flat=True)
    )
    blocked = deliveries_block(
        delivery_ids=affected,
        from_states=lifecycle.PENDING | lifecycle.RECALLABLE,
        actor="emergency_stop",
        reason="template_stopped",
    )
    ReviewRequest.objects.filter(delivery_id__in=affected, state=ReviewState.PENDING).update(
        state=ReviewState.WITHDRAWN, closed_at=now, updated_at=now
    )
    return blocked


def catalogue_snapshot(versions: tuple[int, ...] | None = None) -> Snapshot:
    """The templates in use, their popularity and the rules in force, cached per process
    until a stamp moves or the (UTC) day turns. Costs one small query when nothing changed,
    none when the caller read the STAMPS' `versions` already."""
    global _cached
    versions = stamps_read(STAMPS) if versions is None else versions
    stamp = (*versions, timezone.now().astimezone(dt.UTC).date())
    snapshot = _cached
    if snapshot is not None and snapshot.stamp == stamp:
        return snapshot
    with _lock:
        if _cached is None or _cached.stamp != stamp:
            _cached = _build_snapshot(stamp)
        return _cached


def cached_ruleset_version() -> int | None:
    """The rule set version of the snapshot this process serves with now, if any (it may be
    out of date: a guess, for reads sent before the stamps are read)."""
    snapshot = _cached
    return snapshot.ruleset_version if snapshot is not None else None


def _build_snapshot(stamp: tuple) -> Snapshot:
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
        rules=compiled_rules(active_rule_set(), day=stamp[-1]),
        stamp=stamp,
    )


def _templates_in_use() -> list[TemplateInfo]:
    """The signed-off version of each template (at most one per slug), ordered by slug."""
    active = Template.objects.filter(status=TemplateStatus.ACTIVE).order_by("slug")
    return [template_facts(t) for t in active]


def template_facts(template: Template) -> TemplateInfo:
    """What decisions and the safety rules know of a template version."""
    return TemplateInfo(
        id=template.pk,
        slug=template.slug,
        version=template.version,
        goal=template.goal,
        category=template.category,
        intensity=template.intensity,
        tags=frozenset(template.tags),
    )


@dataclass(frozen=True)
class SignedVersion:
    """The fixed content of a signed-off template version (not its status, which a stop
    changes)."""

    facts: TemplateInfo
    text: tuple[str, str, str, str]  # title, body, goal, category


_versions: dict[Any, SignedVersion] = {}


def signed_versions(ids: Iterable[Any]) -> dict[Any, SignedVersion]:
    """These template versions, kept per process: a version that can reach a patient is
    signed off, and a signed-off version never changes (an edit is a new version). Those not
    kept yet are read in one query; one still pending is read each time, never kept."""
    wanted = set(ids)
    found = {pk: _versions[pk] for pk in wanted if pk in _versions}
    missing = wanted - found.keys()
    if missing:
        if len(_versions) > 10_000:
            _versions.clear()
        for t in Template.objects.filter(pk__in=missing):
            found[t.pk] = version = SignedVersion(
                template_facts(t), (t.title, t.body, t.goal, t.category)
            )
            if t.status != TemplateStatus.PENDING:
                _versions[t.pk] = version
    return found


def template_text(template_id: Any) -> tuple[str, str, str, str]:
    """(title, body, goal, category) of a template version (see signed_versions)."""
    return signed_versions([template_id])[template_id].text
