"""A real Celery worker consuming from Redis runs the scheduled work against the test
database: held nudges are released when their quiet hours end and pushed to the phone."""

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from nudges import tasks
from nudges.models import Delivery, DeliveryState, PushMessage
from tests.factories import make_delivery_row, make_patient

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def worker(django_db_setup, django_db_blocker):
    """`celery worker` in a subprocess, on the test database and the configured Redis."""
    url = urlsplit(os.environ["DATABASE_URL"])
    database_url = urlunsplit(url._replace(path="/" + connection.settings_dict["NAME"]))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    try:
        yield process
    finally:
        celery_app.conf.task_always_eager = eager
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for(predicate, timeout: float = 45.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def test_a_worker_releases_held_nudges_and_pushes_them(worker):
    patient, _ = make_patient()
    delivery = make_delivery_row(
        patient, DeliveryState.HELD, due_at=timezone.now() - dt.timedelta(minutes=1)
    )

    tasks.deliveries_release_held.delay()
    released = _wait_for(lambda: Delivery.objects.get(pk=delivery.pk).state == DeliveryState.READY)
    assert released, worker.stderr.read1().decode() if worker.poll() is not None else "timeout"
    assert PushMessage.objects.filter(delivery=delivery).exists()

    tasks.outbox_dispatch.delay()
    assert _wait_for(lambda: Delivery.objects.get(pk=delivery.pk).state == DeliveryState.DELIVERED)
    assert PushMessage.objects.get(delivery=delivery).state == "sent"


def test_a_worker_leaves_nudges_whose_quiet_hours_have_not_ended(worker):
    patient, _ = make_patient()
    later = make_delivery_row(
        patient, DeliveryState.HELD, due_at=timezone.now() + dt.timedelta(hours=3)
    )
    due = make_delivery_row(
        make_patient()[0], DeliveryState.HELD, due_at=timezone.now() - dt.timedelta(minutes=1)
    )

    tasks.deliveries_release_held.delay()

    assert _wait_for(lambda: Delivery.objects.get(pk=due.pk).state == DeliveryState.READY)
    assert Delivery.objects.get(pk=later.pk).state == DeliveryState.HELD
