"""python manage.py verify_audit_log [--head-file PATH]: recompute the audit chain."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import chain_verify


class Command(BaseCommand):
    help = "Verify the hash chain of the audit log; exits non-zero when it was tampered with."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--head-file",
            type=Path,
            default=None,
            help="the head kept outside the database (default: settings.AUDIT_HEAD_FILE)",
        )

    def handle(self, *args, **options) -> None:
        result = chain_verify(head_file=options["head_file"])
        if not result.ok:
            raise CommandError(
                f"The audit log does not verify ({result.entries} entries read): "
                + "; ".join(result.problems)
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"The audit log verifies: {result.entries} entries, head "
                f"{result.head['seq']} {result.head['hash']}."
            )
        )
