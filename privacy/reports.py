"""Services for the differentially private reports: the dry run, the release and the export.

The invariant of a release: the period's ledger is debited (privacy.ledger) before OpenDP
touches any data, in the same transaction that stores the result; a release that would pass
the period's cap is refused and changes nothing; what is stored is all that was released, so
exporting it again is free. A dry run reads no patient data and spends nothing."""

import datetime as dt
import logging
import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import ApplicationError
from privacy.dp.accounting import BudgetError, epsilon_at, nanorho_parse, rho_of
from privacy.dp.catalogue import REPORTS, ReportSpec
from privacy.dp.mechanism import MECHANISM, OPENDP_VERSION, Plan, plan_build
from privacy.dp.periods import Period, PeriodError, period_parse
from privacy.dp.results import result_columns, results_rows
from privacy.exports import Export, code_version, export_render, results_sha256
from privacy.ledger import budget_balance, budget_debit, budget_open
from privacy.models import Release
from privacy.selectors import public_sets, report_sources

logger = logging.getLogger(__name__)

INTERVALS = (
    "95% intervals. A count or sum: OpenDP's accuracy of its noise at alpha 0.05, floored "
    "(the true value is a whole number). A mean: numerator and denominator each at alpha "
    "0.025, combined by interval arithmetic, so both hold together with at least 95% "
    "(Bonferroni); cut to the range of the per-patient values. Intervals cover the statistic of "
    "the bounded (clipped, truncated) data, not the effect of bounding itself."
)
CONSENT = "Only patients whose consent to research reporting is in force are included."


def catalogue() -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "title": spec.title,
            "description": spec.description,
            "keys": list(spec.keys),
            "aggregates": [a.column for a in spec.aggregates],
            "mean": spec.ratio.column if spec.ratio else None,
            "contribution_bounds": spec.bounds_text,
        }
        for spec in REPORTS.values()
    ]


def _validated(
    *, report: Any, period: Any, budget: Any, today: dt.date
) -> tuple[ReportSpec, Period, int]:
    """Every input problem at once, each under its field's name (400)."""
    problems: dict[str, str] = {}
    spec = REPORTS.get(report) if isinstance(report, str) else None
    if spec is None:
        problems["report"] = f"No such report; the catalogue has: {', '.join(REPORTS)}."
    parsed: Period | None = None
    try:
        parsed = period_parse(
            period if isinstance(period, str) else "",
            today=today,
            first=settings.PRIVACY_FIRST_PERIOD,
        )
    except PeriodError as error:
        problems["period"] = str(error)
    nanorho = 0
    try:
        nanorho = nanorho_parse(budget)
    except BudgetError as error:
        problems["budget"] = str(error)
    if problems:
        raise ApplicationError(
            "The report request is invalid: " + " ".join(problems.values()),
            code="invalid",
            fields=problems,
        )
    assert spec is not None and parsed is not None
    return spec, parsed, nanorho


def report_preview(
    *, report: Any, period: Any, budget: Any, now: dt.datetime | None = None
) -> dict[str, Any]:
    """The dry run: what a release would spend and how precise each number would be, from
    public facts only. Spends nothing and reads no patient data."""
    now = now or timezone.now()
    spec, parsed, nanorho = _validated(
        report=report, period=period, budget=budget, today=now.date()
    )
    plan = plan_build(spec, parsed, public_sets(), budget_nanorho=nanorho)
    balance = budget_balance(period=parsed)
    return {
        **_described(plan),
        "requested_rho": rho_of(nanorho),
        "ledger": balance.as_dict(),
        "fits": plan.charged_nanorho <= balance.remaining_nanorho,
    }


def _described(plan: Plan) -> dict[str, Any]:
    spec, delta = plan.spec, settings.PRIVACY_DELTA
    charged = rho_of(plan.charged_nanorho)
    return {
        "report": spec.name,
        "title": spec.title,
        "description": spec.description,
        "period": plan.period.label,
        "cells": plan.keys.height,
        "privacy_unit": "one patient, with bounded contributions",
        "consent": CONSENT,
        "mechanism": MECHANISM,
        "privacy_loss": {
            "unit": "zCDP rho per patient",
            "rho": charged,
            "rho_exact": plan.rho,
            "epsilon": round(epsilon_at(charged, delta), 6),
            "delta": delta,
        },
        "contribution_bounds": {
            "per_group": spec.per_group,
            "num_groups": plan.num_groups,
            "clipping": {a.column: list(a.bounds) for a in spec.aggregates if a.bounds is not None},
            "fixed_point_divisor": {a.column: a.divisor for a in spec.aggregates},
            "description": spec.bounds_text,
        },
        "aggregates": [
            {
                "column": a.column,
                "label": a.label,
                "distribution": "discrete Gaussian",
                "l2_sensitivity": a.sensitivity,
                "scale": a.scale,
                "alpha": spec.alpha,
                "half_width": int(a.accuracy) / a.divisor if a.divisor > 1 else int(a.accuracy),
            }
            for a in plan.aggregates
        ],
        "mean": ({"column": spec.ratio.column, "label": spec.ratio.label} if spec.ratio else None),
        "intervals": INTERVALS,
    }


def report_release(
    *,
    report: Any,
    period: Any,
    budget: Any,
    by: Any | None,
    channel: str,
    request_id: uuid.UUID | None = None,
    now: dt.datetime | None = None,
    salt: int | None = None,
) -> Release:
    """Debit the period's budget, then compute and store the report (one transaction). A
    repeated request_id returns the first release and spends nothing more."""
    now = now or timezone.now()
    spec, parsed, nanorho = _validated(
        report=report, period=period, budget=budget, today=now.date()
    )
    if request_id is not None:
        earlier = Release.objects.filter(request_id=request_id).first()
        if earlier is not None:
            return _repeat(earlier, spec, parsed)
    public = public_sets()
    plan = plan_build(spec, parsed, public, budget_nanorho=nanorho)
    ledger = budget_open(period=parsed)
    try:
        with transaction.atomic():
            spent_after = budget_debit(budget=ledger, nanorho=plan.charged_nanorho)
            sources = report_sources(period=parsed, needs=spec.sources)
            microdata = spec.microdata(
                sources, parsed, public, salt=secrets.randbits(63) if salt is None else salt
            )
            rows = results_rows(plan, plan.release(microdata))
            release = Release.objects.create(
                report=spec.name,
                period=parsed.label,
                budget=ledger,
                requested_nanorho=nanorho,
                charged_nanorho=plan.charged_nanorho,
                spent_after_nanorho=spent_after,
                cap_nanorho=ledger.cap_nanorho,
                released_by=by,
                channel=channel,
                request_id=request_id,
                parameters=_parameters(plan),
                results=rows,
                results_sha256=results_sha256(rows),
                code_version=code_version(),
                created_at=now,
            )
    except IntegrityError:
        earlier = Release.objects.filter(request_id=request_id).first() if request_id else None
        if earlier is None:
            raise
        return _repeat(earlier, spec, parsed)
    logger.info(
        "report released: %s for %s, rho %s (period spent %s)",
        spec.name,
        parsed.label,
        rho_of(plan.charged_nanorho),
        rho_of(spent_after),
    )
    return release


def _repeat(earlier: Release, spec: ReportSpec, period: Period) -> Release:
    if earlier.report != spec.name or earlier.period != period.label:
        raise ApplicationError(
            "This request id was already used for another report.", code="conflict", status=409
        )
    return earlier


def _parameters(plan: Plan) -> dict[str, Any]:
    spec = plan.spec
    described = _described(plan)
    return {
        **{k: described[k] for k in ("title", "description", "privacy_unit", "consent")},
        **{k: described[k] for k in ("mechanism", "privacy_loss", "contribution_bounds")},
        "aggregates": described["aggregates"],
        "mean": described["mean"],
        "intervals": INTERVALS,
        "keys": list(spec.keys),
        "columns": result_columns(plan),
        "headline": spec.headline,
        "opendp_version": OPENDP_VERSION,
    }


def release_export(*, release: Release, fmt: str, now: dt.datetime | None = None) -> Export:
    """A signed export of a stored release. Costs no budget."""
    if fmt not in ("csv", "json", "html"):
        raise ApplicationError(
            "The export format must be csv, json or html.", fields={"format": "unknown"}
        )
    now = now or timezone.now()
    year, month = map(int, release.period.split("-"))
    ledger = budget_balance(period=Period(year, month)).as_dict()
    return export_render(release, fmt=fmt, ledger=ledger, exported_at=now.isoformat())
