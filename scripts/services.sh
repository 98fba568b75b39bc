#!/usr/bin/env bash
# Local PostgreSQL 15 and Redis for development and CI, kept under .services/ and bound to
# loopback. The same services docker-compose.yml describes for a deployment.
#   scripts/services.sh start | stop | env
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD/.services"
PG_PORT="${NUDGE_PG_PORT:-55432}"
REDIS_PORT="${NUDGE_REDIS_PORT:-56379}"
PG_DIR="$ROOT/pg"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

as_pg() {
  # PostgreSQL refuses to run as root: run its tools as the postgres user when we are root.
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

install_missing() {
  local missing=()
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "Missing: ${missing[*]}. Install them (e.g. sudo apt-get install ${missing[*]})." >&2
    exit 1
  fi
  echo "Installing ${missing[*]} with apt-get..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
}

start_postgres() {
  mkdir -p "$ROOT"
  if [ ! -f "$PG_DIR/PG_VERSION" ]; then
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
    chmod 700 "$PG_DIR"
    as_pg "'$PG_BIN/initdb' -D '$PG_DIR' -A trust -U postgres --encoding=UTF8 >/dev/null"
  fi
  if as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR' status" >/dev/null 2>&1; then
    echo "PostgreSQL already running on port $PG_PORT"
  else
    as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR' -w -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" -l '$PG_DIR/log' start" >/dev/null
    echo "PostgreSQL started on 127.0.0.1:$PG_PORT"
  fi
  as_pg "'$PG_BIN/psql' -h 127.0.0.1 -p $PG_PORT -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='nudges'\"" | grep -q 1 \
    || as_pg "'$PG_BIN/createdb' -h 127.0.0.1 -p $PG_PORT -U postgres nudges"
}

start_redis() {
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    echo "Redis already running on port $REDIS_PORT"
    return
  fi
  mkdir -p "$ROOT/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$ROOT/redis" --save '' \
    --appendonly no --daemonize yes --logfile "$ROOT/redis/log" --pidfile "$ROOT/redis/pid"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "Redis started on 127.0.0.1:$REDIS_PORT"
}

print_env() {
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/nudges"
  echo "export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

case "${1:-start}" in
  start)
    install_missing
    start_postgres
    start_redis
    echo "Use them with:"
    print_env
    ;;
  stop)
    [ -f "$PG_DIR/PG_VERSION" ] && as_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR' -m fast stop" >/dev/null 2>&1 || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    echo "Stopped."
    ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
