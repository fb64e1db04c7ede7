"""The inpainting request path as tensor ops on the model's device.

:mod:`lama_model.pipeline.host` does its pre- and post-processing in NumPy on the host,
which is right for a CPU model but, on a GPU, costs more than the model itself (mask growing,
feathering, float conversion, compositing and several host↔device copies per window). Here
the same steps run on the model's device:

- the pixels of the region the request touches go up **once**, in their own dtype
  (uint8/uint16/float32: a quarter of the bytes of float32 for 8-bit images) through a
  pinned host buffer that is reused across requests, and are converted there;
- mask grow (max-pool / cross dilation), blend weights, padding, resizing and compositing are
  tensor ops;
- the composited region and its blend weights come back in one synchronisation, again
  through reused pinned buffers.

The results equal the NumPy path's on the same device (checked on CPU by
``tests/test_device_path.py``); on a GPU the model's own arithmetic differs anyway.
The work is split into :meth:`DeviceInpainter.prepare`, :meth:`~DeviceInpainter.forward`
and :meth:`~DeviceInpainter.finish` so that a server can run several requests' windows in
one batched forward (:func:`forward_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lama_model.geometry import (
    Box,
    blend_weights_tensor,
    bounding_box,
    colour_channels,
    exact_divide,
    pad_amount,
    pad_symmetric,
    pixel_scale,
)
from lama_model.interface import ServedModel
from lama_model.pipeline.options import (
    InpaintOptions,
    InpaintResult,
    ProgressFn,
    RegionResult,
    active_box,
    as_hwc,
    as_mask,
    plan_windows,
    resolved_strategy,
)


class PinnedStaging:
    """Page-locked host buffers, grown on demand and reused (one per direction and slot).

    Fresh ``pin_memory()`` per request cost ~4 ms at 1024² in the GPU profile; these stay.
    Only for CUDA devices; on a CPU device the arrays are wrapped without copies instead.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        # The last asynchronous copy out of each upload slot: the slot is only refilled
        # after it finished (batched requests upload one after another).
        self._in_flight: dict[str, torch.cuda.Event] = {}

    def buffer(self, slot: str, nbytes: int) -> torch.Tensor:
        """A pinned uint8 tensor of at least ``nbytes`` for ``slot`` (contents undefined)."""
        buf = self._buffers.get(slot)
        if buf is None or buf.numel() < nbytes:
            # Grow by 25 % so a slowly growing stream of sizes does not re-pin every time.
            size = max(nbytes, int(buf.numel() * 1.25) if buf is not None else 0)
            buf = torch.empty(size, dtype=torch.uint8, pin_memory=True)
            self._buffers[slot] = buf
        return buf[:nbytes]

    def upload(self, slot: str, array: np.ndarray, device: torch.device) -> torch.Tensor:
        """``array`` on ``device`` (same dtype and shape), through the pinned ``slot``."""
        array = np.ascontiguousarray(array)
        pending = self._in_flight.pop(slot, None)
        if pending is not None:
            pending.synchronize()
        staged = self.buffer(slot, array.nbytes)
        np.copyto(staged.numpy().view(array.dtype).reshape(array.shape), array)
        on_device = staged.to(device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        self._in_flight[slot] = event
        return on_device.view(_TORCH_DTYPES[array.dtype]).view(array.shape)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() for b in self._buffers.values())


# uint16 travels as int16 (same bits) because torch's uint16 supports few operations.
_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.int16,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.float32): torch.float32,
    np.dtype(bool): torch.bool,
}


@dataclass
class Window:
    """One generator run of a prepared request: padded inputs and where the output goes."""

    box: Box  # in image coordinates
    scale: float
    image: torch.Tensor  # (1, 3, H', W') float, padded to the model's multiple
    hole: torch.Tensor  # (1, 1, H', W') float 0/1
    size: tuple[int, int]  # (h, w) before padding (after scaling)
    prediction: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


@dataclass
class Prepared:
    """A request after :meth:`DeviceInpainter.prepare`: device tensors and the plan."""

    image: np.ndarray  # the caller's array (the result starts as its copy)
    dtype: np.dtype
    channels: int
    active: Box | None  # None: empty mask, nothing to run
    region: Box | None = None  # the uploaded part of the image
    pixels: torch.Tensor | None = None  # region pixels on the device, (h, w, C) native dtype
    hole: torch.Tensor | None = None  # region hole, (h, w) bool
    alpha: torch.Tensor | None = None  # active blend weights, (h, w) float32
    windows: list[Window] = field(default_factory=list)


class DeviceInpainter:
    """:func:`~lama_model.pipeline.inpaint` with the pixel work on ``model``'s device.

    Owns the pinned staging buffers, so keep one per model (one per worker thread) and call
    it for every request. Not thread-safe.
    """

    def __init__(self, model: ServedModel, device: torch.device | None = None) -> None:
        self.model = model
        self.device = device or torch.device(model.device)  # where it computes
        self.multiple = int(model.size_multiple)
        self.staging = PinnedStaging() if self.device.type == "cuda" else None

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
        progress: ProgressFn | None = None,
    ) -> InpaintResult:
        return self.region(image, mask, options, progress).full()

    def region(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
        progress: ProgressFn | None = None,
    ) -> RegionResult:
        """Like calling the inpainter, but only the touched region comes back (no full copy)."""
        report = progress or (lambda _f, _s: None)
        report(0.0, "prepare")
        prepared = self.prepare(image, mask, options)
        for i, window in enumerate(prepared.windows):
            report(0.05 + 0.9 * i / len(prepared.windows), "inpaint")
            self.forward_window(window)
        report(0.95, "composite")
        result = self.finish_region(prepared)
        report(1.0, "done")
        return result

    # --- the three stages --------------------------------------------------------------

    def prepare(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        options: InpaintOptions = InpaintOptions(),  # noqa: B008 - frozen dataclass
    ) -> Prepared:
        """Validate, upload, compute the hole and blend weights, cut the padded windows."""
        pixels = as_hwc(image)
        mask8 = as_mask(mask, pixels.shape[:2])
        prepared = Prepared(image, pixels.dtype, pixels.shape[2], None)
        bbox = bounding_box(mask8)
        if bbox is None:
            return prepared
        h, w = mask8.shape
        active = active_box(bbox, options, h, w)
        mask_d = self._upload("mask", mask8[active.slices])
        hole_a, alpha_a = blend_weights_tensor(mask_d, options.mask_grow, options.feather)
        if resolved_strategy(options, h, w) == "crop":
            # The plan needs the hole's shape on the host: a small bool download.
            hole_full = np.zeros((h, w), dtype=bool)
            hole_full[active.slices] = hole_a.cpu().numpy()
            plan = plan_windows(hole_full, active, options, h, w)
        else:
            plan = plan_windows(np.zeros((0, 0), bool), active, options, h, w)
        region = active
        for box, _ in plan:
            region = region.union(box)
        pix_d = self._upload("pixels", _wire_view(pixels[region.slices]))
        hole_r = torch.zeros(region.height, region.width, dtype=torch.bool, device=self.device)
        hole_r[active.slices_in(region)] = hole_a
        prepared.active, prepared.region = active, region
        prepared.pixels, prepared.hole, prepared.alpha = pix_d, hole_r, alpha_a
        for box, scale in plan:
            sl = box.slices_in(region)
            rgb = _float_rgb(pix_d[sl], prepared.dtype)
            prepared.windows.append(self._window(box, scale, rgb, hole_r[sl]))
        return prepared

    def forward_window(self, window: Window) -> None:
        """Run the model on one window (sets ``window.prediction``)."""
        with torch.inference_mode():
            out = self.model(window.image, window.hole)
        window.prediction = out.float()[0]

    def finish(self, prepared: Prepared) -> InpaintResult:
        """Paste the windows' fills, composite, and return the whole image."""
        return self.finish_region(prepared).full()

    def finish_region(self, prepared: Prepared) -> RegionResult:
        """Paste the windows' fills, composite, and bring the touched region home."""
        active = prepared.active
        if active is None:
            return RegionResult(prepared.image, None)
        assert prepared.pixels is not None and prepared.hole is not None
        assert prepared.alpha is not None and prepared.region is not None
        fill = torch.zeros(3, active.height, active.width, device=self.device)
        for window in prepared.windows:
            assert window.prediction is not None, "forward_window was not run"
            predicted = self._unscale(window)
            inter = window.box.intersection(active)
            if inter.height <= 0 or inter.width <= 0:
                continue
            src = predicted[(slice(None), *inter.slices_in(window.box))]
            sl = inter.slices_in(active)
            sel = prepared.hole[inter.slices_in(prepared.region)]
            fill[:, sl[0], sl[1]] = torch.where(sel, src, fill[:, sl[0], sl[1]])
        src = prepared.pixels[active.slices_in(prepared.region)]
        out = composite_tensor(src, fill, prepared.alpha, prepared.dtype)
        out_host, alpha_host = self._download(out, prepared.alpha)
        return RegionResult(prepared.image, active, out_host, alpha_host)

    # --- helpers -----------------------------------------------------------------------

    def _window(self, box: Box, scale: float, rgb: torch.Tensor, hole: torch.Tensor) -> Window:
        h, w = hole.shape
        img = rgb.permute(2, 0, 1)[None]
        hole_f = hole.float()[None, None]
        if scale < 1.0:
            sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
            img = F.interpolate(
                img, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False
            ).clamp_(0, 1)
            # A pixel is a hole at the small size if any of its source pixels is one.
            hole_f = (F.adaptive_max_pool2d(hole_f, (sh, sw)) > 0).float()
            h, w = sh, sw
        ph, pw = pad_amount(h, self.multiple), pad_amount(w, self.multiple)
        img = pad_symmetric(img, ph, pw).contiguous()
        hole_f = pad_symmetric(hole_f, ph, pw).contiguous()
        return Window(box, scale, img, hole_f, (h, w))

    def _unscale(self, window: Window) -> torch.Tensor:
        assert window.prediction is not None
        h, w = window.size
        pred = window.prediction[:, :h, :w]
        if window.scale < 1.0:
            big = F.interpolate(
                pred[None], size=(window.box.height, window.box.width), mode="bicubic",
                align_corners=False,
            )  # fmt: skip
            pred = big[0].clamp_(0, 1)
        return pred

    def _upload(self, slot: str, array: np.ndarray) -> torch.Tensor:
        if self.staging is None:
            array = np.ascontiguousarray(array).view(_wire_dtype(array.dtype))
            if not array.flags.writeable:  # e.g. a view of a request message
                array = array.copy()
            return torch.from_numpy(array).to(self.device)
        return self.staging.upload(slot, array, self.device)

    def _download(self, out: torch.Tensor, alpha: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Both tensors to host NumPy arrays with one synchronisation."""
        dtype = out.dtype
        if self.staging is None:
            return _to_numpy(out.cpu(), dtype), alpha.cpu().numpy()
        n_out = out.numel() * out.element_size()
        n_alpha = alpha.numel() * 4
        out_buf = self.staging.buffer("result", n_out)
        alpha_buf = self.staging.buffer("alpha", n_alpha)
        out_buf.view(dtype).view(out.shape).copy_(out, non_blocking=True)
        alpha_buf.view(torch.float32).view(alpha.shape).copy_(alpha, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        # Copies out of the staging buffers: the caller keeps its arrays, we keep ours.
        return (
            _to_numpy(out_buf.view(dtype).view(out.shape), dtype).copy(),
            alpha_buf.view(torch.float32).view(alpha.shape).numpy().copy(),
        )


def forward_batch(model: ServedModel, windows: list[Window]) -> None:
    """Run windows of one shape in a single forward (dynamic batching in the server)."""
    if not windows:
        return
    shape = windows[0].shape
    if any(w.shape != shape for w in windows):
        raise ValueError("windows of one batch must have the same shape")
    if len(windows) == 1:
        images, holes = windows[0].image, windows[0].hole
    else:
        images = torch.cat([w.image for w in windows])
        holes = torch.cat([w.hole for w in windows])
    with torch.inference_mode():
        out = model(images, holes).float()
    for i, window in enumerate(windows):
        window.prediction = out[i]


# --- tensor versions of the NumPy executor's pixel conversions ------------------------------


def composite_tensor(
    src: torch.Tensor, fill: torch.Tensor, alpha: torch.Tensor, dtype: np.dtype
) -> torch.Tensor:
    """``alpha · fill + (1 − alpha) · src`` in ``src``'s layout and dtype, rounded.

    ``src``: ``(h, w, C)`` pixels as uploaded; ``fill``: ``(3, h, w)`` float; where
    ``alpha == 0`` the source pixel is kept bit for bit, and alpha channels always are.
    """
    base = _float_rgb(src, dtype)
    a = alpha[:, :, None]
    blended = a * fill.permute(1, 2, 0) + (1.0 - a) * base
    channels = src.shape[2]
    colour = colour_channels(channels)
    if colour == 1:  # greyscale in, greyscale out
        blended = blended.mean(dim=2, keepdim=True)
    scale = pixel_scale(dtype)
    if np.dtype(dtype) == np.float32:
        converted = blended
    else:
        converted = torch.clamp(torch.round(blended * scale), 0, scale)
        if np.dtype(dtype) == np.uint16:
            # Back to the int16 carrier with the same bits.
            converted = converted.to(torch.int32)
            converted = torch.where(converted > 32767, converted - 65536, converted)
        converted = converted.to(src.dtype)
    touched = (alpha > 0)[:, :, None]
    out = src.clone()
    out[:, :, :colour] = torch.where(touched, converted, src[:, :, :colour])
    return out


def _float_rgb(pixels: torch.Tensor, dtype: np.dtype) -> torch.Tensor:
    """``(h, w, C)`` uploaded pixels → ``(h, w, 3)`` float32 RGB in [0, 1]."""
    colour = pixels[:, :, : colour_channels(pixels.shape[2])]
    if np.dtype(dtype) == np.uint16:
        values = colour.to(torch.int32) & 0xFFFF
    else:
        values = colour
    rgb = values.float()
    if np.dtype(dtype) != np.float32:
        rgb = exact_divide(rgb, pixel_scale(dtype))
    if rgb.shape[2] == 1:
        rgb = rgb.expand(-1, -1, 3)
    return rgb


def _wire_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.int16) if np.dtype(dtype) == np.uint16 else np.dtype(dtype)


def _wire_view(array: np.ndarray) -> np.ndarray:
    """uint16 as int16 (same bits); other dtypes unchanged. Contiguous."""
    array = np.ascontiguousarray(array)
    return array.view(_wire_dtype(array.dtype))


def _to_numpy(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    arr = t.numpy()
    return arr.view(np.uint16) if dtype == torch.int16 else arr
