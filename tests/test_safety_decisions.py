"""Safety in the decision path and at every later move towards the patient (docs/domain.md
"Safety" and "Route", docs/safety-rules.md, docs/delivery.md): blocked templates are removed
before the policy, reviews wait for every group's clinician and expire rather than
auto-approve, notes reach the patient, unknown groups and a missing rule set fail closed, an
emergency stop and a patient's "not for me" take a template out of use, and the safety gate
re-checks a nudge when it is fetched or pushed.

Expected rules, groups and notes come from the shipped catalogue file
(safety/data/rules.json), read here on its own, not from the engine's evaluation."""

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from rest_framework.test import APIClient

from clinicians.governance import ruleset_activate, ruleset_submit
from clinicians.services import review_decide
from core.errors import ApplicationError
from core.stamps import stamp_bump
from nudges.models import (
    Decision,
    DecisionPoint,
    Delivery,
    DeliveryState,
    DeliveryTransition,
    DevelopmentPush,
    Outcome,
    PushMessage,
    PushState,
    ReviewKind,
    ReviewRequest,
    ReviewState,
    Template,
    TemplateDecline,
    TemplateStatus,
)
from nudges.services import gate
from nudges.services.catalogue import template_signoff, template_stop, templates_load
from nudges.services.decisions import decision_make
from nudges.services.deliveries import deliveries_expire, deliveries_release_held
from nudges.services.outbox import outbox_dispatch
from nudges.services.reviews import review_open
from nudges.services.transitions import push_enqueue
from patients.models import Condition, Patient
from safety.models import RuleSet, RuleSetStatus
from safety.rules import Action, Verdict
from safety.services import (
    RULES_FILE,
    RULES_STAMP,
    patient_groups_refresh,
    rule_save,
    ruleset_draft_create,
)
from tests.factories import (
    GROUP_CODES,
    make_clinician,
    make_delivery_row,
    make_nudge,
    make_patient,
    make_safety_lead,
)

pytestmark = pytest.mark.django_db

NUDGES_URL = "/api/v1/nudges/"
DECISIONS_URL = "/api/v1/decisions/"
SHIPPED_RULES: list[dict[str, Any]] = json.loads(RULES_FILE.read_text())["rules"]
STRICTNESS = ["allow", "allow_with_note", "review", "block"]
PATIENT_STATES = {
    DeliveryState.READY,
    DeliveryState.DELIVERED,
    DeliveryState.OPENED,
    DeliveryState.DONE,
    DeliveryState.DISMISSED,
    DeliveryState.SNOOZED,
}


@pytest.fixture(autouse=True)
def room_for_many_nudges(settings):
    """Many decisions for one patient in a row: the daily cap, the minimum gap and the repeat
    window would otherwise leave most of them without candidates, which is the delivery
    policy's business, not safety's."""
    settings.NUDGE_DAILY_CAP = 1000
    settings.NUDGE_MIN_GAP_MINUTES = 0
    settings.NUDGE_REPEAT_WINDOW_DAYS = 0


# Helpers -----------------------------------------------------------------------------------


def shipped_verdict(template: Template, groups: Iterable[str]) -> dict[str, Any]:
    """What the catalogue file says about `template` for a patient in `groups`: the strictest
    action, every matching rule, the groups whose rules decided, and the notes."""
    groups = set(groups)
    matched = [
        rule
        for rule in SHIPPED_RULES
        if set(rule["groups"]) & groups
        and (not rule["match"]["tags"] or set(rule["match"]["tags"]) & set(template.tags))
        and (not rule["match"]["goals"] or template.goal in rule["match"]["goals"])
        and (not rule["match"]["categories"] or template.category in rule["match"]["categories"])
        and (not rule["match"]["intensities"] or template.intensity in rule["match"]["intensities"])
    ]

    def action(rule: dict[str, Any]) -> str:
        return "review" if rule["action"] == "block" and not rule["verified"] else rule["action"]

    if not matched:
        return {"action": "allow", "rules": [], "groups": set(), "notes": []}
    strictest = max((action(r) for r in matched), key=STRICTNESS.index)
    deciding = [r for r in matched if action(r) == strictest]
    return {
        "action": strictest,
        "rules": sorted(r["id"] for r in matched),
        "groups": {g for r in deciding for g in r["groups"]} & groups,
        "notes": sorted({r["note_to_patient"] for r in matched if r["note_to_patient"]}),
    }


def shipped_rule(code: str) -> dict[str, Any]:
    [rule] = [r for r in SHIPPED_RULES if r["id"] == code]
    return rule


def active_template(slug: str) -> Template:
    return Template.objects.get(slug=slug, status=TemplateStatus.ACTIVE)


def templates_tagged(tag: str) -> list[Template]:
    return [t for t in Template.objects.filter(status=TemplateStatus.ACTIVE) if tag in t.tags]


def next_minute() -> dt.datetime:
    return timezone.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def decisions_over_time(patient: Patient, count: int) -> list[Decision]:
    """`count` decisions through the decision service, one a minute after the patient's
    latest decision point, with a fixed seed each."""
    points = DecisionPoint.objects.filter(patient=patient)
    latest = points.aggregate(m=Max("moment"))["m"]
    start = max(next_minute(), latest + dt.timedelta(minutes=1)) if latest else next_minute()
    seed = points.count()
    made = []
    for i in range(count):
        decision, created = decision_make(
            patient=patient,
            now=start + dt.timedelta(minutes=i),
            rng=np.random.default_rng(seed + i),
        )
        assert created
        made.append(decision)
    return made


def first_nudge_where(patient: Patient, wanted, tries: int = 100) -> Delivery:
    """Decide one minute after another until the service makes a delivery that is `wanted`."""
    for _ in range(tries):
        [decision] = decisions_over_time(patient, 1)
        delivery = getattr(decision, "delivery", None)
        if delivery is not None and wanted(delivery):
            return delivery
    raise AssertionError("the service never made such a nudge")


def candidates(decision: Decision) -> list[str]:
    return decision.receipt["candidates"]["template"]


def api_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def inbox_ids(token: str) -> set[str]:
    response = api_for(token).get(NUDGES_URL)
    assert response.status_code == 200
    return {item["id"] for item in response.json()}


def add_condition(patient: Patient, group: str) -> None:
    """The patient is diagnosed with a condition that puts them in `group`."""
    Condition.objects.create(patient=patient, code=GROUP_CODES[group])
    patient_groups_refresh(patient=patient)


def rule(code: str, groups: list[str], action: str, **match: list[str]) -> dict[str, Any]:
    fields = {
        "tags": sorted(match.get("tags", [])),
        "categories": sorted(match.get("categories", [])),
        "goals": sorted(match.get("goals", [])),
        "intensities": sorted(match.get("intensities", [])),
        "action": action,
        "severity": "high",
        "rationale": f"Test rule {code}.",
        "note_to_patient": "Take care." if action == "allow_with_note" else "",
        "source_title": "A test source",
        "source_publisher": "Tests",
        "source_url": "https://example.org/rule",
        "source_summary": "",
        "verified": True,
        "effective_from": dt.date(2026, 1, 1),
        "effective_to": None,
    }
    return {"code": code, "groups": groups, "fields": fields}


def activate_rules(*rules: dict[str, Any]) -> RuleSet:
    """A draft copied from the active set, with `rules` added, proposed by one safety lead
    and signed off by another (clinicians.governance)."""
    author, signer = make_safety_lead("lead-author"), make_safety_lead("lead-signer")
    draft = ruleset_draft_create(by=author)
    for r in rules:
        rule_save(rule_set=draft, code=r["code"], groups=r["groups"], fields=r["fields"], by=author)
    ruleset_submit(rule_set=draft, by=author)
    ruleset_activate(rule_set=draft, by=signer)
    draft.refresh_from_db()
    assert draft.status == RuleSetStatus.ACTIVE
    return draft


def ready_nudge(patient: Patient) -> Delivery:
    delivery = make_nudge(patient)
    assert delivery.state == DeliveryState.READY
    return delivery


def approve(clinician, request: ReviewRequest, **kwargs):
    return review_decide(
        clinician=clinician,
        request_id=request.pk,
        verdict="approve",
        reason="appropriate",
        **kwargs,
    )


def before_delivery_review(delivery: Delivery) -> ReviewRequest:
    return ReviewRequest.objects.get(delivery=delivery, kind=ReviewKind.BEFORE_DELIVERY)


def moved_to(delivery: Delivery, state: str) -> bool:
    return DeliveryTransition.objects.filter(delivery=delivery, to_state=state).exists()


# Blocked templates are removed before the policy ------------------------------------------


def test_a_heart_failure_patient_with_a_hydration_goal_never_gets_a_fluid_increasing_nudge():
    patient, _ = make_patient(goals={"hydration": 1.0}, groups=("heart-failure",))
    fluids = {f"{t.slug}@{t.version}" for t in templates_tagged("increase-fluids")}
    assert len(fluids) == 5

    decisions = decisions_over_time(patient, 60)

    assert any(d.outcome == Outcome.NUDGE for d in decisions)
    assert not Delivery.objects.filter(
        patient=patient, template__slug__in=[k.split("@")[0] for k in fluids]
    ).exists()
    for decision in decisions:
        safety = decision.receipt["safety"]
        assert set(safety["block"]) == fluids
        for verdict in safety["block"].values():
            assert verdict["action"] == "block"
            assert "HF-FLUIDS-01" in verdict["rules"]
        assert not fluids & set(candidates(decision))
        assert decision.template is None or decision.template.slug not in fluids


def test_the_receipt_names_the_active_rule_set_version():
    patient, _ = make_patient(goals={"hydration": 1.0}, groups=("heart-failure",))
    active = RuleSet.objects.get(status=RuleSetStatus.ACTIVE)

    [decision] = decisions_over_time(patient, 1)

    assert decision.receipt["safety"]["ruleset"] == active.version


def test_the_probabilities_of_the_remaining_candidates_and_no_nudge_sum_to_one():
    patient, _ = make_patient(goals={"hydration": 1.0}, groups=("heart-failure",))

    [decision] = decisions_over_time(patient, 1)

    receipt = decision.receipt
    assert len(receipt["candidates"]["probability"]) == len(candidates(decision)) == 3
    total = sum(receipt["candidates"]["probability"]) + receipt["no_nudge_probability"]
    assert total == pytest.approx(1.0, abs=1e-5)


# Review before delivery -------------------------------------------------------------------


@pytest.fixture
def cardiac_patient(db):
    """Heart failure and hypertension, an activity goal: vigorous challenges need review by
    both groups' clinicians (HF-VIGOROUS-01, HTN-VIGOROUS-01)."""
    return make_patient(goals={"activity": 1.0}, groups=("heart-failure", "hypertension"))


@pytest.fixture
def awaiting(cardiac_patient) -> Delivery:
    return make_nudge(cardiac_patient[0], review=True)


@pytest.fixture
def clinician_hf(db):
    return make_clinician("clin-hf", ("heart-failure",))


@pytest.fixture
def clinician_htn(db):
    return make_clinician("clin-htn", ("hypertension",))


def test_a_chosen_nudge_that_needs_review_waits_for_the_groups_whose_rules_asked(awaiting):
    expected = shipped_verdict(awaiting.template, ("heart-failure", "hypertension"))
    assert expected["action"] == "review"

    request = before_delivery_review(awaiting)

    assert awaiting.state == DeliveryState.AWAITING_REVIEW
    assert awaiting.due_at is None
    assert request.state == ReviewState.PENDING
    assert {g.slug for g in request.groups.all()} == expected["groups"]
    assert {g.slug for g in request.groups.all()} == {"heart-failure", "hypertension"}
    assert sorted(awaiting.safety_rules) == expected["rules"]
    key = f"{awaiting.template.slug}@{awaiting.template.version}"
    assert key in awaiting.decision.receipt["safety"]["review"]


def test_the_review_request_carries_each_matched_rule_with_its_rationale(awaiting):
    request = before_delivery_review(awaiting)

    expected = shipped_verdict(awaiting.template, ("heart-failure", "hypertension"))
    assert [r["code"] for r in request.rules] == expected["rules"]
    for snapshot in request.rules:
        shipped = shipped_rule(snapshot["code"])
        assert snapshot["rationale"] == shipped["rationale"]
        assert snapshot["action"] == shipped["action"]
        assert snapshot["groups"] == sorted(shipped["groups"])
        assert snapshot["source_url"] == shipped["source"]["url"]


def test_a_nudge_awaiting_review_is_never_shown_in_the_inbox(cardiac_patient, awaiting):
    shown = inbox_ids(cardiac_patient[1])

    awaiting.refresh_from_db()
    assert str(awaiting.pk) not in shown
    assert awaiting.state == DeliveryState.AWAITING_REVIEW
    assert awaiting.delivered_at is None


def test_a_nudge_awaiting_review_is_never_pushed(awaiting):
    outbox_dispatch(now=awaiting.expires_at)

    awaiting.refresh_from_db()
    assert awaiting.state == DeliveryState.AWAITING_REVIEW
    assert not PushMessage.objects.filter(delivery=awaiting).exists()
    pushed = {p.payload["data"]["delivery_id"] for p in DevelopmentPush.objects.all()}
    assert str(awaiting.pk) not in pushed


def test_releasing_held_nudges_does_not_release_one_awaiting_review(awaiting):
    deliveries_release_held(now=awaiting.expires_at)

    awaiting.refresh_from_db()
    assert awaiting.state == DeliveryState.AWAITING_REVIEW


def test_a_nudge_awaiting_review_expires_at_its_deadline_and_is_never_approved(awaiting):
    request = before_delivery_review(awaiting)
    deadline = request.deadline
    assert deadline == awaiting.expires_at

    deliveries_expire(now=deadline - dt.timedelta(seconds=1))
    awaiting.refresh_from_db()
    assert awaiting.state == DeliveryState.AWAITING_REVIEW

    deliveries_expire(now=deadline + dt.timedelta(seconds=1))

    awaiting.refresh_from_db()
    request.refresh_from_db()
    assert awaiting.state == DeliveryState.EXPIRED
    assert request.state == ReviewState.EXPIRED
    assert not any(moved_to(awaiting, s) for s in PATIENT_STATES | {DeliveryState.HELD})


def test_one_groups_approval_is_not_enough_while_another_group_must_still_decide(
    cardiac_patient, awaiting, clinician_hf
):
    request = before_delivery_review(awaiting)

    result = approve(clinician_hf, request)

    awaiting.refresh_from_db()
    request.refresh_from_db()
    assert result.groups == ("heart-failure",)
    assert request.state == ReviewState.PENDING
    assert awaiting.state == DeliveryState.AWAITING_REVIEW
    assert str(awaiting.pk) not in inbox_ids(cardiac_patient[1])


def test_approval_by_every_required_group_makes_the_nudge_ready_and_then_visible(
    cardiac_patient, awaiting, clinician_hf, clinician_htn
):
    request = before_delivery_review(awaiting)
    approve(clinician_hf, request)

    result = approve(clinician_htn, request)

    awaiting.refresh_from_db()
    request.refresh_from_db()
    assert result.delivery_state == DeliveryState.READY
    assert request.state == ReviewState.APPROVED
    assert awaiting.state == DeliveryState.READY
    assert PushMessage.objects.get(delivery=awaiting).state == PushState.PENDING
    assert str(awaiting.pk) in inbox_ids(cardiac_patient[1])
    awaiting.refresh_from_db()
    assert awaiting.state == DeliveryState.DELIVERED


def test_an_approved_nudge_in_quiet_hours_is_held_until_they_end_then_shown(
    clinician_hf, clinician_htn
):
    now = timezone.now()
    quiet = ((now - dt.timedelta(hours=1)).time(), (now + dt.timedelta(hours=2)).time())
    patient, token = make_patient(
        goals={"activity": 1.0}, groups=("heart-failure", "hypertension"), quiet=quiet
    )
    delivery = make_nudge(patient, review=True)
    request = before_delivery_review(delivery)
    approve(clinician_hf, request, now=now)

    result = approve(clinician_htn, request, now=now)

    delivery.refresh_from_db()
    assert result.delivery_state == DeliveryState.HELD
    assert delivery.state == DeliveryState.HELD
    assert delivery.due_at > now
    assert str(delivery.pk) not in inbox_ids(token)

    deliveries_release_held(now=delivery.due_at)

    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.READY
    assert str(delivery.pk) in inbox_ids(token)


def test_a_rejection_blocks_the_nudge_for_good(cardiac_patient, awaiting, clinician_htn):
    request = before_delivery_review(awaiting)

    result = review_decide(
        clinician=clinician_htn, request_id=request.pk, verdict="reject", reason="contraindicated"
    )

    awaiting.refresh_from_db()
    request.refresh_from_db()
    assert result.delivery_state == DeliveryState.BLOCKED
    assert request.state == ReviewState.REJECTED
    assert awaiting.state == DeliveryState.BLOCKED
    assert str(awaiting.pk) not in inbox_ids(cardiac_patient[1])
    deliveries_release_held(now=awaiting.expires_at)
    outbox_dispatch(now=awaiting.expires_at)
    awaiting.refresh_from_db()
    assert awaiting.state == DeliveryState.BLOCKED


def test_the_decision_api_answers_a_nudge_awaiting_review_with_no_nudge_and_a_review_message():
    for _ in range(12):  # the policy may choose no nudge; each patient has one decision now
        patient, token = make_patient(goals={"activity": 1.0})
        Patient.objects.filter(pk=patient.pk).update(groups_refreshed_at=None)
        response = api_for(token).post(DECISIONS_URL, {}, format="json")
        assert response.status_code == 201
        body = response.json()
        if body["outcome"] == Outcome.NUDGE:
            break
    else:
        pytest.fail("the policy never chose a nudge")

    assert body["nudge"] is None
    assert "clinician" in body["message"].lower()
    delivery = Delivery.objects.get(decision_id=body["decision_id"])
    assert delivery.state == DeliveryState.AWAITING_REVIEW


# Allowed with a note ----------------------------------------------------------------------


def test_allow_with_note_puts_the_rules_note_on_the_delivery_and_in_the_inbox():
    """Type 2 diabetes: vigorous exercise is allowed with a glucose-check note
    (T2D-VIGOROUS-01)."""
    patient, token = make_patient(goals={"activity": 1.0}, groups=("type-2-diabetes",))
    noted = first_nudge_where(patient, lambda d: d.safety_action == "allow_with_note")
    expected = shipped_verdict(noted.template, ("type-2-diabetes",))

    response = api_for(token).get(NUDGES_URL)

    assert expected["action"] == "allow_with_note"
    assert noted.note == " ".join(expected["notes"])
    assert noted.note == shipped_rule("T2D-VIGOROUS-01")["note_to_patient"]
    assert noted.state == DeliveryState.READY
    [item] = [i for i in response.json() if i["id"] == str(noted.pk)]
    assert item["note"] == noted.note


def test_a_nudge_no_rule_touches_carries_no_note():
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("type-2-diabetes",))
    plain = [
        d.delivery
        for d in decisions_over_time(patient, 40)
        if hasattr(d, "delivery") and d.delivery.safety_action == "allow"
    ]

    assert plain
    assert all(d.note == "" for d in plain)


# Failing closed ---------------------------------------------------------------------------


def test_a_patient_whose_groups_are_unknown_gets_only_nudges_awaiting_review():
    patient, _ = make_patient(goals={"activity": 1.0, "hydration": 1.0}, groups=("copd",))
    patient.groups_refreshed_at = None
    patient.save(update_fields=["groups_refreshed_at"])

    decisions = decisions_over_time(patient, 40)

    deliveries = Delivery.objects.filter(patient=patient)
    assert deliveries.exists()
    assert set(deliveries.values_list("state", flat=True)) == {DeliveryState.AWAITING_REVIEW}
    for decision in decisions:
        review = decision.receipt["safety"].get("review", {})
        assert set(candidates(decision)) <= set(review)
        assert all(v.get("error") == "patient_groups_unknown" for v in review.values())
    for request in ReviewRequest.objects.filter(patient=patient):
        assert request.kind == ReviewKind.BEFORE_DELIVERY
        assert [r["code"] for r in request.rules] == ["patient_groups_unknown"]


def test_with_no_active_rule_set_every_candidate_is_blocked_and_nothing_is_suitable():
    patient, _ = make_patient(goals={"activity": 1.0, "sleep": 0.5})
    RuleSet.objects.filter(status=RuleSetStatus.ACTIVE).update(status=RuleSetStatus.RETIRED)
    stamp_bump(RULES_STAMP)

    decisions = decisions_over_time(patient, 10)

    assert not Delivery.objects.filter(patient=patient).exists()
    on_agenda = Template.objects.filter(
        status=TemplateStatus.ACTIVE, goal__in=["activity", "sleep"]
    ).count()
    for decision in decisions:
        assert decision.outcome == Outcome.NOTHING_SUITABLE
        assert candidates(decision) == []
        safety = decision.receipt["safety"]
        assert safety["ruleset"] is None
        assert len(safety["block"]) == on_agenda
        assert all(v["error"] == "no_active_rule_set" for v in safety["block"].values())


# Emergency stop ---------------------------------------------------------------------------


@pytest.fixture
def stopper(db):
    return make_clinician("clin-stopper", ("hypertension",))


def test_an_emergency_stop_blocks_pending_nudges_and_recalls_delivered_or_snoozed_ones(stopper):
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    template = active_template("walk-10-minutes")
    rows = {state: make_delivery_row(patient, state, template=template) for state in DeliveryState}
    push_enqueue(delivery=rows[DeliveryState.READY], now=timezone.now())
    other = make_delivery_row(patient, DeliveryState.READY, template=active_template("jog-20"))

    template_stop(template=template, by=stopper, reason="Wording could mislead.")

    stoppable = {
        DeliveryState.PROPOSED,
        DeliveryState.AWAITING_REVIEW,
        DeliveryState.HELD,
        DeliveryState.READY,
        DeliveryState.DELIVERED,
        DeliveryState.SNOOZED,
    }
    for state, row in rows.items():
        row.refresh_from_db()
        assert row.state == (DeliveryState.BLOCKED if state in stoppable else state), state
    assert PushMessage.objects.get(delivery=rows[DeliveryState.READY]).state == PushState.CANCELLED
    other.refresh_from_db()
    assert other.state == DeliveryState.READY
    assert DeliveryTransition.objects.filter(
        delivery=rows[DeliveryState.DELIVERED], actor="emergency_stop", reason="template_stopped"
    ).exists()


def test_an_emergency_stop_withdraws_the_pending_reviews_of_the_template(stopper):
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    delivery = make_nudge(patient, review=True)
    request = before_delivery_review(delivery)

    template_stop(template=delivery.template, by=stopper, reason="Recalled by the publisher.")

    request.refresh_from_db()
    delivery.refresh_from_db()
    assert request.state == ReviewState.WITHDRAWN
    assert delivery.state == DeliveryState.BLOCKED


def test_after_an_emergency_stop_decisions_never_choose_the_template(stopper):
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    template = active_template("walk-10-minutes")
    template_stop(template=template, by=stopper, reason="Wording could mislead.")

    decisions = decisions_over_time(patient, 60)

    assert any(d.outcome == Outcome.NUDGE for d in decisions)
    assert not Delivery.objects.filter(template=template).exists()
    for decision in decisions:
        assert not any(key.startswith("walk-10-minutes@") for key in candidates(decision))


# Template versions ------------------------------------------------------------------------


def catalogue_file(tmp_path, **record: Any):
    base = {
        "title": "A new walk",
        "body": "Take a short walk today.",
        "goal": "activity",
        "category": "challenge",
        "intensity": "low",
        "tags": ["walking"],
    }
    path = tmp_path / "templates.json"
    path.write_text(json.dumps([{**base, **record}]))
    return path


def test_a_signed_off_new_version_replaces_the_old_one_in_decisions(tmp_path, stopper):
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    templates_load(path=catalogue_file(tmp_path, slug="walk-10-minutes", version=2))
    new = Template.objects.get(slug="walk-10-minutes", version=2)

    template_signoff(template=new, by=stopper)
    decisions = decisions_over_time(patient, 100)

    chosen = Delivery.objects.filter(patient=patient, template__slug="walk-10-minutes")
    assert chosen.exists()
    assert set(chosen.values_list("template__version", flat=True)) == {2}
    for decision in decisions:
        assert "walk-10-minutes@2" in candidates(decision)
        assert "walk-10-minutes@1" not in candidates(decision)
    assert Template.objects.get(slug="walk-10-minutes", version=1).status == (
        TemplateStatus.RETIRED
    )


def test_a_template_awaiting_signoff_is_never_chosen(tmp_path):
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    templates_load(path=catalogue_file(tmp_path, slug="walk-round-the-block", version=1))
    pending = Template.objects.get(slug="walk-round-the-block")
    assert pending.status == TemplateStatus.PENDING

    decisions = decisions_over_time(patient, 60)

    assert any(d.outcome == Outcome.NUDGE for d in decisions)
    assert not Delivery.objects.filter(template=pending).exists()
    assert all("walk-round-the-block@1" not in candidates(d) for d in decisions)


def test_a_pending_new_version_leaves_the_signed_off_one_in_use(tmp_path):
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    templates_load(path=catalogue_file(tmp_path, slug="walk-10-minutes", version=2))

    decisions = decisions_over_time(patient, 5)

    for decision in decisions:
        assert "walk-10-minutes@1" in candidates(decision)
        assert "walk-10-minutes@2" not in candidates(decision)


# "Not for me" -----------------------------------------------------------------------------


def test_not_for_me_dismisses_the_nudge_stops_the_template_and_asks_the_patients_clinicians():
    patient, token = make_patient(
        goals={"activity": 1.0}, groups=("hypertension", "type-2-diabetes")
    )
    delivery = ready_nudge(patient)

    response = api_for(token).post(
        f"{NUDGES_URL}{delivery.pk}/feedback/", {"action": "not_for_me"}, format="json"
    )

    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.DISMISSED
    assert TemplateDecline.objects.filter(patient=patient, slug=delivery.template.slug).exists()
    request = ReviewRequest.objects.get(delivery=delivery)
    assert request.kind == ReviewKind.PATIENT_FEEDBACK
    assert request.state == ReviewState.PENDING
    assert {g.slug for g in request.groups.all()} == {"hypertension", "type-2-diabetes"}


def test_after_not_for_me_later_decisions_exclude_the_template():
    patient, token = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    delivery = ready_nudge(patient)
    slug = delivery.template.slug
    api_for(token).post(
        f"{NUDGES_URL}{delivery.pk}/feedback/", {"action": "not_for_me"}, format="json"
    )

    decisions = decisions_over_time(patient, 60)

    assert any(d.outcome == Outcome.NUDGE for d in decisions)
    assert Delivery.objects.filter(patient=patient, template__slug=slug).count() == 1
    for decision in decisions:
        assert decision.receipt["excluded"]["declined_by_patient"] == [slug]
        assert not any(key.startswith(f"{slug}@") for key in candidates(decision))


# The safety gate --------------------------------------------------------------------------


def test_a_ready_nudge_whose_template_was_stopped_meanwhile_is_blocked_when_fetched():
    """A stop that lands between the decision and the fetch (here: only the flag is set, as
    if the stop's own sweep had not reached this row): the gate reads the flag."""
    patient, token = make_patient(goals={"activity": 1.0})
    delivery = ready_nudge(patient)
    Template.objects.filter(pk=delivery.template_id).update(status=TemplateStatus.STOPPED)

    shown = inbox_ids(token)

    delivery.refresh_from_db()
    assert str(delivery.pk) not in shown
    assert delivery.state == DeliveryState.BLOCKED
    assert DeliveryTransition.objects.filter(
        delivery=delivery, actor="gate", reason="template_stopped"
    ).exists()


def test_a_stop_shows_at_the_gate_after_the_template_passed_it_before():
    """The gate keeps a signed-off template's content in memory once it has judged it; its
    status it reads every time. A nudge of a template that passed a minute ago is blocked
    once the template is stopped."""
    patient, token = make_patient(goals={"activity": 1.0})
    template = active_template("jog-20")
    first = make_delivery_row(patient, DeliveryState.READY, template=template)
    assert str(first.pk) in inbox_ids(token)  # passed the gate: the template is now known
    second = make_delivery_row(patient, DeliveryState.READY, template=template)
    Template.objects.filter(pk=template.pk).update(status=TemplateStatus.STOPPED)

    shown = inbox_ids(token)

    second.refresh_from_db()
    assert str(second.pk) not in shown
    assert second.state == DeliveryState.BLOCKED


def test_a_ready_nudge_whose_template_was_stopped_meanwhile_is_not_pushed():
    patient, _ = make_patient(goals={"activity": 1.0})
    delivery = ready_nudge(patient)
    Template.objects.filter(pk=delivery.template_id).update(status=TemplateStatus.STOPPED)

    counts = outbox_dispatch()

    delivery.refresh_from_db()
    assert counts["sent"] == 0
    assert PushMessage.objects.get(delivery=delivery).state == PushState.CANCELLED
    assert not DevelopmentPush.objects.exists()
    assert delivery.state == DeliveryState.BLOCKED


def test_a_ready_nudge_a_newly_activated_rule_set_blocks_is_neither_shown_nor_pushed():
    patient, token = make_patient(goals={"activity": 1.0}, groups=("copd",))
    delivery = ready_nudge(patient)
    template = delivery.template

    activate_rules(rule("TEST-BLOCK-01", ["copd"], "block", tags=list(template.tags)))
    shown = inbox_ids(token)
    counts = outbox_dispatch()

    delivery.refresh_from_db()
    assert str(delivery.pk) not in shown
    assert delivery.state == DeliveryState.BLOCKED
    assert counts["sent"] == 0
    assert PushMessage.objects.get(delivery=delivery).state == PushState.CANCELLED
    assert not DevelopmentPush.objects.exists()


def test_a_delivered_nudge_a_newly_activated_rule_set_blocks_is_recalled_from_the_inbox():
    patient, token = make_patient(goals={"activity": 1.0}, groups=("copd",))
    delivery = ready_nudge(patient)
    assert str(delivery.pk) in inbox_ids(token)

    activate_rules(rule("TEST-BLOCK-01", ["copd"], "block", tags=list(delivery.template.tags)))

    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.BLOCKED
    assert str(delivery.pk) not in inbox_ids(token)


def test_a_ready_nudge_is_blocked_when_fetched_if_the_patient_joined_a_group_whose_rules_block_it():
    patient, token = make_patient(goals={"hydration": 1.0})
    delivery = make_delivery_row(
        patient, DeliveryState.READY, template=active_template("water-with-meals")
    )
    add_condition(patient, "heart-failure")

    shown = inbox_ids(token)

    delivery.refresh_from_db()
    assert str(delivery.pk) not in shown
    assert delivery.state == DeliveryState.BLOCKED
    assert DeliveryTransition.objects.filter(
        delivery=delivery, actor="gate", reason="rule_block"
    ).exists()


def test_a_ready_nudge_is_not_pushed_if_the_patient_joined_a_group_whose_rules_block_it():
    patient, _ = make_patient(goals={"hydration": 1.0})
    delivery = make_delivery_row(
        patient, DeliveryState.READY, template=active_template("water-with-meals")
    )
    push_enqueue(delivery=delivery, now=timezone.now())
    add_condition(patient, "heart-failure")

    counts = outbox_dispatch()

    delivery.refresh_from_db()
    assert counts == {"sent": 0, "retry": 0, "dead": 0, "cancelled": 1}
    assert delivery.state == DeliveryState.BLOCKED
    assert not DevelopmentPush.objects.exists()


def test_a_held_nudge_is_not_released_if_the_rules_now_block_it():
    patient, token = make_patient(goals={"hydration": 1.0})
    due = timezone.now() - dt.timedelta(minutes=1)
    delivery = make_delivery_row(
        patient, DeliveryState.HELD, due_at=due, template=active_template("refill-bottle")
    )
    add_condition(patient, "heart-failure")

    deliveries_release_held()

    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.BLOCKED
    assert str(delivery.pk) not in inbox_ids(token)


def test_a_ready_nudge_that_now_needs_review_goes_to_review_when_fetched():
    patient, token = make_patient(goals={"activity": 1.0})
    delivery = make_delivery_row(patient, DeliveryState.READY, template=active_template("jog-20"))
    add_condition(patient, "hypertension")

    shown = inbox_ids(token)

    delivery.refresh_from_db()
    assert str(delivery.pk) not in shown
    assert delivery.state == DeliveryState.AWAITING_REVIEW
    request = before_delivery_review(delivery)
    assert request.state == ReviewState.PENDING
    assert {g.slug for g in request.groups.all()} == {"hypertension"}
    assert [r["code"] for r in request.rules] == ["HTN-VIGOROUS-01"]


def test_a_ready_nudge_a_newly_activated_rule_set_sends_to_review_is_not_shown_until_approved():
    patient, token = make_patient(goals={"activity": 1.0}, groups=("copd",))
    delivery = ready_nudge(patient)
    activate_rules(rule("TEST-REVIEW-01", ["copd"], "review", tags=list(delivery.template.tags)))

    shown = inbox_ids(token)

    delivery.refresh_from_db()
    assert str(delivery.pk) not in shown
    assert delivery.state == DeliveryState.AWAITING_REVIEW
    request = before_delivery_review(delivery)
    assert {g.slug for g in request.groups.all()} == {"copd"}
    assert "TEST-REVIEW-01" in [r["code"] for r in request.rules]

    approve(make_clinician("clin-copd", ("copd",)), request)

    assert str(delivery.pk) in inbox_ids(token)


def test_a_rule_set_that_now_blocks_a_nudge_half_approved_blocks_it_and_withdraws_its_review(
    cardiac_patient, awaiting, clinician_hf, clinician_htn
):
    request = before_delivery_review(awaiting)
    approve(clinician_hf, request)

    activate_rules(
        rule("TEST-BLOCK-02", ["hypertension"], "block", tags=list(awaiting.template.tags))
    )

    awaiting.refresh_from_db()
    request.refresh_from_db()
    assert awaiting.state == DeliveryState.BLOCKED
    assert request.state == ReviewState.WITHDRAWN
    with pytest.raises(ApplicationError):
        approve(clinician_htn, request)
    awaiting.refresh_from_db()
    assert awaiting.state == DeliveryState.BLOCKED
    assert str(awaiting.pk) not in inbox_ids(cardiac_patient[1])


def test_review_open_without_groups_lets_any_clinician_decide(clinician_htn):
    """A fail-closed review (no group asked) is visible to every clinician."""
    patient, _ = make_patient(goals={"activity": 1.0})
    delivery = make_delivery_row(patient, DeliveryState.AWAITING_REVIEW)
    request = review_open(
        delivery=delivery,
        verdict=Verdict(Action.REVIEW, error="patient_groups_unknown"),
        ruleset_version=None,
        now=timezone.now(),
    )

    result = approve(clinician_htn, request)

    request.refresh_from_db()
    assert request.state == ReviewState.APPROVED
    assert result.groups == ()


def test_the_gate_applies_the_rules_now_active_even_if_a_rolled_back_set_had_their_version():
    """The gate keeps compiled rules in process memory. A rolled-back activation leaves a
    version number that the next draft takes again, with other rules; the cache must not
    bring back the rolled-back set's rules under that number."""
    patient, token = make_patient(goals={"activity": 1.0}, groups=("copd",))
    template = active_template("walk-10-minutes")
    delivery = make_delivery_row(patient, DeliveryState.READY, template=template)
    with transaction.atomic():
        discarded = activate_rules(rule("TEST-OTHER-01", ["copd"], "review", tags=["stairs"]))
        with transaction.atomic():
            assert gate.gate_check([delivery])[delivery.pk].passes
        transaction.set_rollback(True)

    active = activate_rules(rule("TEST-BLOCK-03", ["copd"], "block", tags=["walking"]))
    shown = inbox_ids(token)

    assert active.version == discarded.version
    delivery.refresh_from_db()
    assert str(delivery.pk) not in shown
    assert delivery.state == DeliveryState.BLOCKED
