"""Krita glue: actions, settings dialog, progress, message boxes.

The request runs on a plain Python thread; a QTimer on the UI thread watches it, moves the
progress dialog and applies the result, so Krita never freezes and only the UI thread touches
the document.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

from krita import Extension, Krita, Selection

from . import core, lama_client  # lama_client: bundled by `lama-server install-plugin krita`
from .qt_compat import (
    BOX_CANCEL,
    BOX_OK,
    DIALOG_ACCEPTED,
    MSG_NO,
    MSG_YES,
    WINDOW_MODAL,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QKeySequence,
    QLineEdit,
    QMessageBox,
    QProgressDialog,
    QSpinBox,
    QTimer,
)

ACTION_ID = "lama_remove_object"
SELECT_ACTION_ID = "lama_select_object"
SETTINGS_ACTION_ID = "lama_inpaint_settings"
DEFAULT_SHORTCUT = "Ctrl+Alt+Shift+R"  # free in Krita's default shortcut scheme


class _Request:
    """State shared between the UI thread and the worker thread."""

    def __init__(self, job: core.Job, settings: core.Settings, select_only: bool = False) -> None:
        self.job = job
        self.settings = settings
        # Select object: the result is the object's mask. Remove object with "Select object
        # first": the object's mask replaces the selection's before inpainting.
        self.select_only = select_only
        self.segments = select_only or settings.select_first
        self.cancel = threading.Event()
        self.progress = 0.0
        self.result: bytes | None = None
        self.error: Exception | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            client_options = self.settings.client_options()
            with lama_client.LamaClient(self.settings.endpoint, **client_options) as client:
                job = self.job
                if self.segments:
                    # Remove object grows once, on the server: the object's mask goes ungrown.
                    grow = self.settings.mask_grow if self.select_only else 0
                    job.mask = core.object_mask(client, job, grow, self._on_progress,
                                                self.cancel)  # fmt: skip
                    if self.select_only:
                        self.result = job.mask
                        return
                image = lama_client.ImageData(job.window.w, job.window.h, job.format, job.pixels)
                reply = client.inpaint(image, job.mask, job.options, self._on_progress, self.cancel)
                self.result = reply.data
        except Exception as exc:  # reported on the UI thread
            self.error = exc
        finally:
            self.done.set()

    def _on_progress(self, fraction: float, stage: str) -> None:
        if self.segments and not self.select_only:  # two requests: each has half the bar
            fraction = fraction / 2 if stage in ("load", "embed", "decode") else 0.5 + fraction / 2
        self.progress = fraction


class LamaExtension(Extension):
    def __init__(self, parent) -> None:
        super().__init__(parent)
        self._active: dict | None = None

    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: N802 - Krita's API name
        action = window.createAction(ACTION_ID, "Remove object", "tools/scripts")
        action.setShortcut(QKeySequence(DEFAULT_SHORTCUT))
        action.setToolTip("Fill the selection with LaMa inpainting, on a new layer")
        action.triggered.connect(self.remove_object)
        select = window.createAction(SELECT_ACTION_ID, "Select object", "tools/scripts")
        select.setToolTip("Replace the selection with the object inside it (LaMa server)")
        select.triggered.connect(self.select_object)
        settings = window.createAction(SETTINGS_ACTION_ID, "LaMa settings…", "tools/scripts")
        settings.triggered.connect(self.show_settings)

    # -- settings ------------------------------------------------------------------------

    @staticmethod
    def settings() -> core.Settings:
        k = Krita.instance()
        return core.Settings.load(
            lambda key, default: k.readSetting(core.SETTINGS_GROUP, key, default)
        )

    def show_settings(self) -> None:
        current = self.settings()
        dialog = QDialog(self._parent_widget())
        dialog.setWindowTitle("LaMa settings")
        form = QFormLayout(dialog)
        endpoint = QLineEdit(current.endpoint)
        grow, feather, margin = QSpinBox(), QSpinBox(), QSpinBox()
        for box, value, high in ((grow, current.mask_grow, 64), (feather, current.feather, 64),
                                 (margin, current.margin, 4096)):  # fmt: skip
            box.setRange(0, high)
            box.setValue(value)
            box.setSuffix(" px")
        margin.setSpecialValueText("automatic")
        visible = QCheckBox("Use the visible image instead of the active layer")
        visible.setChecked(current.visible)
        refine = QCheckBox("Refine (sharper, slower)")
        refine.setChecked(current.refine)
        refine.setToolTip("High-resolution refinement of large fills; several times slower")
        select_first = QCheckBox("Select object first (Remove object removes the object "
                                 "inside the selection)")  # fmt: skip
        select_first.setChecked(current.select_first)
        kit = lama_client.host_kit
        size = QComboBox()
        for choice in kit.PROCESSING_SIZES:
            size.addItem(choice.label, choice.key)
        size.setCurrentIndex([c.key for c in kit.PROCESSING_SIZES].index(current.processing_size))
        size.setToolTip(kit.PROCESSING_SIZE_HELP)
        form.addRow("Server endpoint", endpoint)
        form.addRow("Grow mask by", grow)
        form.addRow("Feather", feather)
        form.addRow("Context margin", margin)
        form.addRow(kit.PROCESSING_SIZE_LABEL, size)
        form.addRow(visible)
        form.addRow(refine)
        form.addRow(select_first)
        buttons = QDialogButtonBox(BOX_OK | BOX_CANCEL)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        form.addRow(buttons)
        if dialog.exec() != DIALOG_ACCEPTED:
            return
        k = Krita.instance()
        core.Settings(endpoint.text().strip(), grow.value(), feather.value(), margin.value(),
                      visible.isChecked(), refine.isChecked(), select_first.isChecked(),
                      kit.PROCESSING_SIZES[size.currentIndex()].key).save(
            lambda key, value: k.writeSetting(core.SETTINGS_GROUP, key, value))  # fmt: skip

    # -- remove object -------------------------------------------------------------------

    def remove_object(self) -> None:
        self._start(select_only=False)

    def select_object(self) -> None:
        self._start(select_only=True)

    def _start(self, select_only: bool) -> None:
        """Read the document on the UI thread, run the request on a thread, watch it."""
        if self._active is not None:
            self._message("Already running", "A LaMa request is still in progress.")
            return
        k = Krita.instance()
        doc = k.activeDocument()
        node = doc.activeNode() if doc is not None else None
        settings = self.settings()
        try:
            job = core.prepare(doc, node, settings)
        except core.PluginError as exc:
            self._message(exc.title, exc.text)
            return
        request = _Request(job, settings, select_only)
        text = "Selecting the object…" if select_only else "Removing the object with LaMa…"
        dialog = QProgressDialog(text, "Cancel", 0, 100, self._parent_widget())
        dialog.setWindowTitle("LaMa")
        dialog.setWindowModality(WINDOW_MODAL)
        dialog.setMinimumDuration(400)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(request.cancel.set)
        timer = QTimer()
        timer.setInterval(50)
        self._active = {"request": request, "dialog": dialog, "timer": timer, "doc": doc,
                        "node": node}  # fmt: skip
        timer.timeout.connect(self._poll)
        threading.Thread(target=request.run, name="lama-request", daemon=True).start()
        timer.start()

    def _poll(self) -> None:
        active = self._active
        request = active["request"]
        active["dialog"].setValue(int(request.progress * 100))
        if not request.done.is_set():
            return
        active["timer"].stop()
        active["dialog"].close()
        self._active = None
        if request.error is not None:
            self._report(request.error)
            return
        try:
            if request.select_only:
                core.apply_selection(active["doc"], request.job, request.result, Selection)
            else:
                core.apply_result(active["doc"], active["node"], request.job, request.result)
            active["doc"].refreshProjection()
        except Exception as exc:  # a host API failure: tell the user, keep Krita alive
            title = "LaMa could not change the selection" if request.select_only else (
                "LaMa could not add the layer")  # fmt: skip
            self._message(title, str(exc))

    def _report(self, error: Exception) -> None:
        if getattr(error, "code", "") == "cancelled":
            return
        if isinstance(error, core.PluginError):
            self._message(error.title, error.text)
            return
        problem = core.explain(error)
        server = shutil.which("lama-server")
        if getattr(error, "code", "") == "unavailable" and server:
            box = QMessageBox(self._parent_widget())
            box.setWindowTitle(problem.title)
            box.setText(problem.text + "\n\nStart lama-server now?")
            box.setStandardButtons(MSG_YES | MSG_NO)
            box.setDefaultButton(MSG_NO)
            box.setEscapeButton(MSG_NO)
            if box.exec() == MSG_YES:
                subprocess.Popen([server], start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
                self._message("Starting lama-server",
                              "The server is starting (the first start downloads the model). "
                              "Run Remove object again in a few seconds.")  # fmt: skip
            return
        self._message(problem.title, problem.text)

    def _message(self, title: str, text: str) -> None:
        box = QMessageBox(self._parent_widget())
        box.setWindowTitle(title)
        box.setText(text)
        box.exec()

    @staticmethod
    def _parent_widget():
        window = Krita.instance().activeWindow()
        return window.qwindow() if window is not None else None
