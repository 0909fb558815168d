#!/usr/bin/env bash
# The web app's tests against a throwaway PostgreSQL cluster from Debian's packages (`make test-postgres`).
# Starts the server as the postgres user in a temporary directory (unix socket there, no TCP, no
# system service), runs pytest with AMBIENT_TEST_DATABASE_URL pointing at it (each test then gets its
# own database), and stops and removes the cluster afterwards, also when the tests fail.
# Usage: scripts/test_postgres.sh [pytest args...]   (default: the app tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
    echo "PostgreSQL is not installed: apt-get install postgresql" >&2
    exit 1
fi

# As root the server must run as another user; otherwise it runs as whoever we are.
if [[ $(id -u) -eq 0 ]]; then
    PG_USER=postgres
    as_pg() { runuser -u postgres -- "$@"; }
else
    PG_USER=$(id -un)
    as_pg() { "$@"; }
fi

DIR=$(mktemp -d /tmp/ambient-pg.XXXXXX)
chmod 755 "$DIR"
[[ $(id -u) -eq 0 ]] && chown postgres: "$DIR"
stop() {
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap stop EXIT

as_pg "$PG_BIN/initdb" -D "$DIR/data" -U "$PG_USER" -A trust -E UTF8 --no-locale >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
# Enough connections for the concurrency tests (each test's engines keep a pool open until teardown).
as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -o \
    "-c listen_addresses='' -c unix_socket_directories='$DIR' -c max_connections=300 -c fsync=off" start >/dev/null \
    || { cat "$DIR/server.log" >&2; exit 1; }

export AMBIENT_TEST_DATABASE_URL="postgresql+psycopg://$PG_USER@/postgres?host=$DIR"
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') at $DIR"
if [[ $# -eq 0 ]]; then
    set -- tests/test_app_*.py tests/test_store.py tests/test_jobs.py tests/test_clusters.py \
        tests/test_hardening_*.py tests/test_fuzz_api.py
fi
status=0
"$PYTHON" -m pytest -q "$@" || status=$?
[[ $status -eq 0 ]] || { echo "--- server log (tail)"; tail -n 30 "$DIR/server.log"; }
left=$("$PG_BIN/psql" -h "$DIR" -U "$PG_USER" -d postgres -Atc \
    "SELECT count(*) FROM pg_database WHERE datname LIKE 'test\_%'" 2>/dev/null || echo "?")
[[ $left == 0 ]] || echo "warning: $left test database(s) were not dropped" >&2
exit $status
