#!/usr/bin/env bash
# make bench: every benchmark on a local PostgreSQL and Redis (started here), figures printed
# and written to docs/benchmarks.json. BENCH_ARGS passes options, e.g. BENCH_ARGS=--quick.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh start >/dev/null
eval "$(bash scripts/services.sh env)"
export TEST_DATABASE_NAME=nudges_bench
.venv/bin/python manage.py bench all --json docs/benchmarks.json ${BENCH_ARGS:-}
