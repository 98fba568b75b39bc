"""Reads for nudges. Every patient-facing read is by the patient's own id
(deliveries_for_patient, or the inbox's query in current_nudges), so a delivery of another
patient is simply not found."""

import datetime as dt
import functools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet

from core import pipeline, raw
from core.bulk import DbFormat
from nudges import lifecycle
from nudges.availability import local_day_start
from nudges.decide import PatientFacts
from nudges.models import Delivery, DeliveryState, Template, TemplateDecline
from patients.models import CarePlanGoal, Consent, Patient, Purpose
from safety.models import GroupMembership, MedicalGroup, StandingApproval
from safety.selectors import groups_key


def deliveries_for_patient(patient: Patient) -> QuerySet[Delivery]:
    return Delivery.objects.filter(patient=patient)


def current_nudges(patient: Patient, *, now: dt.datetime, limit: int = 20) -> list[Delivery]:
    """The nudges the patient should see now, with their templates: visible states, not
    expired, a snoozed one only once its time has come; newest first. The inbox reads this on
    every app start, so it is one hand-written query (core.raw), by the patient's own id."""
    db = DbFormat()
    visible = sorted(lifecycle.VISIBLE)
    at = db.datetime(now)
    params = [db.id(patient.pk), *visible, at, DeliveryState.SNOOZED.value, at, limit]
    rows = raw.fetch(_current_query(len(visible), connection.vendor), params, _CURRENT_FIELDS)
    n = len(raw.fields_of(Delivery))
    out = []
    for values in rows:
        delivery = raw.instance(Delivery, values[:n])
        Delivery.template.field.set_cached_value(delivery, raw.instance(Template, values[n:]))
        out.append(cast(Delivery, delivery))
    return out


_CURRENT_FIELDS = [*raw.fields_of(Delivery), *raw.fields_of(Template)]


@functools.lru_cache(maxsize=4)
def _current_query(states: int, vendor: str) -> str:
    marks = raw.marks(states)
    return (
        f"SELECT {raw.columns(Delivery, 'd')}, {raw.columns(Template, 't')} "  # noqa: S608
        f"FROM {raw.table(Delivery)} d JOIN {raw.table(Template)} t ON t.id = d.template_id "
        f"WHERE d.patient_id = %s AND d.state IN ({marks}) AND d.expires_at > %s "
        "AND NOT (d.state = %s AND d.due_at IS NOT NULL AND d.due_at > %s) "
        "ORDER BY d.created_at DESC LIMIT %s"
    )


def delivery_history(
    patient: Patient, *, now: dt.datetime, deliveries: list[tuple] | None = None
) -> dict:
    """What the delivery policy needs about past deliveries: how many count against today's
    cap (the patient's local day), the last nudge within the minimum gap, and the templates
    sent within the repeat window. `deliveries` may be rows the caller already read
    (nudges.services.serving.recent_deliveries_reader, which reaches further back); else one
    query."""
    day_start = local_day_start(now, patient.timezone)
    window_start = now - dt.timedelta(days=settings.NUDGE_REPEAT_WINDOW_DAYS)
    gap_start = now - dt.timedelta(minutes=settings.NUDGE_MIN_GAP_MINUTES)
    since = min(day_start, window_start, gap_start)
    rows: Iterable[tuple[str, dt.datetime]]
    if deliveries is None:
        rows = (
            deliveries_for_patient(patient)
            .filter(created_at__gte=since, state__in=lifecycle.COUNTED)
            .values_list("template__slug", "created_at")
        )
    else:
        rows = [
            (slug, created)
            for _, slug, _, _, _, created, state in deliveries
            if created >= since and state in lifecycle.COUNTED
        ]
    recent, today, last = set(), 0, None
    for slug, created_at in rows:
        if created_at >= window_start:
            recent.add(slug)
        if created_at >= day_start:
            today += 1
        if created_at >= gap_start and (last is None or created_at > last):
            last = created_at
    return {"recent_slugs": frozenset(recent), "counted_today": today, "last_nudged_at": last}


def facts_reader(
    patients: Sequence[Patient], *, now: dt.datetime, ruleset_version: int | None
) -> pipeline.Reader[list[tuple]]:
    """The rows of the one query that reads everything a decision needs about each patient,
    for one patient (a live decision) or a chunk of a batch: a reader (core.pipeline), read
    with the decision's other reads; facts_assemble makes the facts of them."""
    db = DbFormat()
    keys = [db.id(p.pk) for p in patients]
    sql = _facts_query(len(keys), connection.vendor)
    [rows] = yield [(sql, [*keys * 5, ruleset_version, db.datetime(now)])]
    return rows


def facts_assemble(
    patients: Sequence[Patient],
    rows: Sequence[tuple],
    *,
    now: dt.datetime,
    ruleset_version: int | None,
    deliveries: Sequence[tuple],
    arms: Sequence[str],
) -> list[PatientFacts]:
    """Each patient's facts from facts_reader's rows, read for this `ruleset_version` and
    `now`, and their deliveries (nudges.services.serving.recent_deliveries_reader). Groups are
    None (unknown, so every candidate goes to review) until the patient's codes have been
    mapped to groups; standing approvals count only when given under the active rule set for
    the patient's current groups, and not yet expired."""
    db = DbFormat()
    keys = [db.id(p.pk) for p in patients]
    agenda: dict[Any, list[tuple[float, str]]] = defaultdict(list)
    groups: dict[Any, set[str]] = defaultdict(set)
    group_keys: dict[str, Any] = {}
    consent: dict[Any, dict[str, bool]] = defaultdict(dict)
    declined: dict[Any, set[str]] = defaultdict(set)
    approvals: dict[Any, list[tuple[str, str, str]]] = defaultdict(list)
    for kind, pid, name, value, groups_key_, group in rows:
        pid = db.id(pid)
        if kind == "g":
            agenda[pid].append((-value, name))
        elif kind == "m":
            groups[pid].add(name)
            group_keys[name] = uuid.UUID(groups_key_)
        elif kind == "c":
            consent[pid][name] = bool(value)
        elif kind == "d":
            declined[pid].add(name)
        else:
            approvals[pid].append((name, groups_key_, group or ""))
    delivered: dict[Any, list[tuple]] = defaultdict(list)
    for row in deliveries:
        delivered[db.id(row[0])].append(row)
    purposes = Purpose.values
    out = []
    for p, key, arm in zip(patients, keys, arms, strict=True):
        history = delivery_history(p, now=now, deliveries=delivered[key])
        known = frozenset(groups[key]) if p.groups_refreshed_at else None
        approved: dict[str, set[str]] = defaultdict(set)
        if known is not None and ruleset_version is not None:
            current = groups_key(known)
            for slug, approval_key, group in approvals[key]:
                if approval_key == current:
                    approved[slug].add(group)
        out.append(
            PatientFacts(
                patient_id=p.pk,
                timezone=p.timezone,
                quiet_start=p.quiet_start,
                quiet_end=p.quiet_end,
                snoozed_until=p.snoozed_until,
                is_active=p.is_active,
                agenda={goal: -weight for weight, goal in sorted(agenda[key])},
                groups=known,
                consent={purpose: consent[key].get(purpose, False) for purpose in purposes},
                counted_today=history["counted_today"],
                last_nudged_at=history["last_nudged_at"],
                recent_slugs=history["recent_slugs"],
                declined=frozenset(declined[key]),
                approved={slug: frozenset(g) for slug, g in approved.items()},
                arm=arm,
                group_keys={slug: group_keys[slug] for slug in groups[key]},
            )
        )
    return out


@functools.lru_cache(maxsize=64)
def _facts_query(n: int, vendor: str) -> str:
    """The facts of n patients as one UNION of (kind, patient, name, value, groups key,
    group): agenda goals (g), group memberships (m, with the group's key in the groups key's
    place), consents (c), declines (d) and standing approvals of the rule set in force,
    unexpired (a). Parameters: the patient ids five times, the rule set version and now.
    Cached per size and database vendor."""
    q = connection.ops.quote_name
    ids = raw.marks(n)

    def table(model: Any) -> str:
        return q(model._meta.db_table)

    goal, member, group = table(CarePlanGoal), table(GroupMembership), table(MedicalGroup)
    consent, decline, approval = table(Consent), table(TemplateDecline), table(StandingApproval)
    # Names from the models' metadata; every value is a bound parameter.
    sql = f"""
        SELECT 'g', patient_id, goal, weight, NULL, NULL FROM {goal} WHERE patient_id IN ({ids})
        UNION ALL
        SELECT 'm', m.patient_id, g.slug, NULL, CAST(g.id AS TEXT), NULL
          FROM {member} m JOIN {group} g ON g.id = m.group_id WHERE m.patient_id IN ({ids})
        UNION ALL
        SELECT 'c', patient_id, purpose, CASE WHEN granted THEN 1.0 ELSE 0.0 END, NULL, NULL
          FROM {consent} WHERE patient_id IN ({ids})
        UNION ALL
        SELECT 'd', patient_id, slug, NULL, NULL, NULL FROM {decline} WHERE patient_id IN ({ids})
        UNION ALL
        SELECT 'a', a.patient_id, a.template_slug, NULL, a.groups_key, g.slug
          FROM {approval} a LEFT JOIN {group} g ON g.id = a.group_id
         WHERE a.patient_id IN ({ids}) AND a.ruleset_version = %s AND a.expires_at > %s
    """  # noqa: S608
    return sql
