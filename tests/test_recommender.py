"""The recommender in the engine: the champion decides (and its receipt says so), cold start and
failures fall back to the baseline with the reason, rollback, experiment arms, and batch
decisions."""

import datetime as dt
import json
from collections import Counter

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from nudges.experiments import arm_for, parse_arms
from nudges.models import (
    BatchRun,
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    ModelStatus,
    ModelVersion,
    ReviewKind,
    ReviewRequest,
    ReviewState,
    Template,
    TemplateStatus,
)
from nudges.services.batch import batch_chunk, batch_plan
from nudges.services.catalogue import templates_signoff
from nudges.services.decisions import decision_make
from nudges.services.registry import (
    champion,
    model_rollback,
)
from patients.services import consent_set
from tests.conftest import promote_bundle
from tests.factories import make_clinician, make_patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(trained_bundle, settings, tmp_path):
    return promote_bundle(trained_bundle, settings, tmp_path / "models")


def _veteran(**kwargs):
    """A patient enrolled a month ago (past the cold start)."""
    patient, token = make_patient(**kwargs)
    patient.created_at = timezone.now() - dt.timedelta(days=30)
    patient.save(update_fields=["created_at"])
    return patient


def _decisions(patient, n: int = 12):
    start = timezone.now()
    return [
        decision_make(
            patient=patient, now=start + dt.timedelta(hours=5 * k), rng=np.random.default_rng(k)
        )[0]
        for k in range(n)
    ]


def test_without_a_trained_model_the_baseline_decides_and_says_why(patient_a):
    decision, _ = decision_make(patient=patient_a[0])

    assert decision.policy_name == "baseline"
    assert decision.receipt.get("fallback") == "no_model"
    assert decision.model_version == ""


def test_the_champion_decides_and_its_receipt_names_the_model(model):
    patient = _veteran(goals={"activity": 0.9, "sleep": 0.5})

    decisions = [d for d in _decisions(patient) if d.outcome in ("nudge", "no_nudge")]

    assert decisions
    assert all(d.policy_name == "agenda" for d in decisions)
    assert all(d.model_version == model.version for d in decisions)
    assert all(
        d.receipt["policy"] == {"name": "agenda", "version": model.version} for d in decisions
    )
    nudged = [d for d in decisions if d.outcome == "nudge"]
    assert nudged
    for d in nudged:
        receipt = d.receipt
        assert 0 <= receipt["prediction"]["p_act"] <= 1
        assert len(receipt["explanation"]) == 5
        assert {"feature", "value", "contribution"} <= set(receipt["explanation"][0])
        total = sum(receipt["candidates"]["probability"]) + receipt["no_nudge_probability"]
        assert total == pytest.approx(1.0, abs=1e-5)


def test_the_patients_why_comes_from_the_model_and_never_names_a_medical_group(model):
    patient = _veteran(goals={"activity": 0.9}, groups=("depression",))

    nudged = [d for d in _decisions(patient) if d.outcome == "nudge"]

    assert nudged
    for d in nudged:
        why = d.delivery.why
        assert why.endswith(".")
        assert "depress" not in why.lower()
        assert "activity" in why.lower()


def test_a_new_patient_gets_the_baseline_and_the_receipt_says_why(model):
    patient, _ = make_patient(goals={"activity": 0.9})  # enrolled just now

    decision, _ = decision_make(patient=patient)

    assert decision.policy_name == "baseline"
    assert decision.receipt["fallback"] == "new_patient"


def test_a_template_the_model_has_not_seen_sends_the_decision_to_the_baseline(model):
    patient = _veteran(goals={"activity": 1.0})
    template = Template.objects.get(slug="walk-10-minutes", status=TemplateStatus.ACTIVE)
    new = Template.objects.create(
        slug=template.slug,
        version=2,
        title="A 10-minute walk, v2",
        body="Walk for 10 minutes.",
        goal=template.goal,
        category=template.category,
        intensity=template.intensity,
        tags=template.tags,
    )
    templates_signoff(templates=[new], by=make_clinician("signer-2", ()))

    decision, _ = decision_make(patient=patient)

    assert decision.policy_name == "baseline"
    assert decision.receipt["fallback"] == "new_template"


def test_without_personalisation_consent_the_baseline_decides(model):
    patient = _veteran(goals={"activity": 0.9})
    consent_set(patient=patient, purpose="personalisation", granted=False)

    decision, _ = decision_make(patient=patient)

    assert decision.policy_name == "baseline"
    assert decision.receipt["fallback"] == "no_personalisation_consent"


def test_a_corrupt_artefact_falls_back_to_the_baseline_and_readiness_reports_it(
    model, settings, client
):
    (settings.NUDGE_MODELS_DIR / model.artefact).write_bytes(b'{"format": 1, "act": "garbage"')
    ModelVersion.objects.filter(pk=model.pk).update(sha256="0" * 64)
    call_command_bump()
    patient = _veteran(goals={"activity": 0.9})

    decision, _ = decision_make(patient=patient)
    ready = client.get("/readyz")

    assert decision.policy_name == "baseline"
    assert decision.receipt["fallback"] == "model_unavailable"
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert "model" in ready.json()["degraded"]


def call_command_bump() -> None:
    """The registry is cached per process; a change made behind its back needs the stamp."""
    from core.stamps import stamp_bump
    from nudges.services.registry import MODELS_STAMP

    stamp_bump(MODELS_STAMP)


def test_rollback_puts_the_previous_champion_back_in_one_step(model):
    previous = model_rollback()

    assert previous.version == "baseline-1"
    assert ModelVersion.objects.get(pk=model.pk).status == ModelStatus.RETIRED
    assert champion().bundle is None
    with pytest.raises(Exception, match="no earlier champion"):
        model_rollback()


def test_rollback_from_the_command_line(model, capsys):
    call_command("rollback_model")

    assert "baseline-1 is the champion again" in capsys.readouterr().out


def test_arms_are_sticky_and_follow_the_configured_shares():
    arms = parse_arms("treatment:80,control:15,holdout:5")
    names = [f"p-{i:05d}" for i in range(20_000)]

    first = [arm_for(n, key=b"k1", experiment="e1", arms=arms) for n in names]
    again = [arm_for(n, key=b"k1", experiment="e1", arms=arms) for n in names]
    other_key = [arm_for(n, key=b"k2", experiment="e1", arms=arms) for n in names]
    shares = Counter(first)

    assert first == again
    assert first != other_key
    assert abs(shares["treatment"] / 20_000 - 0.80) < 0.02
    assert abs(shares["holdout"] / 20_000 - 0.05) < 0.01


@pytest.mark.parametrize("bad", ["treatment:80,control:10", "treatment:50,bogus:50", "treatment:x"])
def test_malformed_arms_are_refused(bad):
    with pytest.raises(ValueError):
        parse_arms(bad)


def test_a_holdout_patient_gets_no_nudge_and_the_decision_records_the_arm(settings):
    settings.NUDGE_ARMS = "holdout:100"
    patient, _ = make_patient(goals={"activity": 1.0})

    decision, _ = decision_make(patient=patient)

    assert decision.outcome == "no_nudge"
    assert decision.reason == "holdout"
    assert decision.arm == "holdout"
    assert decision.receipt["arm"] == "holdout"


def test_a_control_patient_gets_the_baseline_even_with_a_champion(model, settings):
    settings.NUDGE_ARMS = "control:100"
    patient = _veteran(goals={"activity": 1.0})

    decision, _ = decision_make(patient=patient)

    assert decision.arm == "control"
    assert decision.policy_name == "baseline"
    assert "fallback" not in decision.receipt


def test_the_model_never_chooses_a_template_safety_blocks(model):
    patient = _veteran(goals={"hydration": 1.0, "activity": 0.3}, groups=("heart-failure",))
    blocked = {
        "water-with-meals",
        "refill-bottle",
        "hydration-target",
        "morning-glass",
        "hot-day-fluids",
    }

    decisions = _decisions(patient, n=20)

    for d in decisions:
        if d.template_id:
            assert d.template.slug not in blocked
        candidates = {
            key.split("@")[0] for key in d.receipt.get("candidates", {}).get("template", [])
        }
        assert not candidates & blocked


def test_a_batch_run_decides_each_patients_slot_once_in_their_time_zone():
    london, _ = make_patient(timezone="Europe/London")
    kolkata, _ = make_patient(timezone="Asia/Kolkata")
    day = (timezone.now() + dt.timedelta(days=2)).date()
    run = batch_plan(slot=dt.time(9, 0), day=day, chunk_size=1)

    made = [batch_chunk(run_id=run.pk, chunk=i) for i in range(len(run.chunks))]
    again = [batch_chunk(run_id=run.pk, chunk=i) for i in range(len(run.chunks))]

    assert sum(made) == 2
    assert sum(again) == 0
    moments = dict(DecisionPoint.objects.values_list("patient_id", "moment"))
    assert moments[london.pk].astimezone(dt.UTC).hour == 9  # GMT in November
    assert moments[kolkata.pk].astimezone(dt.UTC).strftime("%H:%M") == "03:30"
    assert Decision.objects.count() == 2


def test_generate_decisions_refuses_bad_arguments():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("generate_decisions", slot="25:00", inline=True)
    with pytest.raises(CommandError):
        call_command("generate_decisions", slot="09:00", chunk_size=0, inline=True)
    assert not BatchRun.objects.exists()


def test_generate_decisions_inline_decides_every_active_patient(patient_a, patient_b):
    call_command(
        "generate_decisions",
        slot="18:30",
        day=str(timezone.now().date() + dt.timedelta(days=3)),
        inline=True,
    )

    assert Decision.objects.count() == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_train_model_learns_from_the_engines_own_decisions_and_promotes_a_better_model(
    tmp_path, settings
):
    settings.NUDGE_MODELS_DIR = tmp_path / "models"
    call_command("seed_demo", patients=300, days=40, seed=4, credentials=tmp_path / "c.json")

    call_command("train_model", days=45)

    row = ModelVersion.objects.get(kind="agenda")
    assert row.status in (ModelStatus.CHAMPION, ModelStatus.REJECTED)
    assert row.metrics["act_auc"] > 0.55
    assert (settings.NUDGE_MODELS_DIR / row.artefact).exists()
    offline_figures = row.metrics["offline"]
    assert {"challenger", "champion", "beats_champion"} <= set(offline_figures)
    assert json.dumps(row.schema)


def test_evaluate_policy_current_uses_the_serving_champion(model, tmp_path):
    log = tmp_path / "explore.jsonl"
    call_command(
        "simulate",
        "--patients=100",
        "--days=12",
        "--seed=3",
        "--policy=explore:0.3",
        f"--out={log}",
    )
    out = tmp_path / "current.json"

    call_command(
        "evaluate_policy",
        f"--decisions={log}",
        "--policy=current",
        "--bootstrap=30",
        f"--json={out}",
    )

    result = json.loads(out.read_text())
    assert result["model"] == model.version
    assert result["true_value"] > 0
    assert result["estimates"]["snips"]["low"] <= result["estimates"]["snips"]["high"]


def test_evaluate_policy_current_refuses_without_a_model(tmp_path):
    log = tmp_path / "explore.jsonl"
    call_command(
        "simulate", "--patients=20", "--days=3", "--seed=3", "--policy=baseline", f"--out={log}"
    )

    with pytest.raises(CommandError, match="not a usable model"):
        call_command(
            "evaluate_policy", f"--decisions={log}", "--policy=current", f"--json={tmp_path / 'o'}"
        )


@pytest.mark.slow
def test_train_model_trains_on_a_log_file_for_evaluate_policy(tmp_path):
    log = tmp_path / "explore.jsonl"
    call_command(
        "simulate",
        "--patients=300",
        "--days=20",
        "--seed=3",
        "--policy=explore:0.3",
        f"--out={log}",
    )
    artefact = tmp_path / "model.json"

    call_command("train_model", f"--decisions={log}", f"--out={artefact}")
    out = tmp_path / "current.json"
    call_command(
        "evaluate_policy",
        f"--decisions={log}",
        "--policy=current",
        f"--model={artefact}",
        "--bootstrap=30",
        f"--json={out}",
    )

    assert json.loads(out.read_text())["model"].startswith("log-")
    assert not ModelVersion.objects.exists()  # a log's model is not registered


def test_train_model_on_a_log_needs_an_output(tmp_path):
    with pytest.raises(CommandError, match="--out is required"):
        call_command("train_model", f"--decisions={tmp_path / 'x.jsonl'}")


def test_a_batch_run_opens_a_review_for_each_nudge_its_rules_route_to_clinicians():
    patients = [
        make_patient(groups=("heart-failure",), goals={"activity": 1.0})[0] for _ in range(40)
    ]
    day = (timezone.now() + dt.timedelta(days=2)).date()
    run = batch_plan(slot=dt.time(9, 0), day=day, chunk_size=10)

    made = sum(batch_chunk(run_id=run.pk, chunk=i) for i in range(len(run.chunks)))

    assert made == len(patients)
    held = Delivery.objects.filter(state=DeliveryState.AWAITING_REVIEW)
    assert held.exists()  # heart failure routes vigorous activity to review
    reviewed = set(ReviewRequest.objects.values_list("delivery_id", flat=True))
    assert set(held.values_list("pk", flat=True)) <= reviewed
    # Each request is what the live path's review_open writes: the groups whose rules asked,
    # the rules with their rationale, a deadline at which the waiting nudge expires.
    for request in ReviewRequest.objects.select_related("delivery").prefetch_related("groups"):
        assert request.kind == ReviewKind.BEFORE_DELIVERY
        assert request.state == ReviewState.PENDING
        assert {g.slug for g in request.groups.all()} == {"heart-failure"}
        assert request.rules and all(rule["rationale"] for rule in request.rules)
        assert request.deadline == request.delivery.expires_at
        assert request.deadline == request.delivery.created_at + dt.timedelta(
            hours=settings.NUDGE_REVIEW_DEADLINE_HOURS
        )
