#!/usr/bin/env bash
# Screenshot of GIMP 3 after Filters › LaMa Inpaint, for the README (docs/img/gimp-result.png).
# Needs the chroot from setup_gimp.sh and a running lama-server: take_screenshot.sh ENDPOINT TOKEN
# (GIMP ignores the quit request in this mode; the timeout ends it once the shot is saved.)
set -euo pipefail
ROOT=${GIMP_CHROOT:-/var/tmp/lama-gimp3-trixie}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
rm -rf "$ROOT/lama-shot" "$ROOT/lama-shot-home" && mkdir -p "$ROOT/lama-shot" "$ROOT/lama-shot-home"
python3 -m lama_server.cli install-plugin gimp --dest "$ROOT/lama-shot-home/.config/GIMP/3.0/plug-ins" >/dev/null
cp "$REPO/../shared/fixtures/lama-golden/case-b/image.png" "$ROOT/lama-shot/photo.png"
cp "$HERE/screenshot_driver.py" "$ROOT/lama-shot/driver.py"
printf '{"image": "/lama-shot/photo.png", "selection": [96, 80, 48, 40], "endpoint": "%s", "out": "/lama-shot/gimp-result.png"}' "$1" > "$ROOT/lama-shot/plan.json"
timeout -k 5 60 chroot "$ROOT" /usr/bin/env -i HOME=/lama-shot-home PATH=/usr/bin:/bin LANG=C.UTF-8 \
  LAMA_TEST_PLAN=/lama-shot/plan.json LAMA_TOKEN="$2" \
  xvfb-run -a -s "-screen 0 1100x760x24" gimp-3.0 --no-splash --batch-interpreter=python-fu-eval \
  -b 'exec(open("/lama-shot/driver.py").read())' -b 'Gimp.get_pdb().lookup_procedure("gimp-quit").run(Gimp.get_pdb().lookup_procedure("gimp-quit").create_config())' \
  > /tmp/gimp-shot.log 2>&1 || true
if [ ! -s "$ROOT/lama-shot/gimp-result.png" ]; then tail -30 /tmp/gimp-shot.log; exit 1; fi
cp "$ROOT/lama-shot/gimp-result.png" "$REPO/docs/img/gimp-result.png"
echo "wrote docs/img/gimp-result.png"
