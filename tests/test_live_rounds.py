"""Live decisions decided together: decisions_make for several patients in one transaction,
and the rounds (nudges.services.live) that gather the requests a process has waiting while a
decision runs. The threaded tests run on PostgreSQL, where the rounds serve gunicorn."""

import datetime as dt
import threading
import time
import uuid

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from nudges.models import Decision, DecisionPoint, Delivery
from nudges.services.decisions import DecisionAsk, decisions_make
from nudges.services.live import DecisionRounds, _Waiting
from patients.models import Patient
from tests.factories import make_patient


@pytest.mark.django_db
def test_several_patients_are_decided_in_one_call_each_once_and_in_order():
    patients = [make_patient()[0] for _ in range(4)]
    moment = timezone.now().replace(second=0, microsecond=0)
    [(first, created)] = decisions_make([DecisionAsk(patients[2], moment=moment)])

    made = decisions_make(
        [DecisionAsk(p, moment=moment, context={"steps_today": i}) for i, p in enumerate(patients)],
        rng=np.random.default_rng(3),
    )

    assert [d.patient_id for d, _ in made] == [p.pk for p in patients]
    assert [c for _, c in made] == [True, True, False, True]
    assert made[2][0].pk == first.pk and created
    assert DecisionPoint.objects.filter(moment=moment).count() == 4
    together = [d for d, c in made if c]
    assert len({d.created_at for d in together}) == 1  # one transaction, one `now`
    assert [d.receipt["context"]["client"]["steps_today"] for d in together] == [0, 1, 3]
    stored = Decision.objects.get(pk=made[3][0].pk)
    assert stored.receipt == made[3][0].receipt


@pytest.mark.django_db
def test_two_asks_for_one_patient_in_one_call_are_refused_and_none_decide_nothing():
    patient, _ = make_patient()

    with pytest.raises(ValueError, match="one ask per patient"):
        decisions_make([DecisionAsk(patient), DecisionAsk(patient)])

    assert decisions_make([]) == []
    assert not DecisionPoint.objects.exists()


class _HeldFirstRound(DecisionRounds):
    """Rounds whose first round waits until `others` requests are queued behind it, so that
    the test knows which requests the next round gathers."""

    def __init__(self, others: int) -> None:
        super().__init__()
        self.others = others

    # The base's hook is a staticmethod; this one needs the instance to see the queue.
    def _decide(self, round_: list[_Waiting]) -> None:  # type: ignore[override]
        if self.rounds == 0:
            deadline = time.monotonic() + 30
            while len(self._queue) < self.others and time.monotonic() < deadline:
                time.sleep(0.005)
        super()._decide(round_)


def _ask_in_threads(rounds: DecisionRounds, asks: list[DecisionAsk]) -> list:
    """The first ask starts a round; the others are asked while it runs."""
    results: list = [None] * len(asks)

    def run(i: int) -> None:
        try:
            results[i] = rounds.decide(asks[i])
        except Exception as error:  # kept for the test to look at
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(asks))]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not rounds._running and time.monotonic() < deadline:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_requests_waiting_while_a_round_runs_are_decided_together_in_the_next():
    patients = [make_patient()[0] for _ in range(6)]
    rounds = _HeldFirstRound(others=5)

    results = _ask_in_threads(rounds, [DecisionAsk(p) for p in patients])

    assert (rounds.rounds, rounds.asks) == (2, 6)
    assert [r[0].patient_id for r in results] == [p.pk for p in patients]
    assert all(created for _, created in results)
    later = Decision.objects.filter(patient__in=patients[1:])
    assert later.count() == 5
    assert len(set(later.values_list("created_at", flat=True))) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_that_fails_in_a_round_fails_alone():
    patients = [make_patient()[0] for _ in range(3)]
    gone = Patient(id=uuid.uuid4(), pseudonym="not-stored")  # never saved
    rounds = _HeldFirstRound(others=3)

    results = _ask_in_threads(rounds, [DecisionAsk(p) for p in [patients[0], gone, *patients[1:]]])

    assert isinstance(results[1], Patient.DoesNotExist)
    assert [r[0].patient_id for r in (results[0], *results[2:])] == [p.pk for p in patients]
    assert Decision.objects.count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_patients_requests_go_to_separate_rounds_and_the_daily_cap_holds(settings):
    settings.NUDGE_DAILY_CAP = 2
    settings.NUDGE_MIN_GAP_MINUTES = 0
    patient, _ = make_patient(goals={"activity": 1.0, "sleep": 1.0, "mood": 1.0})
    base = timezone.now().replace(second=0, microsecond=0) - dt.timedelta(minutes=30)
    rounds = _HeldFirstRound(others=7)

    results = _ask_in_threads(
        rounds, [DecisionAsk(patient, moment=base + dt.timedelta(minutes=i)) for i in range(8)]
    )

    assert rounds.rounds == 8  # one request of a patient per round
    assert all(created for _, created in results)
    assert Decision.objects.filter(patient=patient).count() == 8
    assert Delivery.objects.filter(patient=patient).count() <= 2
    assert Decision.objects.filter(patient=patient, reason="daily_cap").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_repeats_of_one_request_in_the_same_minute_get_the_first_decision():
    patient, _ = make_patient()
    moment = timezone.now().replace(second=0, microsecond=0)
    rounds = _HeldFirstRound(others=3)

    results = _ask_in_threads(rounds, [DecisionAsk(patient, moment=moment) for _ in range(4)])

    assert len({decision.pk for decision, _ in results}) == 1
    assert [created for _, created in results] == [True, False, False, False]
    assert DecisionPoint.objects.filter(patient=patient).count() == 1
