"""Pure: the delivery state machine. Which moves are legal, and nothing else."""

from nudges.models import DeliveryState as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PROPOSED: frozenset({S.AWAITING_REVIEW, S.HELD, S.READY, S.BLOCKED, S.EXPIRED}),
    S.AWAITING_REVIEW: frozenset({S.HELD, S.READY, S.BLOCKED, S.EXPIRED}),
    S.HELD: frozenset({S.READY, S.BLOCKED, S.EXPIRED}),
    S.READY: frozenset(
        {S.DELIVERED, S.OPENED, S.DONE, S.DISMISSED, S.SNOOZED, S.BLOCKED, S.EXPIRED}
    ),
    S.DELIVERED: frozenset({S.OPENED, S.DONE, S.DISMISSED, S.SNOOZED, S.BLOCKED, S.EXPIRED}),
    S.OPENED: frozenset({S.DONE, S.DISMISSED, S.SNOOZED, S.EXPIRED}),
    S.SNOOZED: frozenset({S.OPENED, S.DONE, S.DISMISSED, S.SNOOZED, S.BLOCKED, S.EXPIRED}),
    S.DONE: frozenset(),
    S.DISMISSED: frozenset(),
    S.EXPIRED: frozenset(),
    S.BLOCKED: frozenset(),
}

TERMINAL = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
# States in which the patient can see the nudge (a snoozed one once its time has come).
VISIBLE = frozenset({S.READY, S.DELIVERED, S.OPENED, S.SNOOZED})
# States that count against the daily cap: the nudge was, or will be, put in front of them.
COUNTED = frozenset(set(S.values) - {S.BLOCKED, S.EXPIRED, S.PROPOSED})


def can_move(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


def sources_of(to_state: str) -> frozenset[str]:
    """Every state from which to_state may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if to_state in targets)
