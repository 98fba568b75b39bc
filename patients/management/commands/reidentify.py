"""python manage.py reidentify PSEUDONYM --user USERNAME --reason REASON: the identifiers
behind a pseudonym, for a user holding patients.reidentify_patient; audited."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApplicationError
from patients.rights import REIDENTIFICATION_REASONS, patient_reidentify


class Command(BaseCommand):
    help = "Re-identify a patient from the identity vault (authorised users only; audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pseudonym")
        parser.add_argument("--user", required=True, help="who asks (their username)")
        parser.add_argument("--reason", required=True, choices=REIDENTIFICATION_REASONS)

    def handle(self, *args, **options) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError("No such user.")
        try:
            identifiers = patient_reidentify(
                pseudonym=options["pseudonym"], actor=user, reason=options["reason"]
            )
        except ApplicationError as error:
            raise CommandError(error.message) from None
        self.stdout.write(json.dumps(identifiers.as_dict()))
