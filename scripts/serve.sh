#!/usr/bin/env bash
# Serve the app as `make run` does: gunicorn in the foreground, a Celery worker and beat beside
# it. Ctrl-C stops all three. With no CELERY_BROKER_URL the broker is kombu's filesystem
# transport under .demo/broker, so scheduled work really runs with no service installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PORT="${PORT:-8000}"
DATA_DIR="${NUDGE_DATA_DIR:-.demo}"
mkdir -p "$DATA_DIR/logs"

# Refuse to start on a wrong encryption key (or any other failed check, the database's
# included) rather than serve and fail on the first read.
"$VENV/bin/python" manage.py check --database default --fail-level ERROR >/dev/null

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$VENV/bin/celery" -A config worker --loglevel=INFO --concurrency=2 --without-gossip \
  >>"$DATA_DIR/logs/worker.log" 2>&1 &
pids+=($!)
"$VENV/bin/celery" -A config beat --loglevel=INFO \
  --schedule "$DATA_DIR/celerybeat-schedule" >>"$DATA_DIR/logs/beat.log" 2>&1 &
pids+=($!)

cat <<MSG

  Nudge engine on http://127.0.0.1:$PORT
  API docs (Swagger UI):  http://127.0.0.1:$PORT/api/docs/
  Admin:                  http://127.0.0.1:$PORT/admin/
  Demo logins:            $DATA_DIR/credentials.json
  Worker and beat logs:   $DATA_DIR/logs/

MSG
"$VENV/bin/gunicorn" --config config/gunicorn.py --bind "127.0.0.1:$PORT" \
  --access-logfile - &
pids+=($!)
wait -n "${pids[@]}"
