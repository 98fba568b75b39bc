"""The clinicians' review queue in the Django admin: scoped to the medical groups a clinician
covers, every URL of an item outside that scope answers 404, decisions move the nudge on (or
stop it), a multi-group item needs every group, and the queue is for clinicians only."""

import datetime as dt
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.html import escape
from rest_framework.test import APIClient

from clinicians.access import clinician_groups_set
from clinicians.models import ReviewDecision
from clinicians.services import review_decide
from core.errors import ApplicationError
from nudges.models import (
    Delivery,
    DeliveryState,
    Outcome,
    ReviewKind,
    ReviewRequest,
    ReviewState,
    Template,
    TemplateDecline,
    TemplateStatus,
)
from nudges.services.decisions import decision_make
from nudges.services.reviews import feedback_review_open, review_open
from patients.models import Condition
from safety.models import MedicalGroup, Rule, RuleSet, StandingApproval
from safety.rules import Action, Verdict
from safety.selectors import active_rule_set
from safety.services import patients_groups_refresh
from tests.factories import (
    GROUP_CODES,
    UserFactory,
    make_delivery_row,
    make_nudge,
    make_patient,
    make_safety_lead,
)

pytestmark = pytest.mark.django_db

QUEUE = "/admin/clinicians/reviewqueueitem/"
NUDGES_API = "/api/v1/nudges/"
# A template no rule of any group touches, so once approved the gate lets it through.
HARMLESS = "breathing-478"


def active_version() -> int:
    rule_set = active_rule_set()
    assert rule_set is not None
    return rule_set.version


def open_review(
    patient,
    *,
    groups: tuple[str, ...] = ("heart-failure",),
    severity: str = "high",
    rules: tuple[str, ...] = ("HF-VIGOROUS-01",),
    template: str = HARMLESS,
) -> ReviewRequest:
    """A nudge awaiting review with a pending request for `groups`, opened as the engine does."""
    delivery = make_delivery_row(
        patient,
        DeliveryState.AWAITING_REVIEW,
        template=Template.objects.get(slug=template, status=TemplateStatus.ACTIVE),
    )
    verdict = Verdict(Action.REVIEW, rules=rules, groups=groups, severity=severity)
    return review_open(
        delivery=delivery,
        verdict=verdict,
        ruleset_version=active_version(),
        now=timezone.now(),
    )


def item_url(item: ReviewRequest, view: str) -> str:
    return f"{QUEUE}{item.pk}/{view}/"


def listed(client, query: str = "") -> set:
    response = client.get(QUEUE + query)
    assert response.status_code == 200
    return {item.pk for item in response.context["cl"].result_list}


def filter_choices(content: str, title: str) -> list[str]:
    """The texts of the choices of one list filter in the sidebar, as shown."""
    section = re.search(rf'<details data-filter-title="{title}".*?</details>', content, re.S)
    assert section, f"no filter {title!r} on the page"
    return [
        re.sub(r"\s+", " ", text).strip()
        for text in re.findall(r"<a href=\"[^\"]*\">(.*?)</a>", section.group(0), re.S)
    ]


def decide(client, item: ReviewRequest, verdict: str, reason: str, **extra):
    return client.post(
        item_url(item, "decide"), {"verdict": verdict, "reason": reason, "comment": "", **extra}
    )


def nudge_ids_for(token: str) -> set[str]:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = api.get(NUDGES_API)
    assert response.status_code == 200
    return {nudge["id"] for nudge in response.json()}


def assert_untouched(item: ReviewRequest) -> None:
    item.refresh_from_db()
    item.delivery.refresh_from_db()
    assert item.state == ReviewState.PENDING
    assert not ReviewDecision.objects.filter(request=item).exists()
    assert item.delivery.state == DeliveryState.AWAITING_REVIEW


def decide_until_nudge(patient, at: dt.datetime):
    """The engine's next nudge for the patient from `at` on (the policy may choose no nudge,
    so each try takes the next minute and another seed)."""
    for attempt in range(120):
        decision, _ = decision_make(
            patient=patient,
            now=at + dt.timedelta(minutes=attempt),
            rng=np.random.default_rng(attempt),
        )
        if decision.outcome == Outcome.NUDGE:
            return Delivery.objects.select_related("template", "decision").get(decision=decision)
    raise AssertionError("the policy never chose a nudge")


@pytest.fixture
def cardio_client(client, clinician_cardio):
    client.force_login(clinician_cardio)
    return client


# Scope: the list ---------------------------------------------------------------------------


def test_a_clinician_sees_only_items_of_the_groups_they_cover(cardio_client):
    heart, _ = make_patient(groups=("heart-failure",))
    blood_pressure, _ = make_patient(groups=("hypertension",))
    mood, _ = make_patient(groups=("depression",))
    mine = {
        open_review(heart).pk,
        open_review(blood_pressure, groups=("hypertension",), rules=("HTN-VIGOROUS-01",)).pk,
    }
    open_review(mood, groups=("depression",), rules=("DEP-SLEEPRESTRICT-01",))

    response = cardio_client.get(QUEUE)

    assert {item.pk for item in response.context["cl"].result_list} == mine
    assert heart.pseudonym in response.content.decode()
    assert mood.pseudonym not in response.content.decode()


def test_an_item_with_no_group_is_visible_to_every_clinician(
    client, clinician_cardio, clinician_mental, clinician_other
):
    patient, _ = make_patient()
    item = open_review(patient, groups=(), rules=())

    for clinician in (clinician_cardio, clinician_mental, clinician_other):
        client.force_login(clinician)
        assert item.pk in listed(client), clinician.username


def test_the_queue_shows_pending_items_by_default_and_closed_ones_on_request(
    cardio_client, clinician_cardio
):
    patient, _ = make_patient(groups=("heart-failure",))
    pending = open_review(patient)
    closed = open_review(patient)
    decide(cardio_client, closed, "reject", "contraindicated")

    assert listed(cardio_client) == {pending.pk}
    assert listed(cardio_client, "?state=rejected") == {closed.pk}
    assert listed(cardio_client, "?state=all") == {pending.pk, closed.pk}


# Scope: an item of another group answers 404 everywhere ----------------------------------


@pytest.fixture
def foreign_item(db):
    """An item for depression only: outside the cardio clinician's groups."""
    patient, _ = make_patient(groups=("depression",))
    return open_review(patient, groups=("depression",), rules=("DEP-SLEEPRESTRICT-01",))


def test_the_page_of_an_item_of_another_group_is_not_found(cardio_client, foreign_item):
    response = cardio_client.get(item_url(foreign_item, "change"))

    assert response.status_code == 404
    assert foreign_item.patient.pseudonym not in response.content.decode()


def test_the_history_of_an_item_of_another_group_is_not_found(cardio_client, foreign_item):
    heart, _ = make_patient(groups=("heart-failure",))
    mine = open_review(heart)

    response = cardio_client.get(item_url(foreign_item, "history"))

    assert response.status_code == 404
    assert cardio_client.get(item_url(mine, "history")).status_code == 200


def test_deleting_an_item_of_another_group_is_not_found_and_deletes_nothing(
    cardio_client, foreign_item
):
    heart, _ = make_patient(groups=("heart-failure",))
    mine = open_review(heart)

    shown = cardio_client.get(item_url(foreign_item, "delete"))
    posted = cardio_client.post(item_url(foreign_item, "delete"), {"post": "yes"})

    assert (shown.status_code, posted.status_code) == (404, 404)
    # An item in scope may not be deleted either, but that is a refusal, not "not found".
    assert cardio_client.post(item_url(mine, "delete"), {"post": "yes"}).status_code == 403
    assert ReviewRequest.objects.filter(pk=foreign_item.pk).exists()
    assert_untouched(foreign_item)


def test_deciding_an_item_of_another_group_is_not_found_and_changes_nothing(
    cardio_client, foreign_item
):
    response = decide(cardio_client, foreign_item, "approve", "appropriate")

    assert response.status_code == 404
    assert_untouched(foreign_item)


def test_an_action_naming_an_item_of_another_group_is_not_found_and_changes_nothing(
    cardio_client, foreign_item
):
    heart, _ = make_patient(groups=("heart-failure",))
    mine = open_review(heart)
    selected = [str(mine.pk), str(foreign_item.pk)]

    chosen = cardio_client.post(
        QUEUE, {"action": "approve_selected", "_selected_action": selected, "index": "0"}
    )
    confirmed = cardio_client.post(
        QUEUE,
        {
            "action": "approve_selected",
            "_selected_action": selected,
            "confirm": "yes",
            "reason": "appropriate",
        },
    )

    assert (chosen.status_code, confirmed.status_code) == (404, 404)
    assert_untouched(foreign_item)
    assert_untouched(mine)


def test_a_clinician_of_another_group_cannot_decide_an_item_through_the_service(
    clinician_other, foreign_item
):
    with pytest.raises(ApplicationError) as raised:
        review_decide(
            clinician=clinician_other,
            request_id=foreign_item.pk,
            verdict="approve",
            reason="appropriate",
        )

    assert raised.value.status == 404
    assert_untouched(foreign_item)


# Filters ----------------------------------------------------------------------------------


def test_the_group_filter_offers_only_covered_groups_and_counts_only_their_items(
    cardio_client,
):
    heart, _ = make_patient(groups=("heart-failure",))
    blood_pressure, _ = make_patient(groups=("hypertension",))
    mood, _ = make_patient(groups=("depression",))
    lungs, _ = make_patient(groups=("copd",))
    for _ in range(2):
        open_review(heart)
    open_review(blood_pressure, groups=("hypertension",), rules=("HTN-VIGOROUS-01",))
    for _ in range(3):
        open_review(mood, groups=("depression",), rules=("DEP-SLEEPRESTRICT-01",))
    open_review(lungs, groups=("copd",), rules=("COPD-VIGOROUS-01",))

    response = cardio_client.get(QUEUE + "?_facets=True")

    choices = filter_choices(response.content.decode(), "medical group")
    assert "Heart failure (2)" in choices
    assert "Hypertension (1)" in choices
    assert "No group (any clinician) (0)" in choices
    shown = " ".join(choices)
    for other in ("Depression", "Eating disorders", "Chronic obstructive"):
        assert other not in shown


def test_filtering_by_a_group_shows_only_its_items(cardio_client):
    heart, _ = make_patient(groups=("heart-failure", "hypertension"))
    failing = open_review(heart)
    pressure = open_review(heart, groups=("hypertension",), rules=("HTN-VIGOROUS-01",))

    assert listed(cardio_client, "?group=heart-failure") == {failing.pk}
    assert listed(cardio_client, "?group=hypertension") == {pressure.pk}


def test_naming_an_uncovered_group_in_the_filter_shows_nothing(cardio_client, foreign_item):
    assert listed(cardio_client, "?group=depression") == set()


def test_the_severity_filter_shows_only_items_of_that_severity(cardio_client):
    patient, _ = make_patient(groups=("heart-failure",))
    high = open_review(patient, severity="high")
    open_review(patient, severity="moderate", rules=("HF-POTASSIUM-01",))

    assert listed(cardio_client, "?severity=high") == {high.pk}


def test_the_waiting_filter_shows_only_items_waiting_over_a_day(cardio_client):
    patient, _ = make_patient(groups=("heart-failure",))
    old = open_review(patient)
    open_review(patient)
    ReviewRequest.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=25)
    )

    assert listed(cardio_client, "?waiting=over_24h") == {old.pk}


def test_the_kind_filter_separates_patient_feedback_from_approvals(cardio_client):
    patient, _ = make_patient(groups=("heart-failure",))
    before = open_review(patient)
    feedback = feedback_review_open(
        delivery=make_delivery_row(patient, DeliveryState.DISMISSED), now=timezone.now()
    )

    assert listed(cardio_client, f"?kind__exact={ReviewKind.PATIENT_FEEDBACK}") == {feedback.pk}
    assert listed(cardio_client, f"?kind__exact={ReviewKind.BEFORE_DELIVERY}") == {before.pk}


# The item page ----------------------------------------------------------------------------


def test_the_item_page_shows_the_patient_facts_the_rules_and_why_the_engine_chose_it(
    cardio_client,
):
    patient, _ = make_patient(goals={"activity": 0.8}, groups=("heart-failure",))
    delivery = make_nudge(patient, review=True)
    item = ReviewRequest.objects.get(delivery=delivery)
    rule = Rule.objects.get(rule_set__version=active_version(), code=item.rules[0]["code"])

    response = cardio_client.get(item_url(item, "change"))

    assert response.status_code == 200
    page = response.content.decode()
    assert patient.pseudonym in page
    assert "Heart failure" in page
    assert GROUP_CODES["heart-failure"] in page
    assert "activity 0.8" in page
    assert escape(delivery.template.title) in page
    assert rule.code in page
    assert escape(rule.rationale) in page
    assert escape(delivery.why) in page
    assert f"{delivery.decision.propensity:.3f}" in page
    assert 'id="decide-approve"' in page and 'id="decide-reject"' in page


class FormNesting(HTMLParser):
    """Records each <form> opened while another is open (browsers drop the inner tag, so its
    fields and buttons belong to the outer form)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str | None] = []
        self.open: list[str | None] = []
        self.nested: list[tuple[str | None, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "form":
            form_id = dict(attrs).get("id")
            self.seen.append(form_id)
            if self.open:
                self.nested.append((form_id, self.open[-1]))
            self.open.append(form_id)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.open:
            self.open.pop()


def test_the_item_pages_decide_forms_are_not_nested_in_the_admins_change_form(cardio_client):
    patient, _ = make_patient(groups=("heart-failure",))
    item = open_review(patient)

    parser = FormNesting()
    parser.feed(cardio_client.get(item_url(item, "change")).content.decode())

    assert {"decide-approve", "decide-reject"} <= set(parser.seen)
    assert parser.nested == [], (
        f"forms nested in another form (a browser submits the outer one): {parser.nested}"
    )


# Deciding ---------------------------------------------------------------------------------


def test_approving_with_a_reason_makes_the_nudge_ready_and_the_patient_then_gets_it(
    cardio_client, clinician_cardio
):
    patient, token = make_patient(groups=("heart-failure",))
    item = open_review(patient)
    assert str(item.delivery_id) not in nudge_ids_for(token)

    response = decide(cardio_client, item, "approve", "appropriate", comment="checked")

    assert response.status_code == 302
    item.refresh_from_db()
    assert item.state == ReviewState.APPROVED
    assert Delivery.objects.get(pk=item.delivery_id).state == DeliveryState.READY
    assert str(item.delivery_id) in nudge_ids_for(token)


def test_an_approval_in_the_patients_quiet_hours_holds_the_nudge_until_they_end(cardio_client):
    now = timezone.now().astimezone(dt.UTC)
    quiet = ((now - dt.timedelta(hours=1)).time(), (now + dt.timedelta(hours=2)).time())
    patient, token = make_patient(groups=("heart-failure",), quiet=quiet)
    item = open_review(patient)

    decide(cardio_client, item, "approve", "appropriate")

    delivery = Delivery.objects.get(pk=item.delivery_id)
    assert delivery.state == DeliveryState.HELD
    assert delivery.due_at is not None and delivery.due_at > now
    assert str(delivery.pk) not in nudge_ids_for(token)


def test_rejecting_blocks_the_nudge_and_the_patient_never_gets_it(cardio_client):
    patient, token = make_patient(groups=("heart-failure",))
    item = open_review(patient)

    decide(cardio_client, item, "reject", "contraindicated")

    item.refresh_from_db()
    assert item.state == ReviewState.REJECTED
    assert Delivery.objects.get(pk=item.delivery_id).state == DeliveryState.BLOCKED
    assert str(item.delivery_id) not in nudge_ids_for(token)


def test_a_decision_without_a_reason_decides_nothing(cardio_client):
    patient, _ = make_patient(groups=("heart-failure",))
    item = open_review(patient)

    cardio_client.post(item_url(item, "decide"), {"verdict": "approve", "reason": ""})

    assert_untouched(item)


def test_a_decision_is_recorded_with_clinician_group_verdict_reason_and_rule_set(
    cardio_client, clinician_cardio
):
    patient, _ = make_patient(groups=("heart-failure",))
    item = open_review(patient)

    decide(cardio_client, item, "approve", "monitored", comment="BP stable")

    [decision] = ReviewDecision.objects.filter(request=item)
    assert decision.clinician == clinician_cardio
    assert decision.group == MedicalGroup.objects.get(slug="heart-failure")
    assert (decision.verdict, decision.reason, decision.comment) == (
        "approve",
        "monitored",
        "BP stable",
    )
    assert decision.ruleset_version == active_version()


def test_a_multi_group_item_waits_for_a_clinician_of_each_group(
    client, clinician_cardio, clinician_mental
):
    patient, token = make_patient(groups=("heart-failure", "depression"))
    item = open_review(
        patient,
        groups=("heart-failure", "depression"),
        rules=("HF-VIGOROUS-01", "DEP-SLEEPRESTRICT-01"),
    )

    client.force_login(clinician_cardio)
    decide(client, item, "approve", "appropriate")
    item.refresh_from_db()
    state_after_cardio = (item.state, Delivery.objects.get(pk=item.delivery_id).state)
    client.force_login(clinician_mental)
    decide(client, item, "approve", "appropriate")
    item.refresh_from_db()

    assert state_after_cardio == (ReviewState.PENDING, DeliveryState.AWAITING_REVIEW)
    assert item.state == ReviewState.APPROVED
    assert Delivery.objects.get(pk=item.delivery_id).state == DeliveryState.READY
    decided = ReviewDecision.objects.filter(request=item)
    assert set(decided.values_list("group__slug", "clinician_id")) == {
        ("heart-failure", clinician_cardio.pk),
        ("depression", clinician_mental.pk),
    }
    assert str(item.delivery_id) in nudge_ids_for(token)


def test_a_clinician_cannot_decide_their_group_of_an_item_twice(client, clinician_cardio):
    patient, _ = make_patient(groups=("heart-failure", "depression"))
    item = open_review(patient, groups=("heart-failure", "depression"))
    client.force_login(clinician_cardio)
    decide(client, item, "approve", "appropriate")

    decide(client, item, "reject", "contraindicated")

    item.refresh_from_db()
    assert item.state == ReviewState.PENDING
    assert list(ReviewDecision.objects.filter(request=item).values_list("verdict", flat=True)) == [
        "approve"
    ]


def test_bulk_approval_asks_for_a_reason_on_a_confirmation_page_then_approves_all(
    cardio_client, clinician_cardio
):
    patient, token = make_patient(groups=("heart-failure",))
    items = [open_review(patient), open_review(patient)]
    selected = [str(item.pk) for item in items]

    page = cardio_client.post(
        QUEUE, {"action": "approve_selected", "_selected_action": selected, "index": "0"}
    )
    untouched = [ReviewRequest.objects.get(pk=item.pk).state for item in items]
    done = cardio_client.post(
        QUEUE,
        {
            "action": "approve_selected",
            "_selected_action": selected,
            "confirm": "yes",
            "reason": "appropriate",
            "comment": "routine",
        },
    )

    assert page.status_code == 200
    assert "admin/clinicians/review_bulk.html" in [t.name for t in page.templates]
    assert 'name="reason"' in page.content.decode()
    assert untouched == [ReviewState.PENDING, ReviewState.PENDING]
    assert done.status_code == 302
    for item in items:
        item.refresh_from_db()
        assert item.state == ReviewState.APPROVED
        assert item.decisions.get().clinician == clinician_cardio
    assert {str(item.delivery_id) for item in items} <= nudge_ids_for(token)


def test_bulk_approval_without_a_reason_approves_nothing(cardio_client):
    patient, _ = make_patient(groups=("heart-failure",))
    item = open_review(patient)

    response = cardio_client.post(
        QUEUE,
        {"action": "approve_selected", "_selected_action": [str(item.pk)], "confirm": "yes"},
    )

    assert response.status_code == 200  # the confirmation page again, with the error
    assert_untouched(item)


# Standing approvals -----------------------------------------------------------------------


@pytest.fixture
def vigorous_only(db):
    """A heart-failure patient whose only activity nudge left is interval training (they
    declined the others), which the heart-failure rules send to review."""
    patient, token = make_patient(goals={"activity": 1.0}, groups=("heart-failure",))
    for slug in set(Template.objects.filter(goal="activity").values_list("slug", flat=True)):
        if slug != "interval-training":
            TemplateDecline.objects.create(patient=patient, slug=slug)
    return patient


def test_a_standing_approval_lets_the_same_nudge_through_next_time_without_review(
    cardio_client, vigorous_only
):
    patient = vigorous_only
    first = make_nudge(patient, review=True)
    item = ReviewRequest.objects.get(delivery=first)

    decide(cardio_client, item, "approve", "appropriate", standing_days="30")
    later = decide_until_nudge(patient, timezone.now() + dt.timedelta(days=4))

    assert StandingApproval.objects.filter(patient=patient).count() == 1
    assert later.template.slug == "interval-training"
    assert later.state == DeliveryState.READY
    assert not ReviewRequest.objects.filter(delivery=later).exists()
    assert f"interval-training@{later.template.version}" in later.decision.receipt["safety"].get(
        "approved", {}
    )


def test_a_standing_approval_lapses_when_the_patients_groups_change(cardio_client, vigorous_only):
    patient = vigorous_only
    item = ReviewRequest.objects.get(delivery=make_nudge(patient, review=True))
    decide(cardio_client, item, "approve", "appropriate", standing_days="30")

    Condition.objects.create(patient=patient, code=GROUP_CODES["depression"])
    patients_groups_refresh(patient_ids=[patient.pk])
    later = decide_until_nudge(patient, timezone.now() + dt.timedelta(days=4))

    assert later.state == DeliveryState.AWAITING_REVIEW
    assert ReviewRequest.objects.get(delivery=later).state == ReviewState.PENDING
    safety = later.decision.receipt["safety"]
    assert f"interval-training@{later.template.version}" in safety.get("review", {})
    assert "approved" not in safety


# Who may use the queue --------------------------------------------------------------------


@pytest.fixture
def heart_item(db):
    patient, _ = make_patient(groups=("heart-failure",))
    return open_review(patient)


def test_staff_without_the_clinician_role_get_no_queue(client, heart_item):
    client.force_login(UserFactory.create(username="staff-no-role"))

    listing = client.get(QUEUE)
    page = client.get(item_url(heart_item, "change"))
    decided = decide(client, heart_item, "approve", "appropriate")

    assert listing.status_code == 403
    assert (page.status_code, decided.status_code) == (404, 404)
    for response in (listing, page):
        assert heart_item.patient.pseudonym not in response.content.decode()
    assert_untouched(heart_item)


def test_a_user_who_is_not_staff_is_sent_to_the_login_page(client, outsider, heart_item):
    client.force_login(outsider)

    for response in (client.get(QUEUE), client.get(item_url(heart_item, "change"))):
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    decide(client, heart_item, "approve", "appropriate")
    assert_untouched(heart_item)


def test_a_superuser_who_is_not_a_clinician_gets_no_queue(client, heart_item):
    client.force_login(UserFactory.create(username="root", is_superuser=True))

    listing = client.get(QUEUE)
    page = client.get(item_url(heart_item, "change"))

    assert (listing.status_code, page.status_code) == (403, 404)
    assert heart_item.patient.pseudonym not in listing.content.decode()


def test_a_superuser_without_grants_sees_no_items_of_any_group(client, heart_item, foreign_item):
    root = get_user_model().objects.create_user(
        username="root-clinician", is_staff=True, is_superuser=True
    )
    clinician_groups_set(user=root, groups=MedicalGroup.objects.none())
    client.force_login(root)

    assert listed(client, "?state=all") == set()
    assert client.get(item_url(heart_item, "change")).status_code == 404


# Rule sets --------------------------------------------------------------------------------


def test_a_safety_lead_can_see_the_rule_sets(client):
    client.force_login(make_safety_lead("lead"))

    response = client.get("/admin/safety/ruleset/")

    assert response.status_code == 200
    shown = {rule_set.pk for rule_set in response.context["cl"].result_list}
    assert RuleSet.objects.get(version=active_version()).pk in shown
    assert shown == set(RuleSet.objects.values_list("pk", flat=True))


def test_a_clinician_cannot_see_the_rule_sets(cardio_client):
    listing = cardio_client.get("/admin/safety/ruleset/")
    page = cardio_client.get(
        f"/admin/safety/ruleset/{RuleSet.objects.get(version=active_version()).pk}/change/"
    )

    assert (listing.status_code, page.status_code) == (403, 403)
