#!/usr/bin/env bash
# Debian sid chroot with GIMP 3.2 and Krita 5.3 (Python 3, PyQt5) for the end-to-end tests.
# PyQt6 is there too, as on many desktops: Krita 5 must still pick PyQt5.
set -euo pipefail
ROOT=${LAMA_SID_CHROOT:-/var/tmp/lama-hosts-sid}
bash "$(dirname "$0")/debian_chroot.sh" sid "$ROOT" \
  gimp krita python3 python3-gi python3-pyqt5 python3-pyqt6 xvfb xauth
chroot "$ROOT" dpkg-query -W -f='  ${Package} ${Version}\n' gimp krita
