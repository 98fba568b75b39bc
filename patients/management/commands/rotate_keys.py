"""python manage.py rotate_keys [--status]: re-wrap every patient's data key under the
master key in use (ENCRYPTION_KEY_VERSION); see patients/keys.py and docs/privacy.md."""

from django.core.management.base import BaseCommand, CommandParser

from patients.keys import data_keys_by_version, data_keys_rewrap


class Command(BaseCommand):
    help = "Re-wrap all patient data keys under the current master key version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--status", action="store_true", help="only count data keys per master key version"
        )

    def handle(self, *args, **options) -> None:
        if not options["status"]:
            summary = data_keys_rewrap()
            self.stdout.write(
                self.style.SUCCESS(
                    f"Re-wrapped {summary['rewrapped']} data keys under master key version "
                    f"{summary['to']}."
                )
            )
        counts = data_keys_by_version()
        listed = ", ".join(f"version {v}: {n}" for v, n in sorted(counts.items())) or "none"
        self.stdout.write(f"Data keys per master key version: {listed}.")
