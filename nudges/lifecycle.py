"""Pure: the delivery state machine. Which moves are legal, and nothing else."""

from nudges.models import DeliveryState as S

TRANSITIONS: dict[str, frozenset[str]] = {
    S.PROPOSED: frozenset({S.AWAITING_REVIEW, S.HELD, S.READY, S.BLOCKED, S.EXPIRED}),
    S.AWAITING_REVIEW: frozenset({S.HELD, S.READY, S.BLOCKED, S.EXPIRED}),
    # held and ready go (back) to review when a rule change asks for it at the safety gate.
    S.HELD: frozenset({S.READY, S.AWAITING_REVIEW, S.BLOCKED, S.EXPIRED}),
    S.READY: frozenset(
        {
            S.DELIVERED,
            S.OPENED,
            S.DONE,
            S.DISMISSED,
            S.SNOOZED,
            S.AWAITING_REVIEW,
            S.BLOCKED,
            S.EXPIRED,
        }
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
# Not yet in front of the patient: an emergency stop or a new block rule blocks these.
PENDING = frozenset({S.PROPOSED, S.AWAITING_REVIEW, S.HELD, S.READY})
# In the patient's app but not acted on: a stop or a new block rule recalls these too.
RECALLABLE = frozenset({S.DELIVERED, S.SNOOZED})
# States in which the patient can see the nudge (a snoozed one once its time has come).
VISIBLE = frozenset({S.READY, S.DELIVERED, S.OPENED, S.SNOOZED})
# States that count against the daily cap: the nudge was, or will be, put in front of them.
COUNTED = frozenset(set(S.values) - {S.BLOCKED, S.EXPIRED, S.PROPOSED})


def can_move(from_state: str, to_state: str) -> bool:
    return to_state in TRANSITIONS.get(from_state, frozenset())


def sources_of(to_state: str) -> frozenset[str]:
    """Every state from which to_state may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if to_state in targets)
