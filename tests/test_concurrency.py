"""Races on PostgreSQL: concurrent requests for the same decision point, and concurrent
decisions for one patient against the daily cap."""

import datetime as dt
import threading

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from nudges.models import Decision, DecisionPoint, Delivery
from nudges.services.decisions import decision_make
from tests.factories import make_patient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _run_in_threads(n: int, target) -> list:
    results: list = [None] * n
    errors: list = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # collected and re-raised below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_requests_for_one_decision_point_decide_once():
    patient, _ = make_patient()
    moment = timezone.now().replace(second=0, microsecond=0)

    results = _run_in_threads(8, lambda i: decision_make(patient=patient, moment=moment))

    assert DecisionPoint.objects.filter(patient=patient).count() == 1
    assert len({decision.pk for decision, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_the_daily_cap_holds_under_concurrent_decisions(settings):
    settings.NUDGE_DAILY_CAP = 2
    settings.NUDGE_MIN_GAP_MINUTES = 0
    patient, _ = make_patient(goals={"activity": 1.0, "sleep": 1.0, "mood": 1.0})
    base = timezone.now().replace(second=0, microsecond=0) - dt.timedelta(minutes=30)

    _run_in_threads(
        12,
        lambda i: decision_make(
            patient=patient,
            moment=base + dt.timedelta(minutes=i),
            rng=np.random.default_rng(i),
        ),
    )

    assert Decision.objects.filter(patient=patient).count() == 12
    assert Delivery.objects.filter(patient=patient).count() <= 2
    assert Decision.objects.filter(patient=patient, reason="daily_cap").exists()
