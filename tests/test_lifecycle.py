"""The delivery state machine (nudges/lifecycle.py) and delivery_move, the one way a delivery
changes state. The expected table is copied from docs/delivery.md, so the code and the
document cannot drift apart unnoticed."""

import itertools

import pytest
from django.utils import timezone

from core.errors import ApplicationError
from nudges import lifecycle
from nudges.models import (
    Delivery,
    DeliveryState,
    DeliveryTransition,
)
from nudges.services.deliveries import delivery_move
from tests.factories import make_delivery_row

pytestmark = pytest.mark.django_db

S = DeliveryState

# docs/delivery.md, "The state machine".
DOCUMENTED: dict[str, set[str]] = {
    S.PROPOSED: {S.AWAITING_REVIEW, S.HELD, S.READY, S.BLOCKED, S.EXPIRED},
    S.AWAITING_REVIEW: {S.HELD, S.READY, S.BLOCKED, S.EXPIRED},
    S.HELD: {S.READY, S.AWAITING_REVIEW, S.BLOCKED, S.EXPIRED},
    S.READY: {
        S.DELIVERED,
        S.OPENED,
        S.DONE,
        S.DISMISSED,
        S.SNOOZED,
        S.AWAITING_REVIEW,
        S.BLOCKED,
        S.EXPIRED,
    },
    S.DELIVERED: {S.OPENED, S.DONE, S.DISMISSED, S.SNOOZED, S.BLOCKED, S.EXPIRED},
    S.OPENED: {S.DONE, S.DISMISSED, S.SNOOZED, S.EXPIRED},
    S.SNOOZED: {S.OPENED, S.DONE, S.DISMISSED, S.SNOOZED, S.BLOCKED, S.EXPIRED},
    S.DONE: set(),
    S.DISMISSED: set(),
    S.EXPIRED: set(),
    S.BLOCKED: set(),
}
DOCUMENTED_TERMINAL = {S.DONE, S.DISMISSED, S.EXPIRED, S.BLOCKED}

ALL_PAIRS = list(itertools.product(S.values, S.values))
LEGAL = [(a, b) for a, b in ALL_PAIRS if b in DOCUMENTED[a]]
ILLEGAL = [(a, b) for a, b in ALL_PAIRS if b not in DOCUMENTED[a]]


def test_the_code_defines_exactly_the_documented_state_machine():
    assert {state: set(targets) for state, targets in lifecycle.TRANSITIONS.items()} == DOCUMENTED


def test_every_delivery_state_has_an_entry_in_the_state_machine():
    assert set(lifecycle.TRANSITIONS) == set(S.values)


@pytest.mark.parametrize(("from_state", "to_state"), LEGAL)
def test_a_legal_move_succeeds_and_is_logged_with_actor_and_reason(patient_a, from_state, to_state):
    delivery = make_delivery_row(patient_a[0], from_state)

    moved = delivery_move(
        delivery=delivery, to_state=to_state, actor="engine", reason="test_reason"
    )

    assert moved.state == to_state
    assert Delivery.objects.get(pk=delivery.pk).state == to_state
    [transition] = DeliveryTransition.objects.filter(delivery=delivery)
    assert (transition.from_state, transition.to_state) == (from_state, to_state)
    assert (transition.actor, transition.reason) == ("engine", "test_reason")


@pytest.mark.parametrize(("from_state", "to_state"), ILLEGAL)
def test_an_illegal_move_is_refused_with_409_and_changes_nothing(patient_a, from_state, to_state):
    delivery = make_delivery_row(patient_a[0], from_state)
    before = Delivery.objects.filter(pk=delivery.pk).values().get()

    with pytest.raises(ApplicationError) as refused:
        delivery_move(delivery=delivery, to_state=to_state, actor="engine", reason="nope")

    assert refused.value.status == 409
    assert refused.value.code == "illegal_transition"
    assert Delivery.objects.filter(pk=delivery.pk).values().get() == before
    assert delivery.state == from_state
    assert not DeliveryTransition.objects.filter(delivery=delivery).exists()


def test_the_illegal_moves_cover_every_pair_the_table_does_not_allow():
    assert len(LEGAL) == sum(len(targets) for targets in DOCUMENTED.values())
    assert len(LEGAL) + len(ILLEGAL) == len(S.values) ** 2


def test_terminal_states_are_exactly_the_documented_ones():
    assert set(lifecycle.TERMINAL) == DOCUMENTED_TERMINAL


@pytest.mark.parametrize("terminal", sorted(DOCUMENTED_TERMINAL))
def test_a_terminal_state_has_no_exit(terminal):
    assert not any(lifecycle.can_move(terminal, target) for target in S.values)


@pytest.mark.parametrize("terminal", sorted(DOCUMENTED_TERMINAL))
def test_a_nudge_in_a_terminal_state_cannot_be_moved_anywhere(patient_a, terminal):
    delivery = make_delivery_row(patient_a[0], terminal)

    for target in S.values:
        with pytest.raises(ApplicationError) as refused:
            delivery_move(delivery=delivery, to_state=target, actor="patient")
        assert refused.value.status == 409

    assert Delivery.objects.get(pk=delivery.pk).state == terminal
    assert not DeliveryTransition.objects.filter(delivery=delivery).exists()


def test_nothing_moves_back_to_proposed():
    assert lifecycle.sources_of(S.PROPOSED) == frozenset()


@pytest.mark.parametrize("target", S.values)
def test_sources_of_a_state_are_the_states_the_table_lets_reach_it(target):
    expected = {source for source, targets in DOCUMENTED.items() if target in targets}
    assert set(lifecycle.sources_of(target)) == expected


def test_an_unknown_state_cannot_move():
    assert not lifecycle.can_move("lost", S.READY)


def test_a_move_based_on_a_stale_state_is_refused_as_a_conflict(patient_a):
    # given two readers of the same ready nudge
    first = make_delivery_row(patient_a[0], S.READY)
    second = Delivery.objects.get(pk=first.pk)
    # when the first moves it and the second, unaware, tries another legal move from ready
    delivery_move(delivery=first, to_state=S.DELIVERED, actor="push", reason="provider_accepted")
    with pytest.raises(ApplicationError) as refused:
        delivery_move(delivery=second, to_state=S.DISMISSED, actor="patient", reason="dismissed")

    # then the second is refused with a 409 conflict and the first move stands alone
    assert refused.value.status == 409
    assert refused.value.code == "conflict"
    assert Delivery.objects.get(pk=first.pk).state == S.DELIVERED
    assert list(
        DeliveryTransition.objects.filter(delivery=first).values_list("from_state", "to_state")
    ) == [(S.READY, S.DELIVERED)]


def test_a_stale_move_to_the_state_the_row_is_already_in_is_still_a_conflict(patient_a):
    # given a held nudge read twice, and released through the first copy
    first = make_delivery_row(patient_a[0], S.HELD)
    stale = Delivery.objects.get(pk=first.pk)
    delivery_move(delivery=first, to_state=S.READY, actor="beat", reason="quiet_hours_over")

    # when a second sweeper releases its stale copy
    with pytest.raises(ApplicationError) as refused:
        delivery_move(delivery=stale, to_state=S.READY, actor="beat", reason="quiet_hours_over")

    # then it is refused and the release is logged once
    assert refused.value.code == "conflict"
    assert DeliveryTransition.objects.filter(delivery=first).count() == 1


def test_a_refused_stale_move_writes_none_of_its_fields(patient_a):
    first = make_delivery_row(patient_a[0], S.READY)
    stale = Delivery.objects.get(pk=first.pk)
    delivery_move(delivery=first, to_state=S.EXPIRED, actor="beat", reason="deadline")
    closed = timezone.now()

    with pytest.raises(ApplicationError):
        delivery_move(
            delivery=stale, to_state=S.DONE, actor="patient", reason="done", closed_at=closed
        )

    row = Delivery.objects.get(pk=first.pk)
    assert row.state == S.EXPIRED
    assert row.closed_at is None


def test_fields_given_with_a_move_are_written_with_it(patient_a):
    delivery = make_delivery_row(patient_a[0], S.DELIVERED)
    opened = timezone.now().replace(microsecond=0)

    delivery_move(
        delivery=delivery, to_state=S.OPENED, actor="patient", reason="opened", opened_at=opened
    )

    row = Delivery.objects.get(pk=delivery.pk)
    assert (row.state, row.opened_at) == (S.OPENED, opened)
    assert delivery.opened_at == opened


def test_successive_moves_are_logged_in_order(patient_a):
    delivery = make_delivery_row(patient_a[0], S.HELD)

    for target, actor in [(S.READY, "beat"), (S.DELIVERED, "inbox"), (S.OPENED, "patient")]:
        delivery = delivery_move(delivery=delivery, to_state=target, actor=actor)

    log = DeliveryTransition.objects.filter(delivery=delivery).order_by("created_at")
    assert [(t.from_state, t.to_state, t.actor) for t in log] == [
        (S.HELD, S.READY, "beat"),
        (S.READY, S.DELIVERED, "inbox"),
        (S.DELIVERED, S.OPENED, "patient"),
    ]
