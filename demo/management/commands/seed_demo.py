"""python manage.py seed_demo --patients N --seed S --days D --credentials PATH [--if-empty]"""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from demo.progress import Bar
from demo.seeding import demo_seed
from patients.models import Patient


class Command(BaseCommand):
    help = "Seed a synthetic demo cohort with simulated history and write the demo logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--days", type=int, default=90, help="days of history (0 for none)")
        parser.add_argument("--credentials", type=Path, default=Path(".demo/credentials.json"))
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing when the database already has patients",
        )

    def handle(self, *args, **options) -> None:
        if options["patients"] < 1 or options["patients"] > 1_000_000:
            raise CommandError("--patients must be between 1 and 1,000,000.")
        if options["days"] < 0 or options["days"] > 365:
            raise CommandError("--days must be between 0 and 365.")
        if Patient.objects.exists():
            if options["if_empty"]:
                self.stdout.write(
                    f"Demo data already present; logins are in {options['credentials']}."
                )
                return
            raise CommandError(
                "The database already has patients; seed_demo fills an empty database only."
            )
        bar = Bar()
        try:
            result = demo_seed(
                patients=options["patients"],
                seed=options["seed"],
                days=options["days"],
                credentials_path=options["credentials"],
                progress=bar,
            )
        finally:
            bar.close()
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {result.patients} patients, {result.decision_points} decision points, "
                f"{result.deliveries} deliveries and {result.events} events "
                f"in {result.seconds:.1f} s. Logins: {options['credentials']}"
            )
        )
