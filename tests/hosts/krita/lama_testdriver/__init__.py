"""Test driver plugin: runs scenarios against the real LaMa plugin inside real Krita.

It reads a plan (JSON, path in $LAMA_TEST_PLAN), and for each scenario opens an image, sets up
the layer and the selection, triggers the real ``lama_remove_object`` action, waits for the new
layer or a message box (which it answers "No" and records), dumps raw pixels for the test to
check from outside, then quits Krita through its own ``file_quit`` action.
"""

import json
import os
import sys
import time
import traceback

from krita import Extension, Krita, Selection

# Krita 6 embeds PyQt6 and refuses PyQt5; both may be installed, so Krita's version decides.
if int(Krita.instance().version().split(".")[0]) >= 6:
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication, QComboBox, QMessageBox
else:
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QApplication, QComboBox, QMessageBox

PLAN = json.load(open(os.environ["LAMA_TEST_PLAN"])) if os.environ.get("LAMA_TEST_PLAN") else None
T0 = time.time()


def log(*args):
    print("TDRIVER %.2f" % (time.time() - T0), *args, flush=True)


class Driver:
    def __init__(self):
        self.out = PLAN["out"]
        self.scenarios = list(PLAN["scenarios"])
        self.results = []
        self.current = None
        self.deadline = 0
        self.timer = QTimer()
        self.timer.setInterval(100)
        self.timer.timeout.connect(self.poll)

    # -- scenario set-up -----------------------------------------------------------------

    def next(self):
        if not self.scenarios:
            return self.finish()
        spec = self.scenarios.pop(0)
        self.current = {"name": spec["name"], "spec": spec, "ok": False}
        try:
            self.start(spec)
        except Exception:
            self.current["error"] = traceback.format_exc()
            log(self.current["error"])
            self.results.append(self.current)
            QTimer.singleShot(0, self.next)

    def start(self, spec):
        k = Krita.instance()
        k.writeSetting("lama_inpaint", "endpoint", spec["endpoint"])
        k.writeSetting("lama_inpaint", "mask_grow", str(spec.get("mask_grow", 4)))
        k.writeSetting("lama_inpaint", "feather", str(spec.get("feather", 4)))
        k.writeSetting("lama_inpaint", "margin", str(spec.get("margin", 0)))
        k.writeSetting("lama_inpaint", "refine", "true" if spec.get("refine") else "false")
        k.writeSetting("lama_inpaint", "select_first", "true" if spec.get("select_first") else "false")
        k.writeSetting("lama_inpaint", "processing_size", spec.get("processing_size", "full"))
        doc = k.openDocument(spec["image"])
        doc.setBatchmode(True)
        k.activeWindow().addView(doc)
        if spec.get("depth", "U8") != "U8":
            doc.setColorSpace("RGBA", spec["depth"], "")
            doc.waitForDone()
        node = doc.topLevelNodes()[0]
        if spec.get("group_offset"):
            dx, dy = spec["group_offset"]
            group = doc.createGroupLayer("Group")
            doc.rootNode().addChildNode(group, None)
            layer = doc.createNode("Offset layer", "paintlayer")
            group.addChildNode(layer, None)
            w, h = doc.width(), doc.height()
            layer.setPixelData(node.pixelData(0, 0, w, h), 0, 0, w, h)
            layer.move(dx, dy)
            doc.waitForDone()
            node = layer
        if spec.get("dots"):  # Select object's extra prompts: a "lama points" paint layer
            dots = doc.createNode("lama points", "paintlayer")
            doc.rootNode().addChildNode(dots, None)
            for dx, dy, size, bgr in spec["dots"]:
                dots.setPixelData(bytes(list(bgr) + [255]) * (size * size), dx, dy, size, size)
            doc.waitForDone()
        doc.setActiveNode(node)
        x, y, w, h = spec["selection"]
        selection = Selection()
        selection.select(x, y, w, h, 255)
        if spec.get("feather_selection"):  # a soft-edged selection, as Select › Feather makes
            selection.feather(spec["feather_selection"])
        doc.setSelection(selection)
        doc.waitForDone()
        self.doc, self.node = doc, node
        self.current["source_bounds"] = _rect(node.bounds())
        self.current["layer_position"] = [node.position().x(), node.position().y()]
        self.before = bytes(node.pixelData(0, 0, doc.width(), doc.height()))
        self.current["color"] = [node.colorModel(), node.colorDepth()]
        self.current["doc_size"] = [doc.width(), doc.height()]
        # What the plugin will send: the window and its pixels, computed by the plugin's core.
        from lama_inpaint import core

        window = core.context_window(core.Rect(x, y, w, h), core.Rect(0, 0, doc.width(), doc.height()),
                                     spec.get("margin", 0))
        self.window = window
        self.current["window"] = [window.x, window.y, window.w, window.h]
        self._dump("source_window", node.pixelData(window.x, window.y, window.w, window.h))
        self._dump("mask_window", selection.pixelData(window.x, window.y, window.w, window.h))
        QTimer.singleShot(200, self.trigger)

    def trigger(self, tries=10):
        doc = Krita.instance().activeDocument()
        if tries and doc is not None and doc.activeNode() is not None and doc.activeNode().name() != self.node.name():
            # Krita makes a layer added by a script active a moment later: wait for it,
            # then make the scenario's layer active again.
            doc.setActiveNode(self.node)
            QTimer.singleShot(300, lambda: self.trigger(tries - 1))
            return
        self.current["active_node"] = doc.activeNode().name() if doc and doc.activeNode() else None
        action = Krita.instance().action(self.current["spec"].get("action", "lama_remove_object"))
        self.current["action_text"] = action.text() if action else None
        self.current["t_trigger"] = time.time()
        action.trigger()
        self.deadline = time.time() + 120
        self.timer.start()

    # -- waiting for the effect ----------------------------------------------------------

    def poll(self):
        try:
            self._poll()
        except Exception:
            self.timer.stop()
            self.current["error"] = traceback.format_exc()
            log(self.current["error"])
            self.results.append(self.current)
            QTimer.singleShot(0, self.next)

    def _poll(self):
        modal = QApplication.activeModalWidget()
        if isinstance(modal, QMessageBox):
            self.current["message"] = {"title": modal.windowTitle(), "text": modal.text()}
            if self.current["spec"].get("screenshot_message"):
                self._screenshot(self.current["spec"]["screenshot_message"])
            no = modal.button(QMessageBox.StandardButton.No if hasattr(QMessageBox, "StandardButton") else QMessageBox.No)
            (no.click() if no is not None else modal.accept())
            self.timer.stop()
            QTimer.singleShot(500, self.check_after_message)
            return
        if self.current["spec"].get("action") == "lama_select_object":
            return self._poll_selection()
        siblings = self.node.parentNode().childNodes()
        names = [n.name() for n in siblings]
        if "LaMa: removed" in names and not self._progress_visible():
            self.timer.stop()
            self.current["seconds"] = round(time.time() - self.current["t_trigger"], 3)
            QTimer.singleShot(300, self.check_layer)
            return
        if time.time() > self.deadline:
            self.timer.stop()
            self.current["error"] = "timeout waiting for the plugin"
            self.results.append(self.current)
            QTimer.singleShot(0, self.next)

    def _poll_selection(self):
        """Select object: done when the selection is no longer the rectangle the scenario
        drew; then dump it."""
        w = self.window
        selection = self.doc.selection()
        now = bytes(selection.pixelData(w.x, w.y, w.w, w.h)) if selection is not None else b""
        if now and now != self._read_raw("mask_window") and not self._progress_visible():
            self.timer.stop()
            self.current["seconds"] = round(time.time() - self.current["t_trigger"], 3)
            QTimer.singleShot(300, self.check_selection)
        elif time.time() > self.deadline:
            self.timer.stop()
            self.current["error"] = "timeout waiting for the plugin to change the selection"
            self.results.append(self.current)
            QTimer.singleShot(0, self.next)

    def check_selection(self):
        doc, w = self.doc, self.window
        selection = doc.selection()
        self._dump("selected_window", selection.pixelData(w.x, w.y, w.w, w.h))
        self.current["selected_bounds"] = [selection.x(), selection.y(), selection.width(),
                                           selection.height()]
        self.current["source_unchanged"] = bytes(self.node.pixelData(0, 0, doc.width(), doc.height())) == self.before
        self.current["siblings"] = [n.name() for n in self.node.parentNode().childNodes()]
        self.current["ok"] = True
        self.results.append(self.current)
        QTimer.singleShot(0, self.next)

    def _read_raw(self, label):
        with open(os.path.join(self.out, f"{self.current['name']}.{label}.raw"), "rb") as f:
            return f.read()

    @staticmethod
    def _progress_visible():
        for widget in QApplication.topLevelWidgets():
            if widget.isVisible() and widget.windowTitle() == "LaMa":
                return True
        return False

    def check_layer(self):
        doc, node = self.doc, self.node
        siblings = node.parentNode().childNodes()
        names = [n.name() for n in siblings]
        self.current["siblings"] = names  # bottom to top
        new = siblings[names.index("LaMa: removed")]
        self.current["new_bounds"] = _rect(new.bounds())
        self.current["new_color"] = [new.colorModel(), new.colorDepth()]
        self.current["new_parent"] = new.parentNode().name()
        w = self.window
        self._dump("new_window", new.pixelData(w.x, w.y, w.w, w.h))
        after = bytes(node.pixelData(0, 0, doc.width(), doc.height()))
        self.current["source_unchanged"] = after == self.before
        self.current["ok"] = True
        shot = self.current["spec"].get("screenshot")
        if shot:
            for n in siblings:
                n.setVisible(True)
            doc.refreshProjection()
            QTimer.singleShot(800, lambda: self._finish_with_screenshot(shot))
            return
        self.results.append(self.current)
        QTimer.singleShot(0, self.next)

    def _finish_with_screenshot(self, path):
        self._screenshot(path)
        self.results.append(self.current)
        QTimer.singleShot(0, self.next)

    def check_after_message(self):
        names = [n.name() for n in self.node.parentNode().childNodes()]
        self.current["siblings"] = names
        after = bytes(self.node.pixelData(0, 0, self.doc.width(), self.doc.height()))
        self.current["source_unchanged"] = after == self.before
        # Krita is still responsive: the UI thread ran this callback and answers the API.
        self.current["responsive"] = Krita.instance().activeDocument() is not None
        self.current["ok"] = True
        self.results.append(self.current)
        QTimer.singleShot(0, self.next)

    # -- output --------------------------------------------------------------------------

    def _dump(self, label, data):
        path = os.path.join(self.out, f"{self.current['name']}.{label}.raw")
        with open(path, "wb") as f:
            f.write(bytes(data))

    def _screenshot(self, path):
        window = Krita.instance().activeWindow().qwindow()
        window.grab().save(path)

    @staticmethod
    def settings_dialog():
        """Open LaMa settings through its action, choose the last processing size and press
        OK; returns what the dialog offered and what Krita stores afterwards."""
        seen = {}

        def answer(tries=25):
            dialog = QApplication.activeModalWidget()
            if dialog is None:
                if tries:
                    QTimer.singleShot(200, lambda: answer(tries - 1))
                return
            box = dialog.findChildren(QComboBox)[0]
            seen.update(title=dialog.windowTitle(), shown=box.currentText(), tooltip=box.toolTip(),
                        items=[box.itemText(i) for i in range(box.count())])
            box.setCurrentIndex(box.count() - 1)
            dialog.accept()

        QTimer.singleShot(300, answer)
        Krita.instance().action("lama_inpaint_settings").trigger()  # returns once it closed
        seen["stored"] = Krita.instance().readSetting("lama_inpaint", "processing_size", "")
        return seen

    def finish(self):
        from lama_inpaint import qt_compat

        try:
            dialog = self.settings_dialog()
        except Exception:
            dialog = {"error": traceback.format_exc()}
        json.dump({"scenarios": self.results, "t_total": round(time.time() - T0, 2),
                   "krita_version": Krita.instance().version(), "qt_major": qt_compat.QT_MAJOR,
                   "settings_dialog": dialog},
                  open(os.path.join(self.out, "result.json"), "w"), indent=1)
        log("done", [(r["name"], r["ok"]) for r in self.results])
        for d in Krita.instance().documents():
            d.setModified(False)
        QTimer.singleShot(0, Krita.instance().action("file_quit").trigger)


def _rect(r):
    return [r.x(), r.y(), r.width(), r.height()]


def _watchdog():
    log("WATCHDOG: no progress, quitting")
    out = PLAN["out"]
    try:
        QApplication.primaryScreen().grabWindow(0).save(os.path.join(out, "watchdog.png"))
    except Exception:
        pass
    json.dump({"error": "watchdog"}, open(os.path.join(out, "result.json"), "w"))
    sys.stdout.flush()
    os._exit(3)


class TestDriverExtension(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        pass


if PLAN is not None:
    _driver = Driver()

    def _on_window_created():
        log("window created")
        QTimer.singleShot(int(PLAN.get("watchdog_ms", 240000)), _watchdog)
        QTimer.singleShot(500, _driver.next)

    Krita.instance().notifier().windowCreated.connect(_on_window_created)
Krita.instance().addExtension(TestDriverExtension(Krita.instance()))
