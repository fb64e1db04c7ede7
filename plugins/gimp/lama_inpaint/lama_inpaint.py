#!/usr/bin/env python3
"""GIMP 3 plug-in: Filters › LaMa Inpaint and Select › Select Object (LaMa).

LaMa Inpaint sends the selected drawable's pixels around the selection, plus the selection
mask, to a running ``lama-server`` and adds the filled pixels as a new layer "LaMa: removed"
directly above the drawable, in one undo group. Select Object sends the same pixels with the
selection's bounds as a box prompt (the server's ``segment``) and replaces the selection with
the object's mask, grown by the grow setting, in one undo group; LaMa Inpaint's "Select object
first" does both in one go. Non-interactive runs (scripts, batch mode) take the options as
arguments. Runs in GIMP's own Python: standard library and GObject introspection only; the
client (the ``lama_client/`` package, with the rules both plug-ins share in its ``host_kit``)
is bundled beside this file by ``lama-server install-plugin gimp``.
"""

import os
import sys

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lama_client  # noqa: E402

PROCEDURE = "plug-in-lama-inpaint"
SELECT_PROCEDURE = "plug-in-lama-select-object"
LAYER_NAME = "LaMa: removed"
REFINE_TIMEOUT_S = 3600.0  # refinement may run for many minutes on a CPU server


def babl_format(precision):
    """(babl format, wire format) that keep the image's precision."""
    name = precision.value_nick if hasattr(precision, "value_nick") else str(precision)
    if name.startswith("u8"):
        return "R'G'B'A u8", "RGBA8"
    if name.startswith("u16"):
        return "R'G'B'A u16", "RGBA16"
    return "R'G'B'A float", "RGBAF32"  # u32, half, float, double: float keeps them best


class Failure(Exception):
    """A message for the user, and the PDB status to return."""

    def __init__(self, message, status=Gimp.PDBStatusType.EXECUTION_ERROR):
        super().__init__(message)
        self.message = message
        self.status = status


class LamaInpaint(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE, SELECT_PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        if name == SELECT_PROCEDURE:
            return self.select_procedure(name)
        proc = self.new_procedure(
            name, "LaMa Inpaint", "<Image>/Filters", "Remove the selected object with LaMa",
            "Fills the selection with LaMa inpainting (a running lama-server does the work) "
            "and adds the result as a new layer above the drawable.",
        )
        flags = GObject.ParamFlags.READWRITE
        proc.add_int_argument("mask-grow", "Grow mask", "Pixels added around the selection",
                              0, 64, 4, flags)
        proc.add_int_argument("feather", "Feather", "Soft transition width in pixels",
                              0, 64, 4, flags)
        proc.add_int_argument("context-margin", "Context margin",
                              "Pixels of context around the selection (0 = automatic)",
                              0, 4096, 0, flags)
        proc.add_boolean_argument("sample-merged", "Sample merged",
                                  "Use the visible image instead of the drawable alone",
                                  False, flags)
        # Newer arguments last, so scripts written before them keep their argument order.
        proc.add_boolean_argument("refine", "Refine (sharper, slower)",
                                  "High-resolution refinement of large fills; several times "
                                  "slower, needs a server whose model can refine", False, flags)
        proc.add_boolean_argument("select-object-first", "Select object first",
                                  "Remove the object inside the selection: the server selects "
                                  "it first (as Select › Select Object)", False, flags)
        kit = lama_client.host_kit
        sizes = Gimp.Choice.new()
        for number, size in enumerate(kit.PROCESSING_SIZES):
            sizes.add(size.key, number, size.label, kit.PROCESSING_SIZE_HELP)
        proc.add_choice_argument("processing-size", kit.PROCESSING_SIZE_LABEL,
                                 kit.PROCESSING_SIZE_HELP, sizes, kit.DEFAULT_PROCESSING_SIZE,
                                 flags)
        return proc

    def new_procedure(self, name, label, menu, blurb, help_text):
        """A procedure on one drawable of an RGB or grey image, with its menu entry, its
        documentation and the argument every procedure of this plug-in starts with: the
        server's endpoint."""
        proc = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        proc.set_image_types("RGB*, GRAY*")
        proc.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        proc.set_menu_label(label)
        proc.add_menu_path(menu)
        proc.set_documentation(blurb, help_text, name)
        proc.set_attribution("lama-inpaint contributors", "lama-inpaint contributors", "2026")
        proc.add_string_argument("endpoint", "Server endpoint", "lama-server's ZeroMQ endpoint",
                                 lama_client.DEFAULT_ENDPOINT, GObject.ParamFlags.READWRITE)
        return proc

    def select_procedure(self, name):
        proc = self.new_procedure(
            name, "Select Object (LaMa)", "<Image>/Select",
            "Select the object inside the selection",
            "Replaces a rough (rectangle, ellipse) selection around an object with the "
            "object's own outline, found by the segmenter of a running lama-server.",
        )
        flags = GObject.ParamFlags.READWRITE
        proc.add_int_argument("mask-grow", "Grow selection",
                              "Pixels added around the object", 0, 64, 4, flags)
        proc.add_int_argument("context-margin", "Context margin",
                              "Pixels of context around the selection (0 = automatic)",
                              0, 4096, 0, flags)
        proc.add_boolean_argument("sample-merged", "Sample merged",
                                  "Use the visible image instead of the drawable alone",
                                  False, flags)
        return proc

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        if run_mode == Gimp.RunMode.INTERACTIVE:
            gi.require_version("GimpUi", "3.0")
            from gi.repository import GimpUi

            GimpUi.init(PROCEDURE)
            dialog = GimpUi.ProcedureDialog.new(procedure, config, procedure.get_menu_label())
            dialog.fill(None)
            if not dialog.run():
                dialog.destroy()
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            dialog.destroy()
        try:
            if procedure.get_name() == SELECT_PROCEDURE:
                self.select_object(image, drawables, config)
            else:
                self.inpaint(image, drawables, config)
        except Failure as failure:
            if run_mode == Gimp.RunMode.INTERACTIVE:
                Gimp.message(failure.message)
            return procedure.new_return_values(failure.status, GLib.Error(message=failure.message))
        except Exception as exc:  # never a traceback in the user's face
            message = f"LaMa Inpaint failed unexpectedly: {exc}"
            if run_mode == Gimp.RunMode.INTERACTIVE:
                Gimp.message(message)
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error(message=message))
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    def read_window(self, image, drawables, config):
        """The drawable, the window around the selection, its format, pixels and mask."""
        if len(drawables) != 1:
            raise Failure("Select exactly one layer.", Gimp.PDBStatusType.CALLING_ERROR)
        drawable = drawables[0]
        if Gimp.Selection.is_empty(image):
            raise Failure("Nothing is selected: select the object to remove first.",
                          Gimp.PDBStatusType.CALLING_ERROR)
        _, _, sx0, sy0, sx1, sy1 = Gimp.Selection.bounds(image)  # image coordinates
        _, ox, oy = drawable.get_offsets()
        merged = config.get_property("sample-merged")
        if merged:
            limits = (0, 0, image.get_width(), image.get_height())
        else:
            limits = (ox, oy, ox + drawable.get_width(), oy + drawable.get_height())
        margin = config.get_property("context-margin")
        x0, y0, x1, y1 = lama_client.host_kit.context_window((sx0, sy0, sx1, sy1), limits, margin)
        if x1 <= x0 or y1 <= y0:
            raise Failure("The selection does not overlap the selected layer.",
                          Gimp.PDBStatusType.CALLING_ERROR)
        w, h = x1 - x0, y1 - y0
        babl, wire = babl_format(image.get_precision())
        pixels = self.read_pixels(image, drawable, merged, babl, x0, y0, w, h)
        selection = image.get_selection().get_buffer()
        mask = bytes(selection.get(Gegl.Rectangle.new(x0, y0, w, h), 1.0, "Y u8",
                                   Gegl.AbyssPolicy.NONE))
        if not any(mask):
            raise Failure("The selection is empty here.", Gimp.PDBStatusType.CALLING_ERROR)
        return drawable, (x0, y0, w, h), babl, wire, pixels, mask

    @staticmethod
    def object_mask(client, window, wire, pixels, mask, grow):
        """The object inside the selection (its box is the prompt), grown by ``grow``."""
        _, _, w, h = window
        kit = lama_client.host_kit
        image = lama_client.ImageData(w, h, wire, pixels)
        found = client.segment(image, box=kit.mask_box(mask, w, h),
                               progress=lambda f, _s: Gimp.progress_update(f))
        if not any(found):
            raise Failure("No object found in the selection: select a little more around it.")
        return kit.grow_mask(found, w, h, grow)

    def select_object(self, image, drawables, config):
        _, window, _, wire, pixels, mask = self.read_window(image, drawables, config)
        Gimp.progress_init("Selecting the object…")
        try:
            with lama_client.LamaClient(config.get_property("endpoint")) as client:
                found = self.object_mask(client, window, wire, pixels, mask,
                                         config.get_property("mask-grow"))
        except lama_client.LamaError as exc:
            raise Failure(lama_client.host_kit.explain(exc, "GIMP").one_line()) from None
        finally:
            Gimp.progress_end()
        self.replace_selection(image, window, found)

    @staticmethod
    def replace_selection(image, window, mask):
        """Make ``mask`` (the window's bytes) the selection, in one undo group: through a
        temporary channel, since selecting a channel is what GIMP records as one step."""
        x, y, w, h = window
        image.undo_group_start()
        try:
            channel = Gimp.Channel.new(image, "lama-object", image.get_width(),
                                       image.get_height(), 100.0, Gegl.Color.new("black"))
            image.insert_channel(channel, None, 0)
            buffer = channel.get_buffer()
            buffer.set(Gegl.Rectangle.new(x, y, w, h), "Y u8", mask)
            buffer.flush()
            image.select_item(Gimp.ChannelOps.REPLACE, channel)
            image.remove_channel(channel)
        finally:
            image.undo_group_end()
        Gimp.displays_flush()

    def inpaint(self, image, drawables, config):
        drawable, window, babl, wire, pixels, mask = self.read_window(image, drawables, config)
        x0, y0, w, h = window
        options = {"mask_grow": config.get_property("mask-grow"),
                   "feather": config.get_property("feather"), "output": "layer"}
        client_options = {}
        if config.get_property("refine"):  # only sent when on: older servers reject the key
            options["refine"] = True
            client_options["timeout"] = REFINE_TIMEOUT_S
        size = lama_client.host_kit.processing_size(config.get_property("processing-size"))
        if size.resize_limit is not None:  # only sent when not the default (older servers)
            options["resize_limit"] = size.resize_limit
        Gimp.progress_init("LaMa inpainting…")
        try:
            endpoint = config.get_property("endpoint")
            with lama_client.LamaClient(endpoint, **client_options) as client:
                if config.get_property("select-object-first"):
                    # ungrown: the inpaint request below grows it by mask-grow, once
                    mask = self.object_mask(client, window, wire, pixels, mask, 0)
                reply = client.inpaint(lama_client.ImageData(w, h, wire, pixels), mask, options,
                                       progress=lambda f, _s: Gimp.progress_update(f))
        except lama_client.LamaError as exc:
            raise Failure(lama_client.host_kit.explain(exc, "GIMP").one_line()) from None
        finally:
            Gimp.progress_end()
        self.add_layer(image, drawable, babl, reply.data, x0, y0, w, h)

    @staticmethod
    def read_pixels(image, drawable, merged, babl, x, y, w, h):
        if merged:
            visible = Gimp.Layer.new_from_visible(image, image, "lama-visible")
            try:
                buffer = visible.get_buffer()
                return bytes(buffer.get(Gegl.Rectangle.new(x, y, w, h), 1.0, babl,
                                        Gegl.AbyssPolicy.NONE))
            finally:
                visible.delete()
        _, ox, oy = drawable.get_offsets()
        rect = Gegl.Rectangle.new(x - ox, y - oy, w, h)  # drawable coordinates
        return bytes(drawable.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE))

    @staticmethod
    def add_layer(image, drawable, babl, data, x, y, w, h):
        grey = image.get_base_type() == Gimp.ImageBaseType.GRAY
        kind = Gimp.ImageType.GRAYA_IMAGE if grey else Gimp.ImageType.RGBA_IMAGE
        image.undo_group_start()
        try:
            layer = Gimp.Layer.new(image, LAYER_NAME, w, h, kind, 100.0, Gimp.LayerMode.NORMAL)
            parent = drawable.get_parent()
            image.insert_layer(layer, parent, image.get_item_position(drawable))
            layer.set_offsets(x, y)
            buffer = layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, w, h), babl, data)
            buffer.flush()
            layer.update(0, 0, w, h)
        finally:
            image.undo_group_end()
        Gimp.displays_flush()


Gimp.main(LamaInpaint.__gtype__, sys.argv)
