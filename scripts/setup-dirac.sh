#!/usr/bin/env bash
# Create .venv-dirac: the DIRAC 9.1.22 client the DIRAC compute backend runs through its runner script
# (include/rawflow/compute/dirac_runner.py). Idempotent: a second run only checks (stamp).
# DIRAC requires gfal2-python, which does not build here (Debian's python3-gfal2 is what works, and DIRAC's
# local execution and the client calls Rawflow makes do not need it): the wheel is installed --no-deps, then
# its Requires-Dist list minus gfal2-python, every package pinned as resolved and tested. Its own venv: DIRAC's
# pins clash with Airflow's.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RAWFLOW_DIRAC_VENV:-$(pwd)/.venv-dirac}
# Resolved on CPython 3.11 (Debian 12); elsewhere (Debian 13) the system Python.
PY=${RAWFLOW_DIRAC_PYTHON_BIN:-$(command -v python3.11 || echo /usr/bin/python3)}
DIRAC_VERSION=9.1.22
CONSTRAINTS=$(cat <<'PINS'
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
argcomplete==3.7.2
attrs==26.1.0
Authlib==1.9.10
azure-core==1.41.0
bcrypt==5.0.0
boto3==1.44.8
botocore==1.44.8
CacheControl==0.14.4
cachetools==8.0.2
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
coloredlogs==15.0.1
cryptography==50.0.2
cwl-upgrader==1.2.15
cwl-utils==0.45
cwltool==3.3.20260925135507
DB12==1.0.4
decorator==5.3.1
Deprecated==1.3.1
diraccfg==1.0.1
DIRACCommon==9.1.22
diracx-api==0.7.0
diracx-cli==0.7.0
diracx-client==0.7.0
diracx-core==0.7.0
dnspython==2.9.2
dogpile.cache==1.5.0
dominate==2.9.1
email-validator==2.4.0
fabric==3.2.3
filelock==4.3.1
frozenlist==1.8.0
fts3==3.14.2
gitdb==4.0.12
GitPython==3.2.1
h11==0.16.0
httpcore==1.0.9
httpcore2==2.16.2
httpx==0.29.0
httpx2==2.16.2
humanfriendly==10.0
idna==3.20
importlib_metadata==10.2.0
importlib_resources==7.1.0
invoke==2.2.1
isodate==0.7.2
jmespath==1.1.0
joserfc==1.8.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
lazy-importer==0.1.0
lxml==6.1.3
M2Crypto==0.51.0
markdown-it-py==4.3.0
mdurl==0.1.2
mistune==3.3.4
msgpack==1.2.4
multidict==7.2.1
mypy_extensions==1.2.0
networkx==3.6.1
orjson==3.13.0
packaging==26.4
paramiko==5.1.0
pexpect==4.9.0
prompt_toolkit==3.0.53
propcache==0.5.4
prov==1.5.1
psutil==7.2.2
ptyprocess==0.7.0
pyasn1==0.6.5
pyasn1_modules==0.4.2
pycparser==3.12
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
pydot==4.0.1
Pygments==2.21.0
PyJWT==2.15.1
PyNaCl==1.6.2
pyparsing==3.3.3
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
pytz==2026.6
PyYAML==6.0.4
rdflib==7.6.0
referencing==0.37.0
requests==2.34.2
rich==15.0.0
rich-argparse==1.8.0
rpds-py==2026.9.1
ruamel.yaml==0.19.1
rucio-clients==41.5.1
s3transfer==0.19.3
schema-salad==8.10.20260825112551
sh==2.4.0
shellingham==1.5.4
signurlarity==0.3.1
six==1.17.0
smmap==5.0.3
spython==0.3.14
SQLAlchemy==2.1.9
stevedore==5.10.0
tabulate==0.10.0
truststore==0.10.5
typer==0.29.2
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
wcwidth==0.9.4
wrapt==2.5.2
xattr==1.3.1
yarl==1.25.1
zipp==4.1.2
zstandard==0.25.0
PINS
)

want=$(printf '%s\n' "DIRAC==$DIRAC_VERSION" "$CONSTRAINTS" | sha256sum | cut -d' ' -f1)
stamp="$VENV/.rawflow-installed"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$VENV/bin/python" -c 'import DIRAC.Interfaces.API.Dirac' 2>/dev/null; then
  echo "setup-dirac: ok ($VENV)"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade "pip==25.3"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$CONSTRAINTS" > "$work/constraints.txt"
"$VENV/bin/pip" download -q --no-deps "DIRAC==$DIRAC_VERSION" -d "$work"
"$VENV/bin/pip" install -q --no-deps "$work"/[Dd][Ii][Rr][Aa][Cc]-"$DIRAC_VERSION"-*.whl
# Its Requires-Dist (no extras) minus gfal2-python, resolved within the pins.
requires=$("$VENV/bin/python" - <<'PY'
from importlib.metadata import requires
for req in requires("DIRAC") or []:
    if "extra ==" in req or req.lower().startswith("gfal2-python"):
        continue
    print(req.split(";")[0].replace(" ", ""))
PY
)
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q -c "$work/constraints.txt" $requires
"$VENV/bin/python" -c 'from DIRAC.Interfaces.API.Job import Job; from DIRAC.Interfaces.API.Dirac import Dirac' \
  || { echo "setup-dirac: import check failed" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup-dirac: ok ($VENV)"
