"""Live decisions decided together. Each request to POST /api/v1/decisions/ used to pay alone
for what a decision costs whatever the number of patients: a dozen database round trips, the
serving state, two LightGBM predictions and an explanation. Under load, requests arrive while
another's decision runs; here they queue, and the next decision round takes all that are
waiting (one per patient, up to LIMIT) into one call of decisions_make, in one transaction.
A request that arrives when nothing runs is decided at once, alone: no request waits for
company, and at low load nothing changes.

The thread whose request starts a round leads it, on its own database connection, and hands
the lead to the oldest waiting request when it is done. When a round of several fails, each
of its requests is decided again alone, by its own thread on its own database connection, so
an error reaches only the request that caused it (and a broken connection only its own
thread's)."""

import threading
from dataclasses import dataclass, field

from django.db import connection

from nudges.models import Decision
from nudges.services.decisions import DecisionAsk, decisions_make

LIMIT = 16  # requests per round at most


@dataclass
class _Waiting:
    ask: DecisionAsk
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # handed the lead: decide the next round
    alone: bool = False  # its round failed: decide it alone
    result: tuple[Decision, bool] | None = None
    error: BaseException | None = None


class DecisionRounds:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._mutex = threading.Lock()
        self._queue: list[_Waiting] = []
        self._running = False
        self.rounds = 0  # rounds decided so far, and the requests in them
        self.asks = 0

    def decide(self, ask: DecisionAsk) -> tuple[Decision, bool]:
        mine = _Waiting(ask)
        with self._mutex:
            self._queue.append(mine)
            leading = not self._running
            self._running = True
        if not leading:
            mine.done.wait()  # answered, or handed the lead
            leading = mine.lead
        if leading:
            self._lead()
        if mine.alone:
            [made] = decisions_make([ask])
            return made
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _lead(self) -> None:
        """Decide one round (the leader's own request is the oldest waiting, so it is in it),
        answer its requests, then hand the lead on or stop."""
        with self._mutex:
            round_: list[_Waiting] = []
            rest: list[_Waiting] = []
            patients = set()
            for waiting in self._queue:
                pk = waiting.ask.patient.pk
                if len(round_) < self.limit and pk not in patients:
                    round_.append(waiting)
                    patients.add(pk)
                else:
                    rest.append(waiting)
            self._queue = rest
        try:
            self._decide(round_)
        finally:
            with self._mutex:
                self.rounds += 1
                self.asks += len(round_)
                if self._queue:
                    following = self._queue[0]
                    following.lead = True
                    following.done.set()
                else:
                    self._running = False
            for waiting in round_:
                if waiting.result is None and waiting.error is None and not waiting.alone:
                    waiting.error = RuntimeError("the decision round did not finish")
                waiting.lead = False
                waiting.done.set()

    @staticmethod
    def _decide(round_: list[_Waiting]) -> None:
        try:
            made = decisions_make([w.ask for w in round_])
        except Exception as error:
            if len(round_) == 1:
                round_[0].error = error
            else:  # each again alone, by its own thread: an error reaches only its request
                for waiting in round_:
                    waiting.alone = True
            return
        for waiting, result in zip(round_, made, strict=True):
            waiting.result = result


ROUNDS = DecisionRounds()  # one per process


def decide_live(ask: DecisionAsk) -> tuple[Decision, bool]:
    """Decide a request's ask in the process's next round; inside a transaction (a write
    with an Idempotency-Key stores its response with it), alone in that transaction."""
    if connection.in_atomic_block:
        [made] = decisions_make([ask])
        return made
    return ROUNDS.decide(ask)
