"""A long run through the decision service over the demo cohort (docs/domain.md "Safety":
blocked candidates are removed before any exploration, so their probability is exactly 0):
5,000 decisions for many patients and moments, with held nudges released, pushes sent and
inboxes fetched in between, and not one nudge of a template that a block rule matches for
the patient reaches them. Expected verdicts come from the shipped catalogue file, read here
on its own."""

import datetime as dt
import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from nudges.models import (
    Decision,
    Delivery,
    DeliveryState,
    Outcome,
    PushMessage,
    PushState,
    Template,
)
from nudges.selectors import current_nudges
from nudges.services.decisions import decision_make
from nudges.services.deliveries import deliveries_mark_delivered, deliveries_release_held
from nudges.services.outbox import outbox_dispatch
from patients.models import Patient
from safety.models import GroupMembership
from safety.services import RULES_FILE

# Real transactions: seeding switches SQLite to bulk-load mode (PRAGMA synchronous=OFF), which
# SQLite refuses inside the transaction that wraps an ordinary test.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DECISIONS = 5000
SWEEP_EVERY = 250  # decisions between beat sweeps and inbox fetches
ROUND_GAP = dt.timedelta(minutes=97)  # between one patient's decisions
REACHED = {
    DeliveryState.READY,
    DeliveryState.DELIVERED,
    DeliveryState.OPENED,
    DeliveryState.DONE,
    DeliveryState.DISMISSED,
    DeliveryState.SNOOZED,
}
SHIPPED_RULES: list[dict[str, Any]] = json.loads(RULES_FILE.read_text())["rules"]


def shipped_action(tags: set[str], groups: set[str]) -> str:
    """The strictest action of the shipped rules for a template with `tags` (every shipped
    rule matches on tags only; an unverified block reviews)."""
    actions = {
        "review" if r["action"] == "block" and not r["verified"] else r["action"]
        for r in SHIPPED_RULES
        if set(r["groups"]) & groups and set(r["match"]["tags"]) & tags
    }
    for action in ("block", "review", "allow_with_note"):
        if action in actions:
            return action
    return "allow"


def memberships() -> dict[Any, set[str]]:
    groups: dict[Any, set[str]] = defaultdict(set)
    for pid, slug in GroupMembership.objects.values_list("patient_id", "group__slug"):
        groups[pid].add(slug)
    return groups


def sweep(moment: dt.datetime, patients: list[Patient], rng: np.random.Generator) -> None:
    """What beat and the apps do between decisions: release held nudges, send pushes, and
    a fifth of the patients open the app."""
    deliveries_release_held(now=moment)
    outbox_dispatch(now=moment, limit=2000)
    for index in rng.choice(len(patients), size=len(patients) // 5, replace=False):
        nudges = list(current_nudges(patients[index], now=moment))
        deliveries_mark_delivered(deliveries=nudges, actor="inbox")


def test_five_thousand_decisions_never_bring_a_blocked_template_to_a_patient(
    tmp_path, policy_in_force
):
    call_command("seed_demo", patients=300, days=5, seed=3, credentials=tmp_path / "c.json")
    patients = list(Patient.objects.order_by("pseudonym"))
    groups = memberships()
    tags = {f"{t.slug}@{t.version}": set(t.tags) for t in Template.objects.all()}
    rng = np.random.default_rng(3)
    start = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    seeded = set(Decision.objects.values_list("pk", flat=True))

    receipts_with_blocks = offered_blocked = 0
    made, moment = 0, start
    while made < DECISIONS:
        for index, patient in enumerate(patients):
            moment = start + ROUND_GAP * (made // len(patients)) + dt.timedelta(minutes=index % 45)
            decision, created = decision_make(
                patient=patient, now=moment, rng=np.random.default_rng([3, made])
            )
            assert created
            made += 1
            blocked = set(decision.receipt.get("safety", {}).get("block", {}))
            receipts_with_blocks += bool(blocked)
            offered = decision.receipt.get("candidates", {}).get("template", [])
            offered_blocked += sum(
                key in blocked or shipped_action(tags[key], groups[patient.pk]) == "block"
                for key in offered
            )
            if made % SWEEP_EVERY == 0:
                sweep(moment, patients, rng)
            if made == DECISIONS:
                break
    sweep(moment + dt.timedelta(hours=12), patients, rng)

    reached = Delivery.objects.filter(state__in=REACHED).select_related("template")
    verdicts = Counter(shipped_action(set(d.template.tags), groups[d.patient_id]) for d in reached)
    assert verdicts["block"] == 0, verdicts
    assert verdicts["review"] == 0, verdicts  # no clinician approved anything in this run
    assert offered_blocked == 0
    # The property was exercised: many nudges reached patients, through the inbox and by
    # push, and many receipts listed blocked templates.
    run = Decision.objects.exclude(pk__in=seeded)
    outcomes = Counter(run.values_list("outcome", flat=True))
    assert sum(outcomes.values()) == DECISIONS
    assert outcomes[Outcome.NUDGE] >= 500, outcomes
    assert reached.filter(decision__in=run).count() >= 500
    assert reached.filter(decision__in=run, state=DeliveryState.DELIVERED).exists()
    assert PushMessage.objects.filter(state=PushState.SENT).exists()
    assert receipts_with_blocks >= 100, receipts_with_blocks
    # ... under the policy in force: every decision that reached a policy (the others were
    # not available: daily cap, gap, quiet) was made by it; the agenda policy explores over
    # what safety leaves.
    decided = run.filter(outcome__in=[Outcome.NUDGE, Outcome.NO_NUDGE])
    policies = Counter(decided.values_list("policy_name", flat=True))
    assert policies == {policy_in_force: decided.count()}, policies
