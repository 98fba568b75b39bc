"""python manage.py train_model [--days N] [--no-promote] [--if-none]"""

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

    def handle(self, *args: Any, **options: Any) -> None:
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
