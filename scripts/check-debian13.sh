#!/usr/bin/env bash
# Check that `make setup` and the unit tier pass on Debian 13 (trixie, system Python 3.13), as root, from a clean
# checkout. Slow (minutes: every Debian and Python package is installed from scratch): run it by hand, it is NOT
# part of `make test` or CI.
#   scripts/check-debian13.sh [REF]      REF (default HEAD) is the commit checked; uncommitted changes are not.
#
# A Debian 13 minbase root (plus make and ca-certificates, what a newcomer has before typing `make setup`) is built
# once and cached in RAWFLOW_DEB13_ROOT (default /var/lib/rawflow/deb13-root; not the HTCondor pool's root). Each
# check runs on a throw-away overlay of it, so every run starts from that clean root and leaves it unchanged.
# Downloaded .deb files and pip's cache are kept in /var/lib/rawflow/deb13-cache (speed only; delete to refetch).
# All mounts live in a private mount namespace and are also unmounted by a trap; the run dir is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
REF=${1:-HEAD}
BASE=${RAWFLOW_DEB13_ROOT:-/var/lib/rawflow/deb13-root}
CACHE=${RAWFLOW_DEB13_CACHE:-/var/lib/rawflow/deb13-cache}
BASE_PACKAGES=(make ca-certificates)
commit=$(git -C "$REPO" rev-parse --verify "$REF^{commit}")
mkdir -p "$(dirname "$BASE")" "$CACHE/apt" "$CACHE/pip"

# --- the cached base root (built in a temp dir and renamed, so a failed build leaves nothing half-made) ---------
want=$( (printf '%s\n' trixie minbase "${BASE_PACKAGES[@]}" v1) | sha256sum | cut -d' ' -f1)
exec 9>"$BASE.lock"
flock 9
if [ "$(cat "$BASE/.rawflow-deb13-ready" 2>/dev/null)" != "$want" ]; then
  t0=$(date +%s)
  command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  }
  # The Debian mirror this machine's apt already uses (as scripts/setup-condor.sh reads it), never hard-coded.
  mirror=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -1)
  [ -n "$mirror" ] || mirror=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    | awk '{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' | grep -v -- '-security' | head -1)
  [ -n "$mirror" ] || { echo "check-debian13: no Debian mirror found in /etc/apt" >&2; exit 1; }
  build="$BASE.build.$$"
  rm -rf "$BASE".build.*
  trap 'rm -rf "$build" "$build.log"' EXIT
  echo "check-debian13: debootstrap trixie from $mirror"
  debootstrap --variant=minbase trixie "$build" "$mirror" >"$build.log" 2>&1 || { tail -20 "$build.log" >&2; exit 1; }
  printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d" # no daemon starts inside the root
  chmod +x "$build/usr/sbin/policy-rc.d"
  unshare --mount --propagation private env BUILD="$build" PKGS="${BASE_PACKAGES[*]}" sh -euc '
    mount -t proc proc "$BUILD/proc"
    mount --bind /dev "$BUILD/dev"
    mountpoint -q /dev/pts && mount --bind /dev/pts "$BUILD/dev/pts"
    cp /etc/resolv.conf /etc/hosts "$BUILD/etc/"
    chroot "$BUILD" apt-get update -qq
    chroot "$BUILD" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
    chroot "$BUILD" apt-get clean
    rm -rf "$BUILD"/var/lib/apt/lists/*
  '
  echo "$want" >"$build/.rawflow-deb13-ready"
  rm -rf "$BASE"
  mv "$build" "$BASE"
  rm -f "$build.log"
  trap - EXIT
  echo "check-debian13: base root $BASE built in $(($(date +%s) - t0)) s"
fi
# Runs share the base read-only: a shared lock keeps a rebuild from replacing it under them.
flock -s 9

# --- one check on a throw-away overlay --------------------------------------------------------------------------
RUN=$(mktemp -d "$(dirname "$BASE")/deb13-run.XXXXXX")
cleanup() {
  # The mounts are in the private namespace, gone with it; never delete through a mount that is still there.
  if grep -qF " $RUN/" /proc/self/mounts; then
    echo "check-debian13: mounts remain under $RUN, not removing it" >&2
  else
    rm -rf "$RUN"
  fi
}
trap cleanup EXIT
mkdir -p "$RUN/upper" "$RUN/work" "$RUN/root"

# This machine's pip settings (config files and the local wheel/index directories they name, the CA bundle) go
# into the root, so pip there reaches PyPI the way the host's pip does.
pip_host=(/usr/bin/python3 -m pip)
mapfile -t pip_dirs < <("${pip_host[@]}" config list 2>/dev/null | grep -oE "(file://)?/[^ ']+" | sed 's#^file://##' \
  | while read -r d; do [ -d "$d" ] && echo "$d"; [ -d "$(dirname "$d")" ] && [ "${d##*/}" = simple ] && echo "$(dirname "$d")"; done \
  | sort -u || true)
pip_files=()
for f in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip" /etc/ssl/certs/ca-certificates.crt; do
  [ -e "$f" ] && pip_files+=("$f")
done
envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb)
while IFS= read -r v; do envs+=("$v"); done < <(env | grep -E '^(PIP_[A-Z_]+|https?_proxy|HTTPS?_PROXY|no_proxy|NO_PROXY)=' || true)

echo "check-debian13: checking $commit on Debian 13 (overlay of $BASE)"
status=0
unshare --mount --propagation private env RUN="$RUN" BASE="$BASE" CACHE="$CACHE" REPO="$REPO" COMMIT="$commit" \
  PIP_DIRS="${pip_dirs[*]}" PIP_FILES="${pip_files[*]}" ENVS="${envs[*]}" bash -euo pipefail -c '
  R=$RUN/root
  mounted=()
  undo() { for ((i=${#mounted[@]}-1; i>=0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done; }
  trap undo EXIT
  m() { mount "$@"; mounted+=("${@: -1}"); }
  m -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$R"
  m -t proc proc "$R/proc"
  m --bind /dev "$R/dev"
  for d in /dev/pts /dev/shm; do mountpoint -q "$d" && m --bind "$d" "$R$d"; done
  m -t sysfs sysfs "$R/sys" 2>/dev/null || true
  m --bind "$CACHE/apt" "$R/var/cache/apt/archives"
  mkdir -p "$R/root/.cache/pip" && m --bind "$CACHE/pip" "$R/root/.cache/pip"
  for d in $PIP_DIRS; do mkdir -p "$R$d" && m --bind "$d" "$R$d" && mount -o remount,bind,ro "$R$d" || true; done
  for f in $PIP_FILES; do mkdir -p "$R$(dirname "$f")" && cp -a --remove-destination "$f" "$R$(dirname "$f")/"; done
  cp /etc/resolv.conf /etc/hosts "$R/etc/"
  # Keep the downloaded .debs in the cache (Debian images may be set to delete them).
  echo "Binary::apt::APT::Keep-Downloaded-Packages \"true\";" >"$R/etc/apt/apt.conf.d/99keep-debs"
  mkdir -p "$R/root/rawflow"
  git -C "$REPO" archive --format=tar "$COMMIT" | tar -x -C "$R/root/rawflow"
  echo "check-debian13: $(chroot "$R" sh -c ". /etc/os-release; echo \$PRETTY_NAME"), checkout of $COMMIT in /root/rawflow"
  run() { chroot "$R" env -i $ENVS sh -c "cd /root/rawflow && $1"; }
  t0=$(date +%s)
  run "make setup" || { echo "check-debian13: FAILED: make setup ($(($(date +%s) - t0)) s)"; exit 1; }
  t1=$(date +%s)
  run ".venv/bin/python -c \"import sys, gfal2; print(\\\"venv Python\\\", sys.version.split()[0], \\\"gfal2\\\", gfal2.get_version())\""
  run ".venv/bin/python -m pytest tests/unit -q -p no:cacheprovider" \
    || { echo "check-debian13: FAILED: unit tier ($(($(date +%s) - t1)) s)"; exit 1; }
  t2=$(date +%s)
  echo "check-debian13: ok: make setup $((t1 - t0)) s, unit tier $((t2 - t1)) s"
' || status=$?
exit $status
