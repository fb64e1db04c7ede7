#!/usr/bin/env bash
# Install real Krita (Debian's package) for the end-to-end plugin tests. Idempotent.
# Exits non-zero, loudly, when the Debian mirror cannot be reached.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(krita python3-pyqt5 xvfb xauth)
if dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
  echo "krita: already installed ($(dpkg-query -W -f='${Version}' krita))"
  exit 0
fi
# python3-pyqt5 explicitly: without it Krita silently loads no Python plugin.
if ! apt-get update -qq; then
  echo "!!!! setup_krita: apt-get update failed: the Debian mirror is unreachable" >&2
  exit 1
fi
if ! apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/setup_krita.log 2>&1; then
  tail -20 /tmp/setup_krita.log >&2
  echo "!!!! setup_krita: installing ${pkgs[*]} failed" >&2
  exit 1
fi
echo "krita: installed ($(dpkg-query -W -f='${Version}' krita))"
