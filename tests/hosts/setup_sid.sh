#!/usr/bin/env bash
# Debian sid chroot with GIMP 3.2 and Krita 5.3 (Python 3, PyQt5) for the end-to-end tests.
set -euo pipefail
ROOT=${LAMA_SID_CHROOT:-/var/tmp/lama-hosts-sid}
bash "$(dirname "$0")/debian_chroot.sh" sid "$ROOT" \
  gimp krita python3 python3-gi python3-pyqt5 xvfb xauth
chroot "$ROOT" dpkg-query -W -f='  ${Package} ${Version}\n' gimp krita
