"""python manage.py train_model [--days N] [--no-promote] [--if-none]
python manage.py train_model (--decisions PATH | --dataset NAME) --out MODEL"""

import json
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from nudges.models import ModelVersion
from nudges.recommender import ModelError
from nudges.services.training import model_train


class Command(BaseCommand):
    help = (
        "Train a challenger recommender on the engine's recent decisions and promote it if it "
        "beats the champion offline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, help="training window (default NUDGE_TRAINING_DAYS)"
        )
        parser.add_argument("--no-promote", action="store_true", help="register only")
        parser.add_argument(
            "--if-none", action="store_true", help="only when no model has been trained yet"
        )
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--decisions",
            type=Path,
            help="train on this decision-log file instead (docs/decision-log.md); needs --out",
        )
        source.add_argument(
            "--dataset", help="train on this imported data set (import_decisions); needs --out"
        )
        parser.add_argument(
            "--out",
            type=Path,
            help="where to write the model artefact of a log's training (for evaluate_policy "
            "--model); such a model is not registered: its actions are the log's own ids",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["decisions"] is not None or options["dataset"] is not None:
            self._train_on_log(options)
            return
        if options["out"] is not None:
            raise CommandError("--out goes with --decisions or --dataset.")
        if options["if_none"] and ModelVersion.objects.filter(kind="agenda").exists():
            self.stdout.write("A model exists already; nothing to do.")
            return
        if options["days"] is not None and not 7 <= options["days"] <= 366:
            raise CommandError("--days must be between 7 and 366.")
        try:
            result = model_train(
                days=options["days"], promote=not options["no_promote"], progress=self.stdout.write
            )
        except (ApplicationError, ModelError) as error:
            raise CommandError(str(error)) from None
        for line in result.report_lines():
            self.stdout.write(line)

    def _train_on_log(self, options: dict[str, Any]) -> None:
        from nudges import offline
        from nudges.decision_log import LogError, iter_lines, read_lines
        from nudges.recommender import train
        from nudges.services.decision_logs import imported_log

        if options["out"] is None:
            raise CommandError("--out is required with --decisions or --dataset.")
        try:
            if options["decisions"] is not None:
                log = read_lines(iter_lines(options["decisions"]))
            else:
                log = imported_log(dataset=options["dataset"])
        except LogError as error:
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(f"cannot read {options['decisions']}: {error.strerror}") from None
        if len(log) == 0:
            raise CommandError("the log has no decisions.")
        self.stdout.write(f"Training on {len(log)} logged decisions...")
        started = time.perf_counter()
        try:
            result = train(
                log, offline.schema_for_log(log), version=f"log-{time.strftime('%Y%m%d-%H%M%S')}"
            )
        except ModelError as error:
            raise CommandError(str(error)) from None
        options["out"].write_bytes(result.bundle.dumps())
        self.stdout.write(json.dumps(result.metrics, indent=1))
        self.stdout.write(
            f"Model {result.bundle.version} written to {options['out']} "
            f"in {time.perf_counter() - started:.1f} s."
        )
