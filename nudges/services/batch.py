"""Batch decisions: one slot for every patient (python manage.py generate_decisions). The run
is planned as chunks of patients (primary-key ranges); each chunk is one Celery task that loads
its patients' facts in a few queries, decides with the same pure core as a live decision (one
call per time zone, since the slot's moment differs by zone), and writes everything with bulk
inserts. A decision point is unique per (patient, moment): a chunk run twice, or by two workers
at once, decides each point once."""

import datetime as dt
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from django.db import transaction
from django.db.models import Count, Sum

from core.bulk import DbFormat, insert_new_rows
from nudges import rows as columns
from nudges.models import (
    BatchChunk,
    BatchRun,
    DecisionPoint,
    Trigger,
)
from nudges.services.decisions import outcomes_for, outcomes_write
from patients.models import Patient

# Patients per chunk (one Celery task). Each chunk decides its patients' time zones one at a
# time, and every zone costs a few queries and model calls whatever its size: 1,000 used 5%
# less CPU per decision than 500 (docs/benchmarks.md), while 100,000 patients still make 100
# tasks to share among the workers.
CHUNK_SIZE = 1000


def batch_plan(*, slot: dt.time, day: dt.date, chunk_size: int = CHUNK_SIZE) -> BatchRun:
    """Split the active patients into chunks of `chunk_size`, by primary key."""
    ids = list(Patient.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True))
    chunks = [
        [str(ids[i]), str(ids[min(i + chunk_size, len(ids)) - 1])]
        for i in range(0, len(ids), chunk_size)
    ]
    return BatchRun.objects.create(
        slot=slot, day=day, chunk_size=chunk_size, chunks=chunks, patients=len(ids)
    )


def batch_chunk(*, run_id: Any, chunk: int, rng: np.random.Generator | None = None) -> int:
    """Decide the run's slot for the patients of one chunk; returns the decisions made now
    (0 when every point of the chunk was decided already)."""
    run = BatchRun.objects.get(pk=run_id)
    first, last = run.chunks[chunk]
    rng = rng or np.random.default_rng()
    made = 0
    with transaction.atomic():
        patients = list(
            Patient.objects.select_for_update()
            .filter(is_active=True, pk__gte=first, pk__lte=last)
            .order_by("pk")
        )
        by_zone: dict[str, list[Patient]] = defaultdict(list)
        for patient in patients:
            by_zone[patient.timezone].append(patient)
        for zone, members in by_zone.items():
            moment = dt.datetime.combine(run.day, run.slot, tzinfo=ZoneInfo(zone)).astimezone(
                dt.UTC
            )
            made += _decide_zone(members, moment, rng)
        BatchChunk.objects.get_or_create(run=run, index=chunk, defaults={"decisions": made})
    return made


def batch_progress(run: BatchRun) -> tuple[int, int]:
    """(chunks done, decisions made) so far."""
    done = run.done.aggregate(n=Count("id"), decisions=Sum("decisions"))
    return done["n"], done["decisions"] or 0


def _decide_zone(patients: list[Patient], moment: dt.datetime, rng: np.random.Generator) -> int:
    """Claim the decision points (insert, skipping those that exist), then decide those."""
    db = DbFormat()
    moment = moment.replace(second=0, microsecond=0)
    stamp = db.datetime(moment)
    ids = db.new_ids(len(patients), moment)
    claimed = dict(
        insert_new_rows(
            DecisionPoint,
            list(columns.POINT_COLUMNS),
            [
                (ids[i], stamp, stamp, db.id(p.pk), stamp, Trigger.SLOT.value)
                for i, p in enumerate(patients)
            ],
            returning=["patient", "id"],
        )
    )
    mine = [p for p in patients if p.pk in claimed]
    if not mine:
        return 0
    now = moment
    snapshot, facts, outcomes = outcomes_for(
        mine, now=now, triggers=[Trigger.SLOT.value] * len(mine), contexts=None, rng=rng
    )
    outcomes_write([claimed[p.pk] for p in mine], mine, facts, outcomes, snapshot, now)
    return len(mine)
