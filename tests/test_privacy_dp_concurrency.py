"""Races on PostgreSQL: twenty releases started at once, each in its own thread and database
connection, never spend more than the period's cap."""

import threading

import pytest
from django.db import connection

from core.errors import ApplicationError
from privacy.models import PrivacyBudget, Release
from privacy.reports import report_release
from tests.test_privacy_dp_release import PERIOD, deliver, make_officer

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_twenty_releases_at_once_never_spend_more_than_the_cap(settings, patient_a):
    settings.PRIVACY_PERIOD_CAP_RHO = "1.0"
    deliver(patient_a[0], day=4, state="done")
    officer = make_officer()
    outcomes: list = [None] * 20
    barrier = threading.Barrier(20)

    def release(i: int) -> None:
        try:
            barrier.wait()
            outcomes[i] = report_release(
                report=("engagement", "acceptance")[i % 2],
                period=PERIOD,
                budget="0.15",
                by=officer,
                channel="api",
            )
        except ApplicationError as error:
            outcomes[i] = error
        except Exception as error:  # collected and checked below
            outcomes[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=release, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    released = [o for o in outcomes if isinstance(o, Release)]
    refused = [o for o in outcomes if isinstance(o, ApplicationError)]
    assert len(released) + len(refused) == 20, outcomes
    assert len(released) == 6  # 6 x 0.15 = 0.9; a seventh would pass 1.0
    assert {e.code for e in refused} == {"budget_exceeded"}
    budget = PrivacyBudget.objects.get(period=PERIOD)
    assert budget.spent_nanorho == 6 * 150_000_000 <= budget.cap_nanorho
    assert Release.objects.count() == 6
    assert sorted(r.spent_after_nanorho for r in Release.objects.all()) == [
        k * 150_000_000 for k in range(1, 7)
    ]
