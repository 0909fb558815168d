#!/usr/bin/env bash
# The whole Ambient pipeline on the generated demo world (called by `make demo`).
set -euo pipefail
DEMO=${1:-demo}
AMBIENT=.venv/bin/ambient
mkdir -p "$DEMO"
DB="sqlite:///$(realpath "$DEMO")/ambient.db"

# Real photo cut-outs and recorded sounds when Debian's package can be installed, else procedural objects.
OBJECTS=procedural
if [ ! -d /usr/share/tuxpaint/stamps ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing tuxpaint-stamps-default for real media (about 160 MB)"
  (apt-get update -qq && apt-get install -y -qq tuxpaint-stamps-default >/dev/null) || echo "   not installable; using procedural objects"
fi
[ -d /usr/share/tuxpaint/stamps ] && OBJECTS=tuxpaint
echo "== demo world with $OBJECTS objects"

echo "== database $DB"
$AMBIENT db upgrade --db "$DB"
# The pipeline plan the admin page's demo job runs too (backend/pipeline.py); a rerun resumes.
$AMBIENT demo "$DEMO" --objects "$OBJECTS" --db "$DB"

# Two accounts, made once; their passwords are kept in $DEMO/accounts.txt for reruns.
if [ ! -f "$DEMO/accounts.txt" ]; then
  ADMIN_PW=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(9))')
  ANNOTATOR_PW=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(9))')
  $AMBIENT user add admin --admin --password "$ADMIN_PW" --db "$DB"
  $AMBIENT user add annotator --password "$ANNOTATOR_PW" --db "$DB"
  (umask 077; printf 'admin %s\nannotator %s\n' "$ADMIN_PW" "$ANNOTATOR_PW" > "$DEMO/accounts.txt")
fi
chmod 600 "$DEMO/accounts.txt"     # passwords: readable by their owner only
echo
echo "Demo output: world $DEMO/world, dataset $DEMO/data, run $DEMO/run, database $DB"
echo "Accounts (name password), also in $DEMO/accounts.txt:"
cat "$DEMO/accounts.txt"
PORT=${PORT:-8000}
echo "== serving the annotation app on http://127.0.0.1:$PORT with a worker for the admin page's jobs (Ctrl-C to stop)"
# Jobs and the app read only under the data roots: the demo's folder (its jobs/ included) unless set.
exec env AMBIENT_JOBS_DIR="$(realpath "$DEMO")/jobs" AMBIENT_DATA_ROOTS="${AMBIENT_DATA_ROOTS:-$(realpath "$DEMO")}" $AMBIENT serve --db "$DB" --host 127.0.0.1 --port "$PORT" --worker
