"""How config/settings.py sets up a PostgreSQL database from the environment (read in a fresh
interpreter, as a server starting reads it; no database is contacted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    "d = settings.DATABASES['default']; print(json.dumps([d['ENGINE'], d.get('OPTIONS', {})]))"
)


def _settings(**env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    environment["DATABASE_URL"] = "postgres://nobody@127.0.0.1:1/nowhere"
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True
    )


def test_postgresql_binds_on_the_server_and_prepares_after_five_runs_by_default():
    done = _settings()
    assert done.returncode == 0, done.stderr
    engine, options = json.loads(done.stdout)
    assert engine == "core.postgresql"
    assert options["server_side_binding"] is True
    assert options["prepare_threshold"] == 5


def test_prepared_statements_can_be_turned_off_for_a_transaction_pooler():
    done = _settings(DATABASE_PREPARE_THRESHOLD="off")
    assert done.returncode == 0, done.stderr
    engine, options = json.loads(done.stdout)
    assert engine == "core.postgresql"
    assert "server_side_binding" not in options and "prepare_threshold" not in options


def test_a_bad_threshold_stops_the_start_naming_the_variable():
    done = _settings(DATABASE_PREPARE_THRESHOLD="sometimes")
    assert done.returncode != 0
    assert "DATABASE_PREPARE_THRESHOLD" in done.stderr and "'sometimes'" in done.stderr
