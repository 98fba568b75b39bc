"""Races on PostgreSQL: two clinicians of one group deciding the same review item at the same
moment. One decision wins; the other clinician is told (409) and nothing of theirs is kept."""

import threading

import pytest
from django.db import connection
from django.utils import timezone

from clinicians.models import ReviewDecision
from clinicians.services import review_decide
from core.errors import ApplicationError
from nudges.models import Delivery, DeliveryState, ReviewRequest, ReviewState, Template
from nudges.services.reviews import review_open
from safety.models import RuleSet, RuleSetStatus
from safety.rules import Action, Verdict
from tests.factories import make_clinician, make_delivery_row, make_patient

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 3  # separate items, so the race is run more than once


def open_heart_failure_review() -> ReviewRequest:
    patient, _ = make_patient(groups=("heart-failure",))
    delivery = make_delivery_row(
        patient,
        DeliveryState.AWAITING_REVIEW,
        template=Template.objects.filter(slug="breathing-478").order_by("-version").first(),
    )
    return review_open(
        delivery=delivery,
        verdict=Verdict(
            Action.REVIEW, rules=("HF-VIGOROUS-01",), groups=("heart-failure",), severity="high"
        ),
        ruleset_version=RuleSet.objects.get(status=RuleSetStatus.ACTIVE).version,
        now=timezone.now(),
    )


def decide_at_once(calls: list) -> list:
    """Run the calls in threads released together; each result is a DecisionResult or the
    ApplicationError it raised."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except ApplicationError as error:
            results[i] = error
        except Exception as error:  # anything else is a failure, reported below
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a decision never returned"
    return results


@pytest.fixture
def two_cardiologists(db):
    return (
        make_clinician("cardio-one", ("heart-failure",)),
        make_clinician("cardio-two", ("heart-failure",)),
    )


def test_an_approval_and_a_rejection_at_the_same_moment_record_exactly_one_decision(
    two_cardiologists,
):
    approver, rejecter = two_cardiologists
    for _ in range(ROUNDS):
        item = open_heart_failure_review()

        approved, rejected = decide_at_once(
            [
                lambda item=item: review_decide(
                    clinician=approver, request_id=item.pk, verdict="approve", reason="appropriate"
                ),
                lambda item=item: review_decide(
                    clinician=rejecter,
                    request_id=item.pk,
                    verdict="reject",
                    reason="contraindicated",
                ),
            ]
        )

        errors = [r for r in (approved, rejected) if isinstance(r, Exception)]
        assert len(errors) == 1, (approved, rejected)
        [error] = errors
        assert isinstance(error, ApplicationError) and error.status == 409, repr(error)
        [decision] = ReviewDecision.objects.filter(request=item)
        item.refresh_from_db()
        delivery = Delivery.objects.get(pk=item.delivery_id)
        if error is rejected:
            assert (decision.clinician, decision.verdict) == (approver, "approve")
            assert item.state == ReviewState.APPROVED
            assert delivery.state == DeliveryState.READY
        else:
            assert (decision.clinician, decision.verdict) == (rejecter, "reject")
            assert item.state == ReviewState.REJECTED
            assert delivery.state == DeliveryState.BLOCKED


def test_two_approvals_at_the_same_moment_approve_once(two_cardiologists):
    first, second = two_cardiologists
    item = open_heart_failure_review()

    results = decide_at_once(
        [
            lambda clinician=clinician: review_decide(
                clinician=clinician, request_id=item.pk, verdict="approve", reason="appropriate"
            )
            for clinician in (first, second)
        ]
    )

    errors = [r for r in results if isinstance(r, Exception)]
    assert [getattr(e, "status", repr(e)) for e in errors] == [409]
    assert ReviewDecision.objects.filter(request=item).count() == 1
    assert (
        Delivery.objects.get(pk=item.delivery_id).transitions.filter(to_state="ready").count() == 1
    )
