# Executed by python-fu-eval inside gimp-console-3.N (see tests/test_gimp_e2e.py).
# Runs each scenario of the plan in $LAMA_TEST_PLAN through the real plug-in-lama-inpaint,
# non-interactively, and dumps raw pixels and layer facts for the test to check from outside.
import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PLAN = json.load(open(os.environ["LAMA_TEST_PLAN"]))
OUT = PLAN["out"]
BABL = {"u8": "R'G'B'A u8", "u16": "R'G'B'A u16", "f32": "R'G'B'A float"}
PRECISION = {"u16": Gimp.Precision.U16_NON_LINEAR, "f32": Gimp.Precision.FLOAT_NON_LINEAR}


def dump(name, label, data):
    with open(os.path.join(OUT, f"{name}.{label}.raw"), "wb") as f:
        f.write(bytes(data))


def read_all(drawable, babl):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE))


def names(image, item):
    parent = item.get_parent()
    children = parent.get_children() if parent is not None else image.get_layers()
    return [c.get_name() for c in children]  # top to bottom


def run_plugin(spec, image, target):
    """Run plug-in-lama-inpaint non-interactively on ``target`` with the scenario's options."""
    proc = Gimp.get_pdb().lookup_procedure("plug-in-lama-inpaint")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [target])
    config.set_property("endpoint", spec["endpoint"])
    config.set_property("mask-grow", spec.get("mask_grow", 4))
    config.set_property("feather", spec.get("feather", 4))
    config.set_property("context-margin", spec.get("margin", 0))
    config.set_property("refine", spec.get("refine", False))
    if spec.get("select_first"):
        config.set_property("select-object-first", True)
    if spec.get("processing_size"):
        config.set_property("processing-size", spec["processing_size"])
    return proc.run(config)


def run_select(spec, image, target):
    """Run plug-in-lama-select-object non-interactively on ``target``."""
    proc = Gimp.get_pdb().lookup_procedure("plug-in-lama-select-object")
    config = proc.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [target])
    config.set_property("endpoint", spec["endpoint"])
    config.set_property("mask-grow", spec.get("mask_grow", 4))
    config.set_property("context-margin", spec.get("margin", 0))
    return proc.run(config)


def run(spec):
    res = {"name": spec["name"], "spec": spec}
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(spec["image"]))
    depth = spec.get("depth", "u8")
    if depth in PRECISION:
        image.convert_precision(PRECISION[depth])
    babl = BABL[depth]
    target = image.get_layers()[0]
    if spec.get("group_offset"):
        dx, dy = spec["group_offset"]
        group = Gimp.GroupLayer.new(image, "Group")
        image.insert_layer(group, None, 0)
        moved = target.copy()
        moved.set_name("Offset layer")
        image.insert_layer(moved, group, 0)
        moved.set_offsets(dx, dy)
        target = moved
    res["target"] = target.get_name()
    res["target_offsets"] = list(target.get_offsets()[1:])
    res["target_size"] = [target.get_width(), target.get_height()]
    res["image_size"] = [image.get_width(), image.get_height()]
    x, y, w, h = spec["selection"]
    image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
    if spec.get("feather_selection"):  # a soft-edged selection, as Select › Feather makes
        Gimp.Selection.feather(image, spec["feather_selection"])
    before = read_all(target, babl)
    dump(spec["name"], "source", before)
    selection = image.get_selection().get_buffer()
    full = Gegl.Rectangle.new(0, 0, image.get_width(), image.get_height())
    dump(spec["name"], "mask", selection.get(full, 1.0, "Y u8", Gegl.AbyssPolicy.NONE))
    layers_before = len(image.get_layers())
    channels_before = len(image.get_channels())
    selecting = spec.get("action") == "select_object"
    result = (run_select if selecting else run_plugin)(spec, image, target)
    if selecting:
        fresh = image.get_selection().get_buffer()  # the old buffer may hold stale tiles
        dump(spec["name"], "selected", fresh.get(full, 1.0, "Y u8", Gegl.AbyssPolicy.NONE))
        res["channels_added"] = len(image.get_channels()) - channels_before
    res["status"] = result.index(0).value_nick
    if result.length() > 1:
        res["error_value"] = str(result.index(1))
    res["siblings"] = names(image, target)
    res["layers_before"], res["layers_after"] = layers_before, len(image.get_layers())
    res["source_unchanged"] = read_all(target, babl) == before
    for layer in (target.get_parent().get_children() if target.get_parent() else image.get_layers()):
        if layer.get_name() == "LaMa: removed":
            res["new_offsets"] = list(layer.get_offsets()[1:])
            res["new_size"] = [layer.get_width(), layer.get_height()]
            res["new_has_alpha"] = layer.has_alpha()
            dump(spec["name"], "new", read_all(layer, babl))
    if spec.get("export"):
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image,
                       Gio.File.new_for_path(spec["export"]), None)
    image.delete()
    res["ok"] = True
    return res


def processing_size_argument():
    """What plug-in-lama-inpaint's processing-size argument offers: its label, help, choices
    (nick and label) and default, as GIMP's procedure dialog shows them."""
    spec = Gimp.get_pdb().lookup_procedure("plug-in-lama-inpaint").find_argument("processing-size")
    choice = Gimp.param_spec_choice_get_choice(spec)
    return {"label": spec.get_nick(), "help": spec.get_blurb(),
            "choices": [[nick, choice.get_label(nick)] for nick in choice.list_nicks()],
            "default": Gimp.param_spec_choice_get_default(spec)}


results = []
for spec in PLAN["scenarios"]:
    try:
        results.append(run(spec))
    except Exception:
        results.append({"name": spec["name"], "ok": False, "error": traceback.format_exc()})
try:
    size_argument = processing_size_argument()
except Exception:
    size_argument = {"error": traceback.format_exc()}
json.dump({"scenarios": results, "gimp_version": Gimp.version(), "processing_size": size_argument},
          open(os.path.join(OUT, "result.json"), "w"), indent=1)
print("GIMP DRIVER DONE", [(r["name"], r["ok"]) for r in results], flush=True)
