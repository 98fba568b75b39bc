"""nudges.services.serving.model_inputs: the history features a live decision is made with
agree with a plain reading of their definitions (nudges.features' decay scales, only
deliveries strictly before now, per patient, per (patient, template), per goal and per
category), including a delivery of a template no longer in the catalogue and one dated
after now."""

import datetime as dt
import math
import uuid

import numpy as np

from nudges import features as F
from nudges.decide import PatientFacts, Snapshot, TemplateInfo
from nudges.models import DeliveryState
from nudges.services.serving import model_inputs
from patients.models import Patient

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


def _template(slug: str, goal: str, category: str) -> TemplateInfo:
    return TemplateInfo(uuid.uuid4(), slug, 1, goal, category, "low", frozenset())


def _facts(patient: Patient) -> PatientFacts:
    return PatientFacts(
        patient_id=patient.pk,
        timezone=patient.timezone,
        quiet_start=dt.time(22),
        quiet_end=dt.time(7),
        snoozed_until=None,
        is_active=True,
        agenda={F.GOALS[0]: 1.0},
        groups=frozenset(),
        consent={},
        counted_today=0,
        last_nudged_at=None,
        recent_slugs=frozenset(),
    )


def test_history_features_match_their_definitions():
    goal_a, goal_b = F.GOALS[0], F.GOALS[1]
    cat_a, cat_b = F.CATEGORIES[0], F.CATEGORIES[1]
    templates = (
        _template("walk", goal_a, cat_a),
        _template("stretch", goal_a, cat_b),
        _template("sleep", goal_b, cat_b),
    )
    snapshot = Snapshot(templates, np.zeros(3), {}, None)
    patients = [
        Patient(id=uuid.uuid4(), timezone="Europe/Paris", created_at=NOW - dt.timedelta(days=40)),
        Patient(id=uuid.uuid4(), timezone="UTC", created_at=NOW - dt.timedelta(days=3)),
        Patient(id=uuid.uuid4(), timezone="UTC", created_at=NOW),  # nothing delivered yet
    ]
    first, second = patients[0].pk, patients[1].pk

    def delivery(patient, slug, goal, category, days_ago, state):
        return (patient, slug, 1, goal, category, NOW - dt.timedelta(days=days_ago), state)

    done, sent = DeliveryState.DONE, DeliveryState.DELIVERED
    deliveries = [
        delivery(first, "walk", goal_a, cat_a, 0.5, done),
        delivery(first, "walk", goal_a, cat_a, 4.0, sent),
        delivery(first, "sleep", goal_b, cat_b, 2.0, done),
        delivery(first, "retired", goal_b, cat_a, 1.0, done),  # not in the catalogue now
        delivery(first, "walk", goal_a, cat_a, -0.1, done),  # after now: does not count
        delivery(second, "stretch", goal_a, cat_b, 9.0, sent),
    ]
    schema = F.Schema.from_templates(
        [],
        [
            {"key": t.key, "goal": t.goal, "category": t.category, "intensity": "low"}
            for t in templates
        ],
    )

    inputs = model_inputs(
        patients=patients,
        facts=[_facts(p) for p in patients],
        deliveries=deliveries,
        snapshot=snapshot,
        schema=schema,
        now=NOW,
        triggers=["app_open"] * 3,
    )

    def decayed(match, tau, acted_only=False):
        total = 0.0
        for d in deliveries:
            age = (NOW - d[5]).total_seconds() / 86400.0
            if age > 0 and match(d) and (not acted_only or d[6] == done):
                total += math.exp(-age / tau)
        return total

    def days_since(match):
        ages = [(NOW - d[5]).total_seconds() / 86400.0 for d in deliveries if match(d)]
        ages = [age for age in ages if age > 0]
        return min(ages) if ages else math.nan

    for i, p in enumerate(patients):
        mine = lambda d, p=p: d[0] == p.pk  # noqa: E731
        assert math.isclose(inputs.patient.sent_3d[i], decayed(mine, F.TAU_SENT_PATIENT))
        assert math.isclose(inputs.patient.acts_7d[i], decayed(mine, F.TAU_ACTS_PATIENT, True))
        assert math.isclose(inputs.patient.sent_14d[i], decayed(mine, F.TAU_RATE))
        assert math.isclose(inputs.patient.acts_14d[i], decayed(mine, F.TAU_RATE, True))
        for j, t in enumerate(templates):
            pair = lambda d, p=p, t=t: d[0] == p.pk and d[1] == t.slug  # noqa: E731
            goal = lambda d, p=p, t=t: d[0] == p.pk and d[3] == t.goal  # noqa: E731
            cat = lambda d, p=p, t=t: d[0] == p.pk and d[4] == t.category  # noqa: E731
            expected = {
                "sent_7d": decayed(pair, F.TAU_SENT_PAIR),
                "acted_14d": decayed(pair, F.TAU_ACTS_PAIR, True),
                "days_since": days_since(pair),
                "days_since_goal": days_since(goal),
                "category_sent_14d": decayed(cat, F.TAU_RATE),
                "category_acts_14d": decayed(cat, F.TAU_RATE, True),
            }
            for name, value in expected.items():
                got = inputs.pair[name][i, j]
                if math.isnan(value):
                    assert math.isnan(got), (name, i, j)
                else:
                    assert math.isclose(got, value, rel_tol=1e-9), (name, i, j, got, value)
    # the delivery of a retired template counts for its patient, goal and category
    assert inputs.pair["days_since_goal"][0, 2] == 1.0  # "sleep"'s goal: "retired" a day ago
    assert inputs.patient.sent_3d[2] == 0.0
