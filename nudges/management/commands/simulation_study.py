"""python manage.py simulation_study [--seeds S ...] [--patients N] [--days D] [--quick]
[--out docs/evaluation.md] [--json OUT]"""

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from nudges import offline


class Command(BaseCommand):
    help = (
        "Run the offline-evaluation study in the ground-truth simulator (nudges/offline.py: "
        "oracle, agenda, engagement, baseline and never online; SNIPS and DR against the truth) "
        "and write docs/evaluation.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        default = offline.StudyConfig()
        parser.add_argument("--seeds", type=int, nargs="+", default=list(default.seeds))
        parser.add_argument("--patients", type=int, default=default.patients)
        parser.add_argument("--days", type=int, default=default.days)
        parser.add_argument("--explore", type=float, default=default.explore)
        parser.add_argument("--cross-fit", type=int, default=default.folds, metavar="K")
        parser.add_argument("--bootstrap", type=int, default=default.bootstrap, metavar="B")
        parser.add_argument(
            "--quick",
            action="store_true",
            help=f"{offline.QUICK.patients} patients, {offline.QUICK.days} days, "
            f"{len(offline.QUICK.seeds)} seeds (for tests)",
        )
        parser.add_argument(
            "--out", type=Path, default=Path(settings.BASE_DIR) / "docs" / "evaluation.md"
        )
        parser.add_argument("--json", type=Path, help="also write the raw figures here")

    def handle(self, *args: Any, **options: Any) -> None:
        config = offline.QUICK if options["quick"] else self._config(options)
        started = time.perf_counter()
        result = offline.study(config, say=self.stdout.write)
        minutes = (time.perf_counter() - started) / 60
        command = "python manage.py simulation_study" + (
            " --quick" if options["quick"] else self._arguments(config)
        )
        options["out"].write_text(
            offline.study_markdown(result, command=command, elapsed_minutes=minutes)
        )
        if options["json"] is not None:
            options["json"].write_text(json.dumps(result, indent=1) + "\n")
        for name, held in result["summary"]["targets"].items():
            self.stdout.write(f"{'holds' if held else 'FAILS'}: {name}")
        self.stdout.write(f"written {options['out']}")

    def _config(self, options: dict[str, Any]) -> offline.StudyConfig:
        if options["patients"] < 10 or options["days"] < 10 or not options["seeds"]:
            raise CommandError("--patients and --days must be at least 10, with some --seeds.")
        if options["cross_fit"] < 2 or not 0 < options["explore"] <= 1:
            raise CommandError("--cross-fit needs K >= 2 and --explore a value in (0, 1].")
        return dataclasses.replace(
            offline.StudyConfig(),
            seeds=tuple(options["seeds"]),
            patients=options["patients"],
            days=options["days"],
            explore=options["explore"],
            folds=options["cross_fit"],
            bootstrap=options["bootstrap"],
        )

    @staticmethod
    def _arguments(config: offline.StudyConfig) -> str:
        default = offline.StudyConfig()
        changed: list[str] = []
        if config.seeds != default.seeds:
            changed.append("--seeds " + " ".join(map(str, config.seeds)))
        changed += [
            f"--{name.replace('folds', 'cross-fit')} {value}"
            for name, value in (
                ("patients", config.patients),
                ("days", config.days),
                ("explore", config.explore),
                ("folds", config.folds),
                ("bootstrap", config.bootstrap),
            )
            if value != getattr(default, name)
        ]
        return "".join(f" {c}" for c in changed)
