#!/usr/bin/env bash
# Screenshot of GIMP 3 after Filters › LaMa Inpaint, for the README (docs/img/gimp-result.png).
#   take_screenshot.sh ENDPOINT TOKEN      (as root, lama-server running, venv's python3 first)
# Runs GIMP $GIMP_SERIES (default 3.2, the newest) from its chroot ($GIMP_SHOT_CHROOT, default
# the sid chroot of setup_sid.sh), with the plug-in installed by `lama-server install-plugin`.
# (GIMP ignores the quit request in this mode; the timeout ends it once the shot is saved.)
set -euo pipefail
SERIES=${GIMP_SERIES:-3.2}
ROOT=${GIMP_SHOT_CHROOT:-${LAMA_SID_CHROOT:-/var/tmp/lama-hosts-sid}}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
rm -rf "$ROOT/lama-shot" "$ROOT/lama-shot-home" && mkdir -p "$ROOT/lama-shot" "$ROOT/lama-shot-home"
HOME="$ROOT/lama-shot-home" ${PYTHON:-python3} -m lama_server.commands.serve install-plugin gimp --gimp-version "$SERIES" >/dev/null
cp "$REPO/../shared/fixtures/lama-golden/case-b/image.png" "$ROOT/lama-shot/photo.png"
cp "$HERE/screenshot_driver.py" "$ROOT/lama-shot/driver.py"
printf '{"image": "/lama-shot/photo.png", "selection": [96, 80, 48, 40], "endpoint": "%s", "out": "/lama-shot/gimp-result.png"}' "$1" > "$ROOT/lama-shot/plan.json"
# GIMP 3.2's image loaders run inside bwrap; where this machine forbids the namespaces bwrap
# needs (containers), stand a plain runner in for it during this one run.
if [ -x "$ROOT/usr/bin/bwrap" ] && ! chroot "$ROOT" bwrap --unshare-all --ro-bind /usr /usr true 2>/dev/null; then
  mount --bind "$HERE/no_sandbox_bwrap.sh" "$ROOT/usr/bin/bwrap"
  trap 'sleep 1; umount "$ROOT/usr/bin/bwrap"' EXIT
fi
timeout -k 5 60 chroot "$ROOT" /usr/bin/env -i HOME=/lama-shot-home PATH=/usr/bin:/bin LANG=C.UTF-8 \
  LAMA_TEST_PLAN=/lama-shot/plan.json LAMA_TOKEN="$2" \
  xvfb-run -a -s "-screen 0 800x600x24" "gimp-$SERIES" --no-splash --batch-interpreter=python-fu-eval \
  -b 'exec(open("/lama-shot/driver.py").read())' -b 'Gimp.get_pdb().lookup_procedure("gimp-quit").run(Gimp.get_pdb().lookup_procedure("gimp-quit").create_config())' \
  > /tmp/gimp-shot.log 2>&1 || true
if [ ! -s "$ROOT/lama-shot/gimp-result.png" ]; then tail -30 /tmp/gimp-shot.log; exit 1; fi
cp "$ROOT/lama-shot/gimp-result.png" "$REPO/docs/img/gimp-result.png"
echo "wrote docs/img/gimp-result.png (GIMP $SERIES)"
