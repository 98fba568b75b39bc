"""python manage.py import_decisions PATH --dataset NAME [--replace]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from core.errors import ApplicationError
from nudges.services.decision_logs import decisions_import


class Command(BaseCommand):
    help = (
        "Import a decision log (JSON Lines, docs/decision-log.md) as a named data set; "
        "patient ids are pseudonymised. Any invalid line and nothing is imported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--dataset", required=True, help="the data set's name (a slug)")
        parser.add_argument(
            "--replace", action="store_true", help="replace a data set imported before"
        )

    def handle(self, *args, **options) -> None:
        path: Path = options["path"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        bar = tqdm(desc="Importing", unit=" lines", disable=options["verbosity"] == 0)
        try:
            count = decisions_import(
                path=path,
                dataset=options["dataset"],
                replace=options["replace"],
                progress=bar.update,
            )
        except ApplicationError as error:
            lines = error.fields.get("lines")
            if not lines:
                raise CommandError(error.message) from None
            listed = "\n".join(f"  line {e['line']}: {e['reason']}" for e in lines)
            raise CommandError(f"{error.message}\n{listed}") from None
        finally:
            bar.close()
        self.stdout.write(
            self.style.SUCCESS(f"Imported {count} decisions as data set {options['dataset']}.")
        )
