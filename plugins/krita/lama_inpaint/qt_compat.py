"""The Qt names the plugin uses, from PyQt5 (Krita 5) or PyQt6 (Krita 6)."""

import importlib.util


def _krita_wants_qt6() -> bool:
    """Krita 6 embeds Qt6, Krita 5 Qt5: where both PyQt packages are installed, importing the
    other one would load a second Qt into Krita, so Krita's own version decides."""
    try:
        from krita import Krita

        return int(Krita.instance().version().split(".")[0]) >= 6
    except Exception:  # outside Krita (unit tests): whichever binding is installed
        return importlib.util.find_spec("PyQt6") is not None


if _krita_wants_qt6():
    from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
    from PyQt6.QtGui import QKeySequence
    from PyQt6.QtWidgets import (
        QApplication,
        QCheckBox,
        QComboBox,
        QDialog,
        QDialogButtonBox,
        QFormLayout,
        QLineEdit,
        QMessageBox,
        QProgressDialog,
        QSpinBox,
    )

    QT_MAJOR = 6
else:
    from PyQt5.QtCore import QObject, Qt, QTimer, pyqtSignal
    from PyQt5.QtGui import QKeySequence
    from PyQt5.QtWidgets import (
        QApplication,
        QCheckBox,
        QComboBox,
        QDialog,
        QDialogButtonBox,
        QFormLayout,
        QLineEdit,
        QMessageBox,
        QProgressDialog,
        QSpinBox,
    )

    QT_MAJOR = 5

# Scoped enums in PyQt6, plain attributes in PyQt5: resolve once here.
WINDOW_MODAL = Qt.WindowModality.WindowModal if QT_MAJOR == 6 else Qt.WindowModal
MSG_YES = QMessageBox.StandardButton.Yes if QT_MAJOR == 6 else QMessageBox.Yes
MSG_NO = QMessageBox.StandardButton.No if QT_MAJOR == 6 else QMessageBox.No
BOX_OK = QDialogButtonBox.StandardButton.Ok if QT_MAJOR == 6 else QDialogButtonBox.Ok
BOX_CANCEL = QDialogButtonBox.StandardButton.Cancel if QT_MAJOR == 6 else QDialogButtonBox.Cancel
DIALOG_ACCEPTED = QDialog.DialogCode.Accepted if QT_MAJOR == 6 else QDialog.Accepted

__all__ = [
    "QApplication", "QCheckBox", "QComboBox", "QDialog", "QDialogButtonBox", "QFormLayout",
    "QKeySequence", "QLineEdit", "QMessageBox", "QObject", "QProgressDialog", "QSpinBox",
    "QTimer", "Qt", "pyqtSignal", "QT_MAJOR", "WINDOW_MODAL", "MSG_YES", "MSG_NO", "BOX_OK",
    "BOX_CANCEL", "DIALOG_ACCEPTED",
]  # fmt: skip
