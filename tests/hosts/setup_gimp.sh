#!/usr/bin/env bash
# Debian trixie chroot with GIMP 3.0 and Python 3 for the GIMP end-to-end tests.
# (Debian 12 itself only has GIMP 2.10, which runs no Python 3 plug-ins.)
set -euo pipefail
ROOT=${GIMP_CHROOT:-/var/tmp/lama-gimp3-trixie}
# A chroot built by this script's first version carries the older stamp name.
[ -f "$ROOT/.lama-gimp3-ready" ] && touch "$ROOT/.lama-host-ready"
bash "$(dirname "$0")/debian_chroot.sh" trixie "$ROOT" gimp python3 python3-gi xvfb xauth
chroot "$ROOT" dpkg-query -W -f='  ${Package} ${Version}\n' gimp
