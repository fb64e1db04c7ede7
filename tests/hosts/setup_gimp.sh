#!/usr/bin/env bash
# Build (once) a Debian trixie chroot with GIMP 3 and Python 3 for the GIMP end-to-end tests.
# Debian 12 only has GIMP 2.10 (no Python 3 plug-ins). Cached at $GIMP_CHROOT with a stamp
# file; exits non-zero, loudly, when the Debian mirror cannot be reached.
set -euo pipefail
ROOT=${GIMP_CHROOT:-/var/tmp/lama-gimp3-trixie}
STAMP="$ROOT/.lama-gimp3-ready"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export DEBIAN_FRONTEND=noninteractive
if [ -f "$STAMP" ]; then
  echo "gimp chroot: ready at $ROOT ($(chroot "$ROOT" gimp-console-3.0 --version 2>/dev/null | head -1))"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq || { echo "!!!! setup_gimp: apt-get update failed: Debian mirror unreachable" >&2; exit 1; }
  apt-get install -y -qq debootstrap >/dev/null
fi
rm -rf "$ROOT"
if ! debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >/tmp/setup_gimp.log 2>&1; then
  tail -20 /tmp/setup_gimp.log >&2
  echo "!!!! setup_gimp: debootstrap trixie failed (mirror unreachable?)" >&2
  exit 1
fi
chroot "$ROOT" apt-get update -qq
if ! chroot "$ROOT" apt-get install -y -qq --no-install-recommends \
    gimp python3 python3-gi xvfb xauth >>/tmp/setup_gimp.log 2>&1; then
  tail -20 /tmp/setup_gimp.log >&2
  echo "!!!! setup_gimp: installing GIMP 3 in the chroot failed" >&2
  exit 1
fi
chroot "$ROOT" apt-get clean
touch "$STAMP"
echo "gimp chroot: built at $ROOT ($(chroot "$ROOT" gimp-console-3.0 --version | head -1))"
