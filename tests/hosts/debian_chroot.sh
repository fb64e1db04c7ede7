#!/usr/bin/env bash
# Build (once) a Debian chroot with real GIMP/Krita for the end-to-end tests, cached with a stamp.
#   bash tests/hosts/debian_chroot.sh SUITE ROOT PACKAGE...   (as root)
# SUITE is a Debian suite (trixie, sid) or "experimental": that one starts from a copy of the
# sid chroot ($LAMA_SID_CHROOT, built first if missing) and installs PACKAGEs with
# `-t experimental`. The mirror is the one this machine's own apt sources name (never a
# host written here); $DEBIAN_MIRROR overrides it. Exits non-zero, loudly, on any failure.
set -euo pipefail
SUITE=$1 ROOT=$2
shift 2
PACKAGES=("$@")
STAMP="$ROOT/.lama-host-ready"
LOG="/tmp/lama-chroot-$SUITE.log"
export DEBIAN_FRONTEND=noninteractive
HERE=$(cd "$(dirname "$0")" && pwd)

die() { [ -f "$LOG" ] && tail -20 "$LOG" >&2; echo "!!!! debian_chroot $SUITE: $*" >&2; exit 1; }

# The stamp names the packages; a cached chroot from an older package list gets the new ones.
WANT="$SUITE ${PACKAGES[*]}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "$SUITE chroot: ready at $ROOT"
  exit 0
fi
: >"$LOG"
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"

# The first http(s) URI of this machine's Debian sources (deb822 .sources, then sources.list).
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}')
  [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources* (set DEBIAN_MIRROR)"
  echo "${uri%/}"
}
MIRROR=$(debian_mirror)
# sid and experimental Release files on some mirrors are past their Valid-Until.
APT=(apt-get -o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)

if [ -f "$STAMP" ]; then
  TARGET=()
  [ "$SUITE" = experimental ] && TARGET=(-t experimental)
  chroot "$ROOT" "${APT[@]}" update >>"$LOG" 2>&1 || die "apt-get update failed (mirror unreachable?)"
  chroot "$ROOT" "${APT[@]}" install -y --no-install-recommends "${TARGET[@]}" "${PACKAGES[@]}" \
    >>"$LOG" 2>&1 || die "adding ${PACKAGES[*]} failed"
elif [ "$SUITE" = experimental ]; then
  SID=${LAMA_SID_CHROOT:-/var/tmp/lama-hosts-sid}
  bash "$HERE/setup_sid.sh" >>"$LOG" 2>&1 || die "the sid chroot it starts from failed"
  rm -rf "$ROOT"
  cp -a "$SID" "$ROOT"
  rm -f "$ROOT/$(basename "$STAMP")"
  echo "deb $MIRROR experimental main" >"$ROOT/etc/apt/sources.list.d/experimental.list"
  chroot "$ROOT" "${APT[@]}" update >>"$LOG" 2>&1 || die "apt-get update failed (mirror unreachable?)"
  chroot "$ROOT" "${APT[@]}" install -y --no-install-recommends -t experimental "${PACKAGES[@]}" \
    >>"$LOG" 2>&1 || die "installing ${PACKAGES[*]} from experimental failed"
else
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq >>"$LOG" 2>&1 || die "apt-get update failed: Debian mirror unreachable"
    apt-get install -y -qq debootstrap >>"$LOG" 2>&1 || die "cannot install debootstrap"
  fi
  rm -rf "$ROOT"
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >>"$LOG" 2>&1 \
    || die "debootstrap failed (mirror unreachable?)"
  chroot "$ROOT" "${APT[@]}" update >>"$LOG" 2>&1 || die "apt-get update failed (mirror unreachable?)"
  chroot "$ROOT" "${APT[@]}" install -y --no-install-recommends "${PACKAGES[@]}" >>"$LOG" 2>&1 \
    || die "installing ${PACKAGES[*]} failed"
fi
chroot "$ROOT" apt-get clean
echo "$WANT" >"$STAMP"
echo "$SUITE chroot: built at $ROOT"
