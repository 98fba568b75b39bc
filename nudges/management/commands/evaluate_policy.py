"""python manage.py evaluate_policy --decisions PATH --policy NAME [--model PATH]
[--cross-fit K] [--bootstrap B] [--seed S] --json OUT"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from nudges import offline
from nudges.decision_log import LogError, iter_lines, read_lines
from nudges.recommender import ModelBundle, ModelError


class Command(BaseCommand):
    help = (
        "Off-policy evaluation of a policy on a decision log (docs/decision-log.md): IPS, "
        "SNIPS, DM and DR with 95% patient-bootstrap intervals, and the true value when the "
        "log is simulated. Policies: "
        + ", ".join(offline.LOG_POLICIES)
        + ". current (agenda) and engagement use the serving champion's model, or --model PATH, "
        "or train on K-1 folds of patients with --cross-fit K."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--decisions", type=Path, required=True)
        parser.add_argument("--policy", required=True)
        parser.add_argument("--model", type=Path, help="a model artefact (ModelBundle)")
        parser.add_argument(
            "--cross-fit",
            type=int,
            metavar="K",
            help="fit the reward model (and the policy model without --model) on K-1 folds "
            "of patients and evaluate the held-out fold",
        )
        parser.add_argument("--bootstrap", type=int, default=500, metavar="B")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--json", type=Path, required=True, metavar="OUT")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["cross_fit"] is not None and options["cross_fit"] < 2:
            raise CommandError("--cross-fit needs K >= 2.")
        if options["bootstrap"] < 1:
            raise CommandError("--bootstrap needs B >= 1.")
        try:
            offline.parse_policy(options["policy"], allowed=offline.LOG_POLICIES)
            log = read_lines(iter_lines(options["decisions"]))
        except (offline.PolicyError, LogError) as error:
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(f"cannot read {options['decisions']}: {error.strerror}") from None
        bundle = None
        if options["model"] is not None:
            try:
                bundle = ModelBundle.loads(Path(options["model"]).read_bytes())
            except (OSError, ModelError) as error:
                raise CommandError(f"cannot read the model: {error}") from None
        if (
            bundle is None
            and options["cross_fit"] is None
            and offline.needs_model(options["policy"])
        ):
            bundle = self._champion()
        schema = bundle.schema if bundle is not None else offline.schema_for_log(log)
        try:
            result = offline.evaluate_log(
                log,
                options["policy"],
                schema=schema,
                bundle=bundle,
                folds=options["cross_fit"],
                n_boot=options["bootstrap"],
                seed=options["seed"],
            )
        except (offline.PolicyError, ModelError) as error:
            raise CommandError(str(error)) from None
        text = json.dumps(result, indent=1)
        options["json"].write_text(text + "\n")
        self.stdout.write(text)

    @staticmethod
    def _champion() -> ModelBundle:
        from nudges.services.registry import champion

        current = champion()
        if current.bundle is None:
            raise CommandError(
                f"the champion ({current.version}) is not a usable model ({current.problem}); "
                "pass --model PATH or --cross-fit K."
            )
        return current.bundle
