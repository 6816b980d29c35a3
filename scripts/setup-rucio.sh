#!/usr/bin/env bash
# Create .venv-rucio: the Rucio 41.5.1 server the catalogue tests and bench start locally. Idempotent.
# The server caps its dependencies (SQLAlchemy 2.0.x) and clashes with Airflow's, so it gets its own venv;
# rawflow itself only talks to it over HTTP with rucio-clients from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RAWFLOW_RUCIO_VENV:-$(pwd)/.venv-rucio}
# Its pins were resolved on CPython 3.11 (Debian 12); elsewhere the system Python.
PY=${RAWFLOW_RUCIO_PYTHON:-$(command -v python3.11 || echo /usr/bin/python3)}
PACKAGES=("rucio[postgresql]==41.5.1" "gunicorn==23.0.0" "pymemcache==4.0.0")
# Every transitive dependency pinned as resolved and tested (pip freeze of a working .venv-rucio).
CONSTRAINTS=$(cat <<'PINS'
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
alembic==1.16.5
annotated-types==0.8.0
argcomplete==3.7.0
async-timeout==5.0.1
attrs==26.1.0
bcrypt==5.0.0
blinker==1.9.0
boto==2.49.0
boto3==1.42.97
botocore==1.42.97
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cryptography==50.0.2
decorator==5.3.1
defusedxml==0.7.1
docopt==0.6.2
dogpile.cache==1.2.2
Flask==3.1.3
frozenlist==1.8.0
future==1.0.0
geoip2==5.1.0
google-auth==2.50.0
greenlet==3.5.6
idna==3.20
invoke==3.0.3
itsdangerous==2.2.0
Jinja2==3.1.6
jmespath==1.1.0
jsonschema==4.25.1
jsonschema-specifications==2025.9.1
Mako==1.4.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
maxminddb==2.8.2
mdurl==0.1.2
multidict==7.2.1
oic==1.7.0
packaging==26.2
paramiko==5.0.0
prometheus_client==0.25.0
propcache==0.5.4
psycopg==3.2.13
psycopg-binary==3.2.13
psycopg-pool==3.2.8
pyasn1==0.6.5
pyasn1_modules==0.4.2
pycparser==3.12
pycryptodomex==3.24.2
pydantic==2.14.3
pydantic-settings==2.16.3
pydantic_core==2.50.4
Pygments==2.21.0
pyjwkest==1.4.4
PyNaCl==1.6.2
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
python-magic==0.4.27
redis==7.0.1
referencing==0.37.0
requests==2.32.5
rich==15.0.0
rpds-py==2026.9.1
s3transfer==0.16.1
six==1.17.0
SQLAlchemy==2.0.51
statsd==4.0.1
stevedore==5.10.0
stomp.py==8.2.0
tabulate==0.9.0
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==1.26.19
websocket-client==1.9.2
Werkzeug==3.1.9
yarl==1.25.1
PINS
)

want=$(printf '%s\n' "${PACKAGES[@]}" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
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
constraints_file=$(mktemp)
trap 'rm -f "$constraints_file"' EXIT
printf '%s\n' "$CONSTRAINTS" > "$constraints_file"
"$VENV/bin/pip" install -q -c "$constraints_file" "${PACKAGES[@]}"
"$VENV/bin/python" -c 'import rucio.vcsversion, psycopg, gunicorn, flask, pymemcache' \
  || { echo "setup-rucio: import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup-rucio: ok ($VENV)"
