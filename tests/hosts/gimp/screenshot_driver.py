# Run by python-fu-eval inside GIMP 3's GUI (gimp-3.N under Xvfb): open the photo in a window,
# select, run the real plug-in, and grab the screen for the README. Not part of the test suite.
import json
import os
import time

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk, Gimp, GimpUi, Gio  # noqa: E402

PLAN = json.load(open(os.environ["LAMA_TEST_PLAN"]))
GimpUi.init("lama-screenshot")
image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(PLAN["image"]))
Gimp.Display.new(image)
x, y, w, h = PLAN["selection"]
image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
proc = Gimp.get_pdb().lookup_procedure("plug-in-lama-inpaint")
config = proc.create_config()
config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
config.set_property("image", image)
config.set_core_object_array("drawables", [image.get_layers()[0]])
config.set_property("endpoint", PLAN["endpoint"])
result = proc.run(config)
Gimp.displays_flush()
time.sleep(4)  # let GIMP (another process) repaint the canvas and the Layers dock
root = Gdk.get_default_root_window()
shot = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
shot.savev(PLAN["out"], "png", [], [])
print("SCREENSHOT", result.index(0).value_nick, PLAN["out"], flush=True)
