"""A statistical audit of the built measurement (privacy.dp.audit): on neighbouring data sets
it finds no epsilon above the claim, and it catches a planted bug that skips contribution
bounding. OpenDP's noise cannot be seeded; alpha = 0.001 is the audit's false-alarm rate.
More runs: `python manage.py bench dp_reports` (docs/privacy.md)."""

import pytest
from django.conf import settings as django_settings

from privacy.dp.accounting import epsilon_at
from privacy.dp.audit import (
    AUDIT_PERIOD,
    AUDIT_PUBLIC,
    audit_run,
    audit_scenario,
    audit_threshold,
    clopper_pearson,
    epsilon_lower_bound,
)

ALPHA = 0.001
BUDGET = 50_000_000  # rho 0.05: epsilon about 1.47 at delta 1e-6


def _audit(*, bounded: bool, runs: int):
    scenario = audit_scenario(budget_nanorho=BUDGET)
    spec, salt = scenario.spec, 5
    if bounded:
        d = spec.microdata(scenario.with_patient, AUDIT_PERIOD, AUDIT_PUBLIC, salt=salt)
    else:  # the planted bug: the patient's rows go to OpenDP as they are
        rows = spec.rows(scenario.with_patient, AUDIT_PERIOD, AUDIT_PUBLIC, salt)
        d = spec.without_patient(rows)
    d_prime = spec.microdata(scenario.without_patient, AUDIT_PERIOD, AUDIT_PUBLIC, salt=salt)
    delta = django_settings.PRIVACY_DELTA
    return audit_run(
        scenario.statistic,
        d.collect().lazy(),
        d_prime.collect().lazy(),
        threshold=audit_threshold(scenario),
        runs=runs,
        epsilon_claimed=epsilon_at(scenario.plan.charged_nanorho / 1e9, delta),
        delta=delta,
        alpha=ALPHA,
    )


@pytest.mark.slow
def test_the_audit_finds_no_epsilon_above_the_claim():
    result = _audit(bounded=True, runs=2500)

    assert result.passed, result


def test_the_audit_catches_a_release_that_skips_contribution_bounding():
    result = _audit(bounded=False, runs=400)

    assert not result.passed, result


def test_the_heavy_patient_is_a_worst_case_within_the_bounds():
    scenario = audit_scenario(budget_nanorho=BUDGET)
    (aggregate,) = scenario.plan.aggregates

    # Once in every cell of every group: the whole sensitivity, squared, as the shift.
    assert scenario.shift == pytest.approx(aggregate.sensitivity**2)


def test_clopper_pearson_bounds_by_hand():
    # No hits in n runs: the upper bound solves (1 - p)^n = alpha.
    low, high = clopper_pearson(0, 1000, 0.0005)
    assert low == 0
    assert high == pytest.approx(1 - 0.0005 ** (1 / 1000), rel=1e-9)
    # Every run a hit: the lower bound solves p^n = alpha.
    low, high = clopper_pearson(1000, 1000, 0.0005)
    assert low == pytest.approx(0.0005 ** (1 / 1000), rel=1e-9)
    assert high == 1


def test_equal_hit_rates_give_no_evidence_of_privacy_loss():
    lower, _, _ = epsilon_lower_bound(100, 100, 1000, delta=1e-6, alpha=ALPHA)
    assert lower == 0
