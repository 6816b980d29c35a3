#!/usr/bin/env bash
# Install everything Rawflow needs on Debian 12 or 13 (root, no Docker). Idempotent: a second run only checks.
#   scripts/setup.sh           runtime + test tools
#   RAWFLOW_WITH_RUCIO=1 ...   also the Rucio server venv the catalogue tests start
#   RAWFLOW_WITH_CONDOR=1 ...  also the local HTCondor pool's chroot (always with RAWFLOW_SETUP_TESTS=1;
#                              `rawflow grid up` installs it on first use otherwise)
#   RAWFLOW_WITH_DIRAC=1 ...   also the DIRAC client venv (default with RAWFLOW_SETUP_TESTS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${RAWFLOW_VENV:-$ROOT/.venv}

# gfal2's Python binding (python3-gfal2) is built for the system's CPython: 3.11 on Debian 12, 3.13 on
# Debian 13. The venv uses that interpreter, whichever it is.
# A minimal Debian may have no python3 yet: install Debian's first, then ask it its version.
if [ ! -x /usr/bin/python3 ]; then
  echo "setup: apt installing python3"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
fi
PYVER=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
APT_PACKAGES=(
  xrootd-server xrootd-client xrootd-server-plugins xrootd-scitokens-plugins
  gfal2 python3-gfal2 gfal2-plugin-xrootd gfal2-plugin-http gfal2-plugin-file gfal2-plugin-mock python3-xrootd
  davix gfal2-util-scripts "python$PYVER" "python$PYVER-venv" "python$PYVER-dev" build-essential swig libssl-dev
  openssl memcached postgresql postgresql-contrib procps psmisc curl make git
  # The Celery brokers of `grid up --executor celery --broker redis|rabbitmq` (each a private instance on free
  # ports; the tests start both). Debian also starts its own service of each; the grid never uses it.
  redis-server rabbitmq-server
)
# Only the test suite needs a browser (UI tests in headless Chromium).
[ "${RAWFLOW_SETUP_TESTS:-0}" = 1 ] && APT_PACKAGES+=(chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=/usr/bin/python$PYVER
stamp="$VENV/.rawflow-installed"
want=$(cat requirements.txt requirements.lock include/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: pip installing into $VENV"
  "$VENV/bin/pip" install -q --upgrade "pip==25.3"
  "$VENV/bin/pip" install -q -r requirements.txt -c requirements.lock
  "$VENV/bin/pip" install -q --no-deps -e include
  echo "$want" > "$stamp"
fi
# Link only the gfal2 extension into the venv (all of dist-packages would leak Debian's packages in).
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tag=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
gfal2_so=/usr/lib/python3/dist-packages/gfal2$tag
[ -e "$gfal2_so" ] || { echo "setup: $gfal2_so missing: python3-gfal2 is not built for Python $PYVER" >&2; exit 1; }
ln -sf "$gfal2_so" "$site/"
# XrdCl's Python binding (python3-xrootd, same interpreter): its two package directories only.
for package in XRootD pyxrootd; do
  [ -d "/usr/lib/python3/dist-packages/$package" ] || { echo "setup: python3-xrootd lacks $package" >&2; exit 1; }
  ln -sfn "/usr/lib/python3/dist-packages/$package" "$site/$package"
done
"$VENV/bin/python" -c 'import gfal2, XRootD.client, airflow, rawflow' || { echo "setup: import check failed" >&2; exit 1; }

if [ "${RAWFLOW_WITH_RUCIO:-0}" = 1 ]; then
  scripts/setup-rucio.sh
fi
if [ "${RAWFLOW_WITH_CONDOR:-0}" = 1 ] || [ "${RAWFLOW_SETUP_TESTS:-0}" = 1 ]; then
  RAWFLOW_VENV="$VENV" scripts/setup-condor.sh
fi
# The DIRAC client venv (the dirac compute backend; tests run its local execution and WMS path).
if [ "${RAWFLOW_WITH_DIRAC:-${RAWFLOW_SETUP_TESTS:-0}}" = 1 ]; then
  scripts/setup-dirac.sh
fi
echo "setup: ok ($VENV)"
