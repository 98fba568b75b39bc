"""python manage.py bench NAME [--quick] [--json OUT]   (NAME: one of REGISTRY, or all)

Each benchmark runs in a throwaway database created for it (test_<name> on PostgreSQL,
in memory on SQLite), so it never touches the data of the configured database."""

import json
import platform
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.test.utils import setup_databases, teardown_databases
from django.utils.module_loading import import_string

from demo.benchmarks import REGISTRY


class Command(BaseCommand):
    help = "Run a benchmark (or all) and print and record its figures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", choices=[*REGISTRY, "all"])
        parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
        parser.add_argument("--json", type=Path, help="write the figures to this file")

    def handle(self, *args: Any, **options: Any) -> None:
        names = list(REGISTRY) if options["name"] == "all" else [options["name"]]
        results: dict[str, Any] = {"machine": _machine(), "database": connection.vendor}
        for name in names:
            self.stdout.write(f"== {name}{' (quick)' if options['quick'] else ''}")
            results[name] = self._run(name, quick=options["quick"])
            for key, value in results[name].items():
                self.stdout.write(f"   {key}: {value}")
        if options["json"]:
            path: Path = options["json"]
            existing = json.loads(path.read_text()) if path.exists() else {}
            existing.update(results)
            path.write_text(json.dumps(existing, indent=1, default=str) + "\n")
            self.stdout.write(f"figures written to {path}")

    def _run(self, name: str, *, quick: bool) -> dict[str, Any]:
        benchmark = import_string(REGISTRY[name].replace(":", "."))
        old = setup_databases(verbosity=0, interactive=False)
        started = time.perf_counter()
        try:
            figures = benchmark(quick=quick)
        except AssertionError as error:
            raise CommandError(f"benchmark {name} failed a check: {error}") from None
        finally:
            teardown_databases(old, verbosity=0)
        figures["wall_seconds"] = round(time.perf_counter() - started, 1)
        return figures


def _machine() -> dict[str, Any]:
    import os

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
