"""python manage.py rollback_model: the previous champion serves again."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.errors import ApplicationError
from nudges.services.registry import model_rollback


class Command(BaseCommand):
    help = "Roll back to the champion before the current one."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            row = model_rollback()
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(self.style.SUCCESS(f"{row.version} is the champion again."))
