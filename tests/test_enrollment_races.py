"""On PostgreSQL, the same person enrolled by concurrent requests becomes one patient: the
unique pseudonym decides, and the requests that lose find the winner's patient."""

import threading

import pytest
from django.db import connection

from patients.enrolment import Enrolment
from patients.models import IdentityVault, Patient
from privacy.enrolment import enrolments_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_enrolments_of_one_person_create_one_patient():
    n = 6
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[Exception] = []
    record = Enrolment(
        identifiers={"record_number": "RACE-1", "email": "race@example.org"},
        age_band="30-44",
        goals={"activity": 0.7},
        conditions=["I10"],
    )

    def enrol(i: int) -> None:
        try:
            barrier.wait()
            [results[i]] = enrolments_create(records=[record])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=enrol, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert Patient.objects.count() == 1
    assert IdentityVault.objects.count() == 1
    assert len({r.patient.pk for r in results}) == 1
    assert len({r.token for r in results}) == 1
    assert sum(r.created for r in results) == 1
