#!/usr/bin/env bash
# Install the local HTCondor pool's root once: a Debian 13 (trixie) minbase chroot with minicondor 23.9.6, the
# xrootd client, Python 3.13 and a venv (/opt/rawflow/venv) with the payloads' libraries, and user `juno`
# (uid 5001) that jobs run as. Debian 12 has no HTCondor package, hence the chroot (docs/processing.md).
#
# Cached OUTSIDE the clone (RAWFLOW_CONDOR_ROOT, default /var/lib/rawflow/condor-root, a link to the directory
# of the pinned set) so every clone and CI
# run on this machine reuses it; a second run only checks the stamp. flock makes concurrent setups wait for
# each other; the root is built in a temp dir and renamed into place, so a failed build leaves nothing half-made.
# Pools (include/rawflow/grid/condor.py) never write into this root: each mounts its own state over /pool.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${RAWFLOW_CONDOR_ROOT:-/var/lib/rawflow/condor-root}
VENV=${RAWFLOW_VENV:-$(pwd)/.venv}
JOB_UID=5001
# Pinned: Debian packages (trixie's versions) and the payload venv's wheels, every transitive one too.
DEB_PACKAGES=(minicondor=23.9.6+dfsg-2.1+b10 xrootd-client=5.8.1-1 python3=3.13.5-1 python3-venv=3.13.5-1
  ca-certificates)
# The payloads' pins are theirs (include/rawflow/payloads/requirements.txt, one source); the transitive wheels
# pip resolves for Python 3.13 beyond them are pinned here.
PAYLOAD_REQUIREMENTS=include/rawflow/payloads/requirements.txt
mapfile -t PIP_PINS < <(grep -hvE '^\s*(#|$)' "$PAYLOAD_REQUIREMENTS" 2>/dev/null || true)
[ ${#PIP_PINS[@]} -gt 0 ] || PIP_PINS=(uproot==5.7.7 numpy==2.4.6 awkward==2.14.0 awkward-cpp==57 cramjam==2.14.0
  xxhash==4.1.0 fsspec==2026.9.0 packaging==26.3)
PIP_PINS+=(importlib_metadata==10.2.0 lazy_importer==0.1.0 zipp==4.1.2)
want=$( (printf '%s\n' "${DEB_PACKAGES[@]}" "${PIP_PINS[@]}" "uid=$JOB_UID" v1) | sha256sum | cut -d' ' -f1)
# Each pinned set gets its own directory ($ROOT-<hash>); $ROOT is a symlink to the current one. Clones on other
# versions (CI branches) switch the link instead of rebuilding each other's root, and running pools keep the
# directory they started from.
VERSIONED="$ROOT-${want:0:12}"
stamp="$VERSIONED/.rawflow-condor-ready"

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
point_root_at_versioned() {
  # An older setup left a real directory at $ROOT: move it aside (its pools may still run from it).
  [ -d "$ROOT" ] && [ ! -L "$ROOT" ] && mv "$ROOT" "$ROOT.old.$$"
  ln -sfn "$(basename "$VERSIONED")" "$ROOT.link.$$" && mv -Tf "$ROOT.link.$$" "$ROOT"
}
# Adopt a root an older setup built in place when it holds exactly this pinned set.
if [ -d "$ROOT" ] && [ ! -L "$ROOT" ] && [ "$(cat "$ROOT/.rawflow-condor-ready" 2>/dev/null)" = "$want" ]; then
  mv "$ROOT" "$VERSIONED"
fi
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  test -x "$VERSIONED/usr/sbin/condor_master" && test -x "$VERSIONED/opt/rawflow/venv/bin/python" \
    && test -x "$VERSIONED/usr/bin/xrdcp" && chroot "$VERSIONED" id -u juno | grep -qx "$JOB_UID" \
    || { echo "setup-condor: $VERSIONED is damaged; remove it and run again" >&2; exit 1; }
  point_root_at_versioned
  echo "setup-condor: ok (cached $ROOT -> $VERSIONED)"
  exit 0
fi

start=$(date +%s)
command -v debootstrap >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}
# The Debian mirror this machine's apt already uses (deb822 .sources or one-line .list), never hard-coded.
mirror=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -1)
[ -n "$mirror" ] || mirror=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
  | awk '{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v -- '-security' | head -1)
[ -n "$mirror" ] || { echo "setup-condor: no Debian mirror found in /etc/apt" >&2; exit 1; }

build="$ROOT.build.$$"
wheels="$ROOT.wheels.$$"
cleanup() { rm -rf "$build" "$wheels"; }
trap cleanup EXIT
rm -rf "$ROOT".build.* "$ROOT".wheels.*
echo "setup-condor: debootstrap trixie from $mirror (takes about a minute)"
debootstrap --variant=minbase trixie "$build" "$mirror" >"$build.log" 2>&1 \
  || { tail -20 "$build.log" >&2; rm -f "$build.log"; exit 1; }
rm -f "$build.log"
printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d"
chmod +x "$build/usr/sbin/policy-rc.d"
cp /etc/resolv.conf /etc/hosts "$build/etc/"

# Wheels are fetched on the host with the host's own pip settings (index, certificates, wheel dirs), so PyPI is
# reached exactly the way this machine reaches it; the chroot then installs them offline.
pip_host=("$VENV/bin/pip")
[ -x "${pip_host[0]}" ] || pip_host=(/usr/bin/python3 -m pip)
mkdir -p "$wheels"
"${pip_host[@]}" download -q --only-binary=:all: --python-version 3.13 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$wheels" "${PIP_PINS[@]}"

# Installs run in a private mount namespace: /proc and /dev vanish with it, nothing to undo.
unshare --mount --propagation private env BUILD="$build" WHEELS="$wheels" JOB_UID="$JOB_UID" \
  PIP_PINS="${PIP_PINS[*]}" DEB_PACKAGES="${DEB_PACKAGES[*]}" sh -euc '
  mount -t proc proc "$BUILD/proc"
  mount --bind /dev "$BUILD/dev"
  mkdir -p "$BUILD/wheels" && mount --bind "$WHEELS" "$BUILD/wheels"
  chroot "$BUILD" apt-get update -qq
  chroot "$BUILD" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEB_PACKAGES >/dev/null
  chroot "$BUILD" apt-get clean
  chroot "$BUILD" useradd -m -u "$JOB_UID" -s /bin/bash juno
  chroot "$BUILD" python3 -m venv /opt/rawflow/venv
  chroot "$BUILD" /opt/rawflow/venv/bin/pip install -q --no-index --find-links /wheels $PIP_PINS
  chroot "$BUILD" /opt/rawflow/venv/bin/python -c "import uproot, numpy"
  umount "$BUILD/wheels"
  rmdir "$BUILD/wheels"
'
# Mount points every pool uses: its state (/pool) and its software area (/opt/rawflow/sw, read-only for jobs).
mkdir -p "$build/pool" "$build/opt/rawflow/sw"
echo "$want" >"$build/.rawflow-condor-ready"
rm -rf "$VERSIONED"
mv "$build" "$VERSIONED"
point_root_at_versioned
echo "setup-condor: installed $VERSIONED (linked from $ROOT) in $(($(date +%s) - start)) s"
