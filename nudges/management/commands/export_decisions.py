"""python manage.py export_decisions --out PATH [--days 90]"""

import datetime as dt
import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from nudges.decision_log import dumps
from nudges.services.decision_logs import engine_decisions


class Command(BaseCommand):
    help = (
        "Export the engine's own decisions of the last DAYS days as a decision log "
        "(JSON Lines, docs/decision-log.md). The file holds pseudonymised health data: it is "
        "created readable by its owner only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--days", type=int, default=90)

    def handle(self, *args, **options) -> None:
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        now = timezone.now()
        decisions = engine_decisions(
            since=now - dt.timedelta(days=options["days"]), until=now, now=now
        )
        out: Path = options["out"]
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            for record in tqdm(
                decisions.records(),
                total=len(decisions),
                desc="Writing",
                unit=" decisions",
                disable=options["verbosity"] == 0,
            ):
                handle.write(dumps(record))
        self.stdout.write(self.style.SUCCESS(f"Exported {len(decisions)} decisions to {out}."))
