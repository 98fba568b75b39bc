"""Clinical governance of the rules (safety.services, clinicians.governance): rules change only
in a draft copied from the active set, every change is recorded, a proposal carries a dry run
of its impact, and activation needs a second safety lead and re-checks every open nudge."""

import datetime as dt

import pytest
from django.utils import timezone
from numpy.random import default_rng

from clinicians.governance import ruleset_activate, ruleset_dry_run, ruleset_submit
from core.errors import ApplicationError
from core.models import CacheStamp
from nudges.models import (
    Delivery,
    DeliveryState,
    DeliveryTransition,
    Outcome,
    ReviewKind,
    ReviewRequest,
    ReviewState,
    Template,
    TemplateDecline,
    TemplateStatus,
)
from nudges.services import gate
from nudges.services.catalogue import catalogue_snapshot
from nudges.services.decisions import decision_make
from safety.models import (
    MedicalGroup,
    Rule,
    RuleRevision,
    RuleSet,
    RuleSetStatus,
    StandingApproval,
)
from safety.selectors import active_rule_set, standing_approvals
from safety.services import (
    RULE_FIELDS,
    RULES_STAMP,
    rule_delete,
    rule_save,
    ruleset_discard,
    ruleset_draft_create,
)
from tests.factories import make_delivery_row, make_nudge, make_patient, make_safety_lead

pytestmark = pytest.mark.django_db

S = DeliveryState


@pytest.fixture(autouse=True)
def fresh_gate_rules():
    """The gate keeps compiled rule sets by version for the life of the process. Each test
    rolls back, so the next test's version 2 is a different set: start every test afresh."""
    gate._rules.cache_clear()
    yield
    gate._rules.cache_clear()


@pytest.fixture
def author(db):
    return make_safety_lead("lead-author")


@pytest.fixture
def signer(db):
    return make_safety_lead("lead-signer")


def active_set() -> RuleSet:
    active = active_rule_set()
    assert active is not None
    return active


def template(slug: str) -> Template:
    return Template.objects.get(slug=slug, status=TemplateStatus.ACTIVE)


def new_rule_fields(**overrides) -> dict:
    fields = {
        "tags": ["increase-fluids"],
        "categories": [],
        "goals": [],
        "intensities": [],
        "action": "block",
        "severity": "high",
        "rationale": "A test rule.",
        "note_to_patient": "",
        "source_title": "A source",
        "source_publisher": "A publisher",
        "source_url": "https://example.org/source",
        "source_summary": "What the source says.",
        "verified": True,
        "effective_from": dt.date(2026, 1, 1),
        "effective_to": None,
    }
    return {**fields, **overrides}


def fields_of(rule: Rule, **overrides) -> dict:
    return {**{name: getattr(rule, name) for name in RULE_FIELDS}, **overrides}


def contents(rule_set: RuleSet) -> dict:
    return {
        rule.code: (fields_of(rule), sorted(g.slug for g in rule.groups.all()))
        for rule in rule_set.rules.prefetch_related("groups")
    }


def draft_with_rule(by, code: str, groups: list[str], **fields) -> RuleSet:
    draft = ruleset_draft_create(by=by)
    rule_save(rule_set=draft, code=code, groups=groups, fields=new_rule_fields(**fields), by=by)
    return draft


def rules_stamp() -> int | None:
    return CacheStamp.objects.filter(name=RULES_STAMP).values_list("version", flat=True).first()


def reasons(delivery: Delivery) -> list[tuple[str, str, str]]:
    return list(
        DeliveryTransition.objects.filter(delivery=delivery).values_list(
            "to_state", "actor", "reason"
        )
    )


# Drafts ------------------------------------------------------------------------------------


def test_a_new_draft_is_a_copy_of_the_active_rule_set(author):
    active = active_set()

    draft = ruleset_draft_create(by=author)

    assert draft.status == RuleSetStatus.DRAFT
    assert draft.version > active.version
    assert draft.created_by == author
    assert contents(draft) == contents(active)
    assert set(draft.rules.values_list("pk", flat=True)).isdisjoint(
        active.rules.values_list("pk", flat=True)
    )


def test_editing_the_draft_does_not_touch_the_active_set(author):
    active = active_set()
    before = contents(active)
    draft = ruleset_draft_create(by=author)
    rule = draft.rules.get(code="HF-FLUIDS-01")

    rule_save(
        rule_set=draft,
        code="HF-FLUIDS-01",
        groups=["heart-failure", "chronic-kidney-disease"],
        fields=fields_of(rule, action="review"),
        by=author,
    )

    assert contents(active) == before


def test_a_second_draft_is_refused_while_one_is_open(author, signer):
    ruleset_draft_create(by=author)

    with pytest.raises(ApplicationError) as refused:
        ruleset_draft_create(by=signer)

    assert (refused.value.status, refused.value.code) == (409, "conflict")
    assert RuleSet.objects.filter(status=RuleSetStatus.DRAFT).count() == 1


@pytest.mark.parametrize(
    ("groups", "change", "field"),
    [
        (["no-such-group"], {}, "groups"),
        ([], {}, "groups"),
        (["hypertension"], {"tags": []}, "match"),
        (["hypertension"], {"categories": ["lecture"]}, "categories"),
        (["hypertension"], {"action": "allow"}, "action"),
        (["hypertension"], {"severity": "critical"}, "severity"),
        (["hypertension"], {"action": "allow_with_note", "note_to_patient": ""}, "note_to_patient"),
        (["hypertension"], {"effective_to": dt.date(2025, 12, 1)}, "effective_to"),
        (["hypertension"], {"rationale": "  "}, "rationale"),
    ],
)
def test_a_malformed_new_rule_is_refused_naming_the_field_and_nothing_is_saved(
    author, groups, change, field
):
    draft = ruleset_draft_create(by=author)
    rules_before = draft.rules.count()

    with pytest.raises(ApplicationError) as refused:
        rule_save(
            rule_set=draft,
            code="NEW-01",
            groups=groups,
            fields=new_rule_fields(**change),
            by=author,
        )

    assert refused.value.code == "invalid_rule"
    assert field in refused.value.fields
    assert "NEW-01" in refused.value.message
    assert draft.rules.count() == rules_before
    assert not RuleRevision.objects.filter(rule_set=draft).exists()


def test_a_malformed_edit_leaves_the_rule_as_it_was(author):
    draft = ruleset_draft_create(by=author)
    rule = draft.rules.get(code="HF-FLUIDS-01")
    before = contents(draft)["HF-FLUIDS-01"]

    with pytest.raises(ApplicationError) as refused:
        rule_save(
            rule_set=draft,
            code="HF-FLUIDS-01",
            groups=["heart-failure"],
            fields=fields_of(rule, action="allow_with_note", note_to_patient=""),
            by=author,
        )

    assert "note_to_patient" in refused.value.fields
    assert contents(draft)["HF-FLUIDS-01"] == before
    assert draft.rules.get(code="HF-FLUIDS-01").revision == rule.revision
    assert not RuleRevision.objects.filter(rule_set=draft).exists()


def test_editing_a_rule_records_a_revision_with_before_and_after(author):
    draft = ruleset_draft_create(by=author)
    rule = draft.rules.get(code="HF-FLUIDS-01")

    saved = rule_save(
        rule_set=draft,
        code="HF-FLUIDS-01",
        groups=["heart-failure", "chronic-kidney-disease"],
        fields=fields_of(rule, action="review", severity="moderate"),
        by=author,
    )

    assert (saved.action, saved.severity, saved.revision) == (
        "review",
        "moderate",
        rule.revision + 1,
    )
    [revision] = RuleRevision.objects.filter(rule_set=draft)
    assert (revision.code, revision.change, revision.changed_by) == (
        "HF-FLUIDS-01",
        "edited",
        author,
    )
    assert revision.before is not None and revision.after is not None
    assert (revision.before["action"], revision.before["severity"]) == ("block", "high")
    assert (revision.after["action"], revision.after["severity"]) == ("review", "moderate")
    assert revision.before["groups"] == ["heart-failure"]
    assert revision.after["groups"] == ["chronic-kidney-disease", "heart-failure"]


def test_creating_and_deleting_a_rule_in_a_draft_are_recorded(author):
    draft = ruleset_draft_create(by=author)

    created = rule_save(
        rule_set=draft,
        code="HTN-FLUIDS-T1",
        groups=["hypertension"],
        fields=new_rule_fields(),
        by=author,
    )
    rule_delete(rule=draft.rules.get(code="HF-COLD-01"), by=author)

    assert created.rule_set == draft
    assert not draft.rules.filter(code="HF-COLD-01").exists()
    assert active_set().rules.filter(code="HF-COLD-01").exists()
    revisions = {r.code: r for r in RuleRevision.objects.filter(rule_set=draft)}
    created_revision, deleted_revision = revisions["HTN-FLUIDS-T1"], revisions["HF-COLD-01"]
    assert created_revision.change == "created"
    assert created_revision.before is None
    assert created_revision.after is not None
    assert created_revision.after["groups"] == ["hypertension"]
    assert deleted_revision.change == "deleted"
    assert deleted_revision.before is not None
    assert deleted_revision.before["action"] == "block"
    assert deleted_revision.after is None
    assert {r.changed_by for r in revisions.values()} == {author}


def test_a_rule_saved_as_verified_without_a_source_cannot_block_silently(author):
    # docs/safety-rules.md: "A rule without such a source has verified: false" and the engine
    # turns an unverified block into review; the file loader enforces it (_rule_fields), so
    # an edit in a draft must too: refuse the rule, or store it unverified.
    draft = ruleset_draft_create(by=author)
    unsourced = new_rule_fields(
        source_title="", source_publisher="", source_url="", source_summary="", verified=True
    )

    try:
        rule_save(
            rule_set=draft,
            code="HTN-FLUIDS-T1",
            groups=["hypertension"],
            fields=unsourced,
            by=author,
        )
    except ApplicationError as refused:
        assert "source_url" in refused.fields or "verified" in refused.fields
    else:
        assert draft.rules.get(code="HTN-FLUIDS-T1").verified is False


def proposed_set(author) -> RuleSet:
    draft = ruleset_draft_create(by=author)
    return ruleset_submit(rule_set=draft, by=author)


@pytest.mark.parametrize("status", ["active", "proposed"])
def test_an_active_or_proposed_set_cannot_be_edited(author, status):
    rule_set = active_set() if status == "active" else proposed_set(author)
    rule = rule_set.rules.get(code="HF-FLUIDS-01")
    before = contents(rule_set)

    with pytest.raises(ApplicationError) as edit:
        rule_save(
            rule_set=rule_set,
            code="HF-FLUIDS-01",
            groups=["heart-failure"],
            fields=fields_of(rule, action="review"),
            by=author,
        )
    with pytest.raises(ApplicationError) as delete:
        rule_delete(rule=rule, by=author)
    with pytest.raises(ApplicationError) as add:
        rule_save(
            rule_set=rule_set,
            code="NEW-01",
            groups=["hypertension"],
            fields=new_rule_fields(),
            by=author,
        )

    for refused in (edit, delete, add):
        assert (refused.value.status, refused.value.code) == (409, "not_editable")
    assert contents(rule_set) == before
    assert not RuleRevision.objects.filter(rule_set=rule_set).exclude(change="created").exists()


# Proposal and dry run ----------------------------------------------------------------------


def test_submitting_a_draft_records_a_dry_run_that_counts_only_newly_affected_nudges(author):
    water, walk = template("water-with-meals"), template("walk-10-minutes")
    [failing_heart_1, failing_heart_2] = [
        make_patient(groups=("heart-failure",))[0] for _ in range(2)
    ]
    hypertensive = make_patient(groups=("hypertension",))[0]
    depressed = make_patient(groups=("depression",))[0]
    # Already blocked by HF-FLUIDS-01 today: the new hypertension rule changes nothing for them.
    make_delivery_row(failing_heart_1, S.READY, template=water)
    make_delivery_row(failing_heart_2, S.READY, template=water)
    # Newly blocked: two open nudges of one hypertension patient.
    make_delivery_row(hypertensive, S.READY, template=water)
    make_delivery_row(hypertensive, S.DELIVERED, template=water)
    # Untouched by the new rules, or no longer open.
    make_delivery_row(hypertensive, S.READY, template=walk)
    make_delivery_row(hypertensive, S.OPENED, template=water)
    # Newly sent to review.
    make_delivery_row(depressed, S.HELD, template=water)
    draft = draft_with_rule(author, "HTN-FLUIDS-T1", ["hypertension"])
    rule_save(
        rule_set=draft,
        code="DEP-FLUIDS-T1",
        groups=["depression"],
        fields=new_rule_fields(action="review", severity="low"),
        by=author,
    )

    proposed = ruleset_submit(rule_set=draft, by=author)

    assert proposed.status == RuleSetStatus.PROPOSED
    assert proposed.proposed_by == author
    assert proposed.proposed_at is not None
    dry_run = proposed.dry_run
    assert dry_run is not None
    assert {k: v for k, v in dry_run.items() if k != "computed_at"} == {
        "open_nudges": 6,
        "would_block": 2,
        "would_review": 1,
        "would_free": 0,
        "patients_blocked": 1,
        "patients_reviewed": 1,
        "by_rule": {"HTN-FLUIDS-T1": 2, "DEP-FLUIDS-T1": 1},
    }
    assert active_set().version < proposed.version  # the dry run changed nothing


def test_the_dry_run_counts_nudges_a_removed_block_rule_would_free(author):
    water = template("water-with-meals")
    for _ in range(2):
        make_delivery_row(make_patient(groups=("heart-failure",))[0], S.READY, template=water)
    draft = ruleset_draft_create(by=author)
    rule_delete(rule=draft.rules.get(code="HF-FLUIDS-01"), by=author)

    dry_run = ruleset_dry_run(rule_set=draft)

    assert (dry_run["would_free"], dry_run["would_block"], dry_run["would_review"]) == (2, 0, 0)


def test_only_a_safety_lead_may_submit_a_draft(author, clinician_cardio):
    draft = ruleset_draft_create(by=author)

    with pytest.raises(ApplicationError) as refused:
        ruleset_submit(rule_set=draft, by=clinician_cardio)

    assert (refused.value.status, refused.value.code) == (403, "permission_denied")
    draft.refresh_from_db()
    assert draft.status == RuleSetStatus.DRAFT


# Activation: who may sign off --------------------------------------------------------------


@pytest.mark.parametrize("role", ["created", "edited", "proposed"])
def test_a_safety_lead_who_created_edited_or_proposed_the_set_may_not_activate_it(role):
    leads = {name: make_safety_lead(f"lead-{name}") for name in ("created", "edited", "proposed")}
    draft = ruleset_draft_create(by=leads["created"])
    rule = draft.rules.get(code="HF-COLD-01")
    rule_save(
        rule_set=draft,
        code="HF-COLD-01",
        groups=["heart-failure"],
        fields=fields_of(rule, severity="high"),
        by=leads["edited"],
    )
    proposed = ruleset_submit(rule_set=draft, by=leads["proposed"])
    active = active_rule_set()

    with pytest.raises(ApplicationError) as refused:
        ruleset_activate(rule_set=proposed, by=leads[role])

    assert (refused.value.status, refused.value.code) == (403, "second_person_required")
    draft.refresh_from_db()
    assert draft.status == RuleSetStatus.PROPOSED
    assert active_rule_set() == active


def test_the_proposer_may_not_activate_the_set_through_a_copy_read_before_it_was_proposed(author):
    # An admin page or action that loaded the set while it was a draft still holds it with no
    # proposer; the second-person rule must be checked against the set as stored.
    draft = ruleset_draft_create(by=make_safety_lead("lead-creator"))
    loaded_earlier = RuleSet.objects.get(pk=draft.pk)
    ruleset_submit(rule_set=draft, by=author)

    with pytest.raises(ApplicationError) as refused:
        ruleset_activate(rule_set=loaded_earlier, by=author)

    assert (refused.value.status, refused.value.code) == (403, "second_person_required")
    draft.refresh_from_db()
    assert draft.status == RuleSetStatus.PROPOSED


def test_a_clinician_who_is_not_a_safety_lead_may_not_activate_a_set(author, clinician_cardio):
    proposed = proposed_set(author)

    with pytest.raises(ApplicationError) as refused:
        ruleset_activate(rule_set=proposed, by=clinician_cardio)

    assert (refused.value.status, refused.value.code) == (403, "permission_denied")
    proposed.refresh_from_db()
    assert proposed.status == RuleSetStatus.PROPOSED


def test_a_deactivated_safety_lead_may_not_activate_a_set(author, signer):
    proposed = proposed_set(author)
    signer.is_active = False
    signer.save(update_fields=["is_active"])

    with pytest.raises(ApplicationError) as refused:
        ruleset_activate(rule_set=proposed, by=signer)

    assert refused.value.status == 403
    proposed.refresh_from_db()
    assert proposed.status == RuleSetStatus.PROPOSED


def test_a_draft_that_was_not_proposed_cannot_be_activated(author, signer):
    draft = ruleset_draft_create(by=author)

    with pytest.raises(ApplicationError) as refused:
        ruleset_activate(rule_set=draft, by=signer)

    assert (refused.value.status, refused.value.code) == (409, "not_proposed")
    draft.refresh_from_db()
    assert draft.status == RuleSetStatus.DRAFT


def test_a_second_safety_lead_activates_the_set_and_new_decisions_use_it(author, signer, patient_a):
    old = active_set()
    proposed = proposed_set(author)
    assert catalogue_snapshot().ruleset_version == old.version  # decisions read the old set
    stamp_before = rules_stamp()

    ruleset_activate(rule_set=proposed, by=signer)

    proposed.refresh_from_db()
    old.refresh_from_db()
    assert proposed.status == RuleSetStatus.ACTIVE
    assert (proposed.activated_by, proposed.activated_at is not None) == (signer, True)
    assert old.status == RuleSetStatus.RETIRED
    assert active_rule_set() == proposed
    assert rules_stamp() != stamp_before
    assert catalogue_snapshot().ruleset_version == proposed.version
    assert make_nudge(patient_a[0]).ruleset_version == proposed.version


# Activation: re-checking open nudges -------------------------------------------------------


def test_activation_blocks_open_nudges_the_new_rules_block_and_recalls_those_in_the_app(
    author, signer, patient_a, patient_b
):
    water = template("water-with-meals")
    patient = patient_a[0]  # hypertension
    pending = {
        state: make_delivery_row(patient, state, template=water) for state in (S.READY, S.HELD)
    }
    in_app = {
        state: make_delivery_row(patient, state, template=water)
        for state in (S.DELIVERED, S.SNOOZED)
    }
    acted_on = make_delivery_row(patient, S.OPENED, template=water)
    other_group = make_delivery_row(patient_b[0], S.READY, template=water)  # depression
    harmless = make_delivery_row(patient, S.READY, template=template("walk-10-minutes"))
    draft = draft_with_rule(author, "HTN-FLUIDS-T1", ["hypertension"])
    ruleset_submit(rule_set=draft, by=author)

    counts = ruleset_activate(rule_set=draft, by=signer)

    assert counts == {"checked": 6, "blocked": 4, "to_review": 0}
    for delivery in pending.values():
        delivery.refresh_from_db()
        assert delivery.state == S.BLOCKED
        assert reasons(delivery)[-1] == (S.BLOCKED, "ruleset_activation", "rule_block")
    for delivery in in_app.values():
        delivery.refresh_from_db()
        assert delivery.state == S.BLOCKED
        assert delivery.closed_at is not None
        assert reasons(delivery)[-1] == (S.BLOCKED, "ruleset_activation", "recalled")
    for delivery, state in ((acted_on, S.OPENED), (other_group, S.READY), (harmless, S.READY)):
        delivery.refresh_from_db()
        assert delivery.state == state
        assert reasons(delivery) == []


def test_activation_sends_pending_nudges_that_now_need_review_to_the_review_queue(
    author, signer, patient_a
):
    water = template("water-with-meals")
    patient = patient_a[0]  # hypertension
    ready = make_delivery_row(patient, S.READY, template=water)
    held = make_delivery_row(patient, S.HELD, template=water)
    draft = draft_with_rule(author, "HTN-FLUIDS-T1", ["hypertension"], action="review")
    ruleset_submit(rule_set=draft, by=author)

    counts = ruleset_activate(rule_set=draft, by=signer)

    assert counts == {"checked": 2, "blocked": 0, "to_review": 2}
    for delivery in (ready, held):
        delivery.refresh_from_db()
        assert delivery.state == S.AWAITING_REVIEW
        assert (delivery.ruleset_version, delivery.safety_action) == (draft.version, "review")
        assert delivery.safety_rules == ["HTN-FLUIDS-T1"]
        [request] = ReviewRequest.objects.filter(delivery=delivery)
        assert (request.kind, request.state) == (ReviewKind.BEFORE_DELIVERY, ReviewState.PENDING)
        assert request.ruleset_version == draft.version
        assert [g.slug for g in request.groups.all()] == ["hypertension"]
        assert [r["code"] for r in request.rules] == ["HTN-FLUIDS-T1"]


def test_a_standing_approval_given_under_the_old_rule_set_lapses_on_activation(
    author, signer, patient_a, clinician_cardio
):
    patient = patient_a[0]  # hypertension: HTN-VIGOROUS-01 asks for review of interval training
    old = active_set()
    now = timezone.now()
    StandingApproval.objects.create(
        patient=patient,
        template_slug="interval-training",
        group=MedicalGroup.objects.get(slug="hypertension"),
        granted_by=clinician_cardio,
        ruleset_version=old.version,
        groups_key="hypertension",
        expires_at=now + dt.timedelta(days=30),
    )
    delivery = make_delivery_row(patient, S.READY, template=template("interval-training"))
    groups = frozenset({"hypertension"})
    assert gate.gate_check([delivery])[delivery.pk].passes  # the approval covers it today
    proposed = proposed_set(author)

    ruleset_activate(rule_set=proposed, by=signer)

    assert (
        standing_approvals(patient, groups=groups, ruleset_version=proposed.version, now=now) == {}
    )
    delivery.refresh_from_db()
    assert delivery.state == S.AWAITING_REVIEW
    assert ReviewRequest.objects.filter(delivery=delivery, state=ReviewState.PENDING).exists()


def _next_nudge(patient, at):
    for attempt in range(120):
        decision, _ = decision_make(
            patient=patient, now=at + dt.timedelta(minutes=attempt), rng=default_rng(attempt)
        )
        if decision.outcome == Outcome.NUDGE:
            return Delivery.objects.select_related("template", "decision").get(decision=decision)
    raise AssertionError("the policy never chose a nudge")


def test_a_process_that_served_the_old_rule_set_does_not_count_its_approvals_after_activation(
    author, signer, clinician_cardio
):
    # A decision reads the patient's standing approvals in the same round trip as the stamps
    # that say which rule set is in force, so it asks for those of the set this process served
    # with last; after an activation that guess is the old set, and its approvals must not let
    # the nudge through.
    patient, _ = make_patient(goals={"activity": 1.0}, groups=("hypertension",))
    for slug in set(Template.objects.filter(goal="activity").values_list("slug", flat=True)):
        if slug != "interval-training":  # HTN-VIGOROUS-01 sends it to review
            TemplateDecline.objects.create(patient=patient, slug=slug)
    StandingApproval.objects.create(
        patient=patient,
        template_slug="interval-training",
        group=MedicalGroup.objects.get(slug="hypertension"),
        granted_by=clinician_cardio,
        ruleset_version=active_set().version,
        groups_key="hypertension",
        expires_at=timezone.now() + dt.timedelta(days=30),
    )
    catalogue_snapshot()  # this process serves the set in force
    approved = _next_nudge(patient, timezone.now())
    assert (approved.template.slug, approved.state) == ("interval-training", S.READY)

    ruleset_activate(rule_set=proposed_set(author), by=signer)
    later = _next_nudge(patient, timezone.now() + dt.timedelta(days=4))

    assert (later.template.slug, later.state) == ("interval-training", S.AWAITING_REVIEW)
    assert "approved" not in later.decision.receipt["safety"]
    assert ReviewRequest.objects.filter(delivery=later, state=ReviewState.PENDING).exists()


# Discarding --------------------------------------------------------------------------------


def test_a_discarded_draft_is_retired_and_a_new_draft_may_be_started(author):
    draft = ruleset_draft_create(by=author)

    ruleset_discard(rule_set=draft, by=author)

    draft.refresh_from_db()
    assert draft.status == RuleSetStatus.RETIRED
    assert "discarded" in draft.note
    assert ruleset_draft_create(by=author).version > draft.version


def test_a_proposed_set_may_be_withdrawn_by_discarding_it(author, signer):
    proposed = proposed_set(author)

    ruleset_discard(rule_set=proposed, by=author)

    proposed.refresh_from_db()
    assert proposed.status == RuleSetStatus.RETIRED
    with pytest.raises(ApplicationError):
        ruleset_activate(rule_set=proposed, by=signer)


@pytest.mark.parametrize("status", [RuleSetStatus.ACTIVE, RuleSetStatus.RETIRED])
def test_an_active_or_retired_set_cannot_be_discarded(author, status):
    if status == RuleSetStatus.ACTIVE:
        rule_set = active_set()
    else:
        rule_set = ruleset_draft_create(by=author)
        ruleset_discard(rule_set=rule_set, by=author)
        rule_set.refresh_from_db()
    note = rule_set.note

    with pytest.raises(ApplicationError) as refused:
        ruleset_discard(rule_set=rule_set, by=author)

    assert refused.value.status == 409
    rule_set.refresh_from_db()
    assert (rule_set.status, rule_set.note) == (status, note)
