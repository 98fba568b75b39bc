"""python manage.py verify_report PATH [--public-key HEX]

Checks a report export: the Ed25519 signature under our key (or the public key given) and the
results against the manifest's hash. Exits non-zero, saying why, for a tampered file."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from privacy.exports import ExportError, export_verify


class Command(BaseCommand):
    help = "Verify the signature and results hash of a report export (CSV, JSON or HTML)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--public-key", help="the Ed25519 public key (hex) to trust")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        try:
            content = path.read_bytes()
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        try:
            manifest = export_verify(content, public_hex=options["public_key"])
        except (ExportError, UnicodeDecodeError) as error:
            raise CommandError(f"REFUSED {path}: {error}") from None
        loss = manifest["privacy_loss"]
        self.stdout.write(
            f"OK {path}: {manifest['title']} for {manifest['period']} (release "
            f"{manifest['release_id']}), rho {loss['rho']:g}, signed by key "
            f"{manifest['signing_key']['key_id']}, results sha256 {manifest['results_sha256']}"
        )
