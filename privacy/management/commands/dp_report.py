"""python manage.py dp_report --report NAME --period YYYY-MM --budget RHO --out DIR [--dry-run]

The dry run prints what a release would spend and the half-width of every released number,
spending nothing. Without it the period's budget is debited, the report released and stored,
and its signed exports (CSV, JSON, HTML) written to DIR."""

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from privacy.dp.catalogue import REPORTS
from privacy.exports import FORMATS
from privacy.models import Channel
from privacy.reports import release_export, report_preview, report_release


class Command(BaseCommand):
    help = "Preview (--dry-run) or release a differentially private report and export it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--report", required=True, help=f"one of: {', '.join(REPORTS)}")
        parser.add_argument("--period", required=True, help="a calendar month, YYYY-MM")
        parser.add_argument("--budget", required=True, help="zCDP rho to spend, e.g. 0.1")
        parser.add_argument("--out", type=Path, help="directory for the exports")
        parser.add_argument("--dry-run", action="store_true", help="spend nothing; show")
        parser.add_argument("--user", help="the compliance officer releasing (username)")

    def handle(self, *args: Any, **options: Any) -> None:
        request = {k: options[k] for k in ("report", "period", "budget")}
        try:
            if options["dry_run"]:
                self._show(report_preview(**request))
                return
            if options["out"] is None:
                raise CommandError("--out DIR is required unless --dry-run.")
            by = self._user(options["user"])
            release = report_release(**request, by=by, channel=Channel.COMMAND)
        except ApplicationError as error:
            raise CommandError(f"{error.message} {json.dumps(error.fields)}") from None
        out: Path = options["out"]
        out.mkdir(parents=True, exist_ok=True)
        for fmt in FORMATS:
            export = release_export(release=release, fmt=fmt)
            (out / export.filename).write_bytes(export.content)
            self.stdout.write(f"wrote {out / export.filename}")
        loss = release.parameters["privacy_loss"]
        self.stdout.write(
            f"released {release.report} for {release.period}: rho {loss['rho']:g} "
            f"(epsilon {loss['epsilon']:.4g} at delta {loss['delta']:g}); period spent "
            f"{release.spent_after_nanorho / 1e9:g} of {release.cap_nanorho / 1e9:g}"
        )

    def _user(self, username: str | None) -> Any:
        if not username:
            return None
        from privacy.access import is_compliance_officer

        user = get_user_model().objects.filter(username=username).first()
        if user is None or not is_compliance_officer(user):
            raise CommandError("--user must name a compliance officer.")
        return user

    def _show(self, preview: dict[str, Any]) -> None:
        loss, ledger = preview["privacy_loss"], preview["ledger"]
        self.stdout.write(f"{preview['title']} — {preview['period']} (dry run, nothing spent)")
        self.stdout.write(
            f"would spend rho {loss['rho']:g} = epsilon {loss['epsilon']:.4g} at delta "
            f"{loss['delta']:g}; ledger: {ledger['spent_rho']:g} of {ledger['cap_rho']:g} spent"
            + ("" if preview["fits"] else " — MORE THAN REMAINS, a release would be refused")
        )
        for a in preview["aggregates"]:
            self.stdout.write(
                f"  {a['label']}: {a['distribution']}, L2 sensitivity {a['l2_sensitivity']:.4g}, "
                f"scale {a['scale']:.4g}, each of {preview['cells']} cells ± {a['half_width']} "
                f"(alpha {a['alpha']})"
            )
        if preview["mean"]:
            self.stdout.write(
                f"  {preview['mean']['label']}: interval derived from both once released"
            )
