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


def _json(data):  # type: ignore[no-untyped-def]
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
