#!/usr/bin/env bash
# Debian experimental chroot with Krita 6 (Qt6, PyQt6), copied from the sid chroot.
set -euo pipefail
ROOT=${LAMA_EXPERIMENTAL_CHROOT:-/var/tmp/lama-hosts-experimental}
bash "$(dirname "$0")/debian_chroot.sh" experimental "$ROOT" krita python3-pyqt6
chroot "$ROOT" dpkg-query -W -f='  ${Package} ${Version}\n' krita
