"""``auto``'s slow candidates measured in the background while the quick choice serves.

Converting Big LaMa to OpenVINO and calibrating it for int8 takes minutes on a first start
with 2 cores; a server must not be deaf that long. :class:`BackgroundChoice` serves the model
``auto`` chose among the quick candidates (torch's) at once, measures the slow ones in a
thread, and switches to the winner when the measurement ends. Afterwards the decision is
cached (:class:`~lama_model.accel.precision.ChoiceCache`) like any other, so later starts
build the winner directly.

Its progress shows as a :class:`~lama_model.interface.CompileProgress` (one pending "shape"
while measuring), which ``lama-server info`` already reports per device.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

import torch

from lama_model.errors import first_line
from lama_model.interface import CompileProgress, PrecisionChoice, ServedModel, ServedWrapper

log = logging.getLogger(__name__)


class BackgroundChoice(ServedWrapper):
    """Serves ``quick`` now and ``measure()``'s model once it returns (``quick`` stays when
    it fails). Requests running at the switch finish on the model they started with."""

    def __init__(self, quick: ServedModel, measure: Callable[[], ServedModel]) -> None:
        super().__init__()
        self.inner = quick
        self.name = quick.name
        self.size_multiple = quick.size_multiple
        self.done = threading.Event()
        self.failure: str | None = None
        self._measure = measure
        self._thread = threading.Thread(target=self._run, name="lama-auto-measure", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            chosen = self._measure()
        except Exception as exc:  # a failed measurement leaves the quick model serving
            self.failure = first_line(exc)[:200]
            log.warning("background measurement failed, keeping %s: %s",
                        self.inner.description, self.failure)  # fmt: skip
        else:
            log.info("auto switched to %s (%s)", chosen.description,
                     chosen.choice.reason if chosen.choice else "")  # fmt: skip
            self.inner = chosen
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the measurement ended (True) or ``timeout`` passed (False)."""
        return self.done.wait(timeout)

    @property
    def input_device(self) -> torch.device:
        return self.inner.input_device

    @property
    def precision(self) -> str:
        return self.inner.precision

    @property
    def choice(self) -> PrecisionChoice | None:
        choice = self.inner.choice
        if choice is None or self.done.is_set():
            return choice
        return dataclasses.replace(choice, reason=f"{choice.reason}; measuring OpenVINO",
                                   settled=False)  # fmt: skip

    @property
    def description(self) -> str:
        return self.inner.description

    @property
    def compiler(self) -> CompileProgress | None:
        return self

    @property
    def ready_shapes(self) -> int:
        return int(self.done.is_set())

    @property
    def pending_shapes(self) -> int:
        return 0 if self.done.is_set() else 1

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.inner(image, mask)


__all__ = ["BackgroundChoice"]
