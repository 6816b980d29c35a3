#!/usr/bin/env bash
# Create .venv-rucio: the Rucio 41.5.1 server the catalogue tests and bench start locally. Idempotent.
# The server caps its dependencies (SQLAlchemy 2.0.x) and clashes with Airflow's, so it gets its own venv;
# rawflow itself only talks to it over HTTP with rucio-clients from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RAWFLOW_RUCIO_VENV:-$(pwd)/.venv-rucio}
PY=${RAWFLOW_RUCIO_PYTHON:-/usr/bin/python3.11}
PACKAGES=("rucio[postgresql]==41.5.1" "gunicorn==23.0.0" "pymemcache==4.0.0")

want=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -d' ' -f1)
stamp="$VENV/.rawflow-installed"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c 'import rucio, gunicorn' 2>/dev/null; then
  echo "setup-rucio: ok ($VENV)"
  exit 0
fi
for cmd in memcached /usr/lib/postgresql/15/bin/initdb; do
  command -v "$cmd" >/dev/null || { echo "setup-rucio: $cmd missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade "pip==25.3"
"$VENV/bin/pip" install -q "${PACKAGES[@]}"
"$VENV/bin/python" -c 'import rucio.vcsversion, psycopg, gunicorn, flask, pymemcache' \
  || { echo "setup-rucio: import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup-rucio: ok ($VENV)"
