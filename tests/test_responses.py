"""The hand-written hot responses (nudges.responses) give exactly what the documented DRF
serializers give, for decisions as the service returns them (in memory, just written) and as
read back from the database."""

import datetime as dt
import json

import numpy as np
import pytest
from django.utils import timezone

from nudges.models import Decision, Delivery, DeliveryState
from nudges.responses import decision_body, nudge_body
from nudges.serializers import DecisionSerializer, NudgeSerializer
from nudges.services.decisions import decision_make
from tests.factories import make_nudge, make_patient

pytestmark = pytest.mark.django_db


def _json(data):
    return json.loads(json.dumps(data))


def test_decision_bodies_match_the_serializer_in_memory_and_from_the_database():
    seen = set()
    patients = [
        make_patient(goals={"activity": 0.8, "sleep": 0.4}, groups=("hypertension",))[0],
        make_patient(goals={"mood": 0.9, "diet": 0.5}, groups=("depression",))[0],
        make_patient(goals={"medication": 0.9}, quiet=(dt.time(0, 0), dt.time(23, 59)))[0],
    ]
    start = timezone.now()
    for i in range(40):
        patient = patients[i % len(patients)]
        decision, _ = decision_make(
            patient=patient,
            now=start + dt.timedelta(hours=3 * i),
            rng=np.random.default_rng(i),
        )
        stored = Decision.objects.select_related("decision_point", "delivery__template").get(
            pk=decision.pk
        )
        expected = _json(DecisionSerializer(stored).data)
        assert _json(decision_body(decision)) == expected
        assert _json(decision_body(stored)) == expected
        delivery = getattr(stored, "delivery", None)
        seen.add((stored.outcome, delivery.state if delivery else None))
    # The run covered a nudge shown, one held or in review, and no nudge.
    assert ("nudge", DeliveryState.READY) in seen
    assert any(state in {DeliveryState.HELD, DeliveryState.AWAITING_REVIEW} for _, state in seen)
    assert any(outcome == "no_nudge" for outcome, _ in seen)


def test_nudge_bodies_match_the_serializer_with_and_without_the_template_loaded(patient_a):
    delivery = make_nudge(patient_a[0])
    expected = _json(NudgeSerializer(delivery).data)
    assert _json(nudge_body(delivery)) == expected
    bare = Delivery.objects.get(pk=delivery.pk)  # template not loaded: the cached texts
    assert _json(nudge_body(bare)) == expected
    assert expected["title"] and expected["state"] == DeliveryState.READY


def test_the_inbox_query_reads_what_its_definition_says(patient_a, patient_b):
    """current_nudges (hand-written SQL) against the same definition in the ORM, over every
    state, snoozed nudges due before and after now, an expired one, and another patient's."""
    from django.db.models import Q

    from nudges import lifecycle
    from nudges.selectors import current_nudges
    from tests.factories import make_delivery_row

    patient, other = patient_a[0], patient_b[0]
    now = timezone.now()
    for state in DeliveryState.values:
        make_delivery_row(patient, state)
    make_delivery_row(patient, DeliveryState.SNOOZED, due_at=now - dt.timedelta(hours=1))
    make_delivery_row(patient, DeliveryState.SNOOZED, due_at=now + dt.timedelta(hours=1))
    gone = make_delivery_row(patient, DeliveryState.READY)
    Delivery.objects.filter(pk=gone.pk).update(expires_at=now - dt.timedelta(minutes=1))
    make_delivery_row(other, DeliveryState.READY)

    shown = current_nudges(patient, now=now)

    expected = list(
        Delivery.objects.filter(patient=patient, state__in=lifecycle.VISIBLE, expires_at__gt=now)
        .exclude(Q(state=DeliveryState.SNOOZED) & Q(due_at__gt=now))
        .order_by("-created_at")
    )
    assert [d.pk for d in shown] == [d.pk for d in expected]
    assert len(shown) >= 4  # ready, delivered, opened, the snoozed one now due
    for delivery, reference in zip(shown, expected, strict=True):
        assert _json(NudgeSerializer(delivery).data) == _json(NudgeSerializer(reference).data)
        assert delivery.template.title == reference.template.title


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns"])
def test_times_are_written_as_drf_writes_them_in_the_current_time_zone(zone):
    from zoneinfo import ZoneInfo

    from rest_framework import serializers

    from nudges.responses import _time

    drf = serializers.DateTimeField()
    moments = [
        dt.datetime(2026, 3, 29, 0, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 29, 1, 0, 0, 123456, tzinfo=dt.UTC),  # Paris moves its clocks
        dt.datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Asia/Kolkata")),
    ]
    with timezone.override(zone):
        for moment in moments:
            assert _time(moment) == drf.to_representation(moment)
        assert _time(None) is None
