"""python manage.py simulate --patients N --days D --seed S --policy NAME --out PATH
[--model PATH] [--world-seed W]"""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from nudges import offline
from nudges.decision_log import dumps
from nudges.recommender import ModelBundle, ModelError


class Command(BaseCommand):
    help = (
        "Run a policy in the ground-truth simulator (docs/simulator.md) on the synthetic demo "
        "cohort and write its decision log, with true values, as JSON Lines. Policies: "
        + ", ".join(offline.SIM_POLICIES)
        + ". agenda and engagement without --model train first on a baseline run of the same "
        "world (run seed S + 1000)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", type=int, default=2000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=2, help="the run's seed")
        parser.add_argument("--world-seed", type=int, default=1, help="the cohort's and world's")
        parser.add_argument("--policy", required=True)
        parser.add_argument("--out", type=Path, required=True, help="the decision log to write")
        parser.add_argument("--model", type=Path, help="a model artefact for agenda/engagement")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["patients"] < 1 or options["days"] < 1:
            raise CommandError("--patients and --days must be positive.")
        setup = offline.world_from_cohort(options["patients"], options["world_seed"])
        name, days, seed = options["policy"], options["days"], options["seed"]
        try:
            offline.parse_policy(name, allowed=offline.SIM_POLICIES)
            if not offline.needs_model(name):
                offline.sim_policy(name, *setup[:3])  # refuses an unknown key or epsilon
        except offline.PolicyError as error:
            raise CommandError(str(error)) from None
        bundle, model = None, None
        if offline.needs_model(name):
            bundle, model = self._model(options, setup, days=days, seed=seed)
        run = offline.run_policy(setup, name, days=days, seed=seed, bundle=bundle, record=True)
        assert run.records is not None
        with open(options["out"], "wb") as handle:
            for record in run.records:
                handle.write(dumps(record))
        summary = {
            "policy": name,
            "patients": options["patients"],
            "days": days,
            "seed": seed,
            "world_seed": options["world_seed"],
            **offline.run_summary(run.log, days=days, actions=len(setup.keys)),
            "model": model,
            "out": str(options["out"]),
        }
        self.stdout.write(json.dumps(summary, indent=1))

    def _model(
        self, options: dict[str, Any], setup: offline.SimSetup, *, days: int, seed: int
    ) -> tuple[ModelBundle, str]:
        if options["model"] is not None:
            try:
                bundle = ModelBundle.loads(Path(options["model"]).read_bytes())
            except (OSError, ModelError) as error:
                raise CommandError(f"cannot read the model: {error}") from None
            return bundle, f"{bundle.version} (from {options['model']})"
        trained = offline.train_on_baseline(setup, days=days, seed=seed + offline.TRAIN_OFFSET)
        return trained.bundle, (
            f"trained first on a baseline run of the same world "
            f"(run seed {seed + offline.TRAIN_OFFSET}, {days} days)"
        )
