"""The served segmenter: the official ``SamPredictor``'s steps around :class:`Segmenter`.

``embed``: resize the longest side to the input size (bilinear, with PIL's antialiasing, as
the official ``ResizeLongestSide``), normalise, pad, encode. ``predict``: prompts to input
pixels, decode, masks back to the image's size, threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lama_model.errors import PromptError
from lama_model.interface import ImageEmbedding
from lama_model.segment.encoder_runtime import image_encoder
from lama_model.segment.net.decoder import DecoderImage
from lama_model.segment.net.model import MASK_THRESHOLD, Segmenter
from lama_model.segment.net.tiny_vit import fold_batch_norms
from lama_model.segment.prompts import check_box, check_points


def resized_shape(size: tuple[int, int], longest: int) -> tuple[int, int]:
    """(h, w) once the longest side of ``size`` is ``longest``, rounded as the official code."""
    scale = longest / max(size)
    return int(size[0] * scale + 0.5), int(size[1] * scale + 0.5)


@dataclass(frozen=True)
class SamEmbedding(ImageEmbedding):
    """An :class:`ImageEmbedding` with the decoder's per-image work kept beside it
    (:meth:`Segmenter.decoder_image`: 10 MiB beside the 4 MiB of features for MobileSAM):
    each prompt then runs only what depends on it."""

    decoder_image: DecoderImage


class SegmentPredictor:
    """A :class:`~lama_model.interface.ServedSegmenter` running a :class:`Segmenter`, its
    image encoder on ``runtime`` (see :func:`~lama_model.segment.encoder_runtime.image_encoder`;
    the description ends with the one that runs, and why when ``auto`` fell back)."""

    def __init__(
        self, model: Segmenter, device: torch.device, description: str, runtime: str = "torch"
    ):
        self.model = fold_batch_norms(model.to(device).eval())
        self.model.image_encoder.to(memory_format=torch.channels_last)
        self.device = device
        config = self.model.config
        self.encoder = image_encoder(
            self.model.image_encoder, config.name, config.image_size, device, runtime
        )
        self.description = f"{description}, encoder on {self.encoder.runtime}"
        with torch.inference_mode():  # depends on the weights alone: once, not per prompt
            # Channels-last, the decoder's token layout: each embedding's DecoderImage then
            # shares this tensor instead of keeping a 4 MB copy of it.
            pe = self.model.prompt_encoder.dense_pe()
            self.image_pe = pe.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """See :meth:`lama_model.interface.ServedSegmenter.embed`."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise PromptError(
                f"the image must be (H, W, 3) uint8 RGB, not {image.shape} {image.dtype}"
            )
        original = (int(image.shape[0]), int(image.shape[1]))
        h, w = resized_shape(original, self.model.config.image_size)
        resized = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        tensor = torch.from_numpy(resized).permute(2, 0, 1)[None].float().to(self.device)
        features = self.encoder(self.model.preprocess(tensor))
        decoder_image = self.model.decoder_image(features, self.image_pe)
        return SamEmbedding(features, original, (h, w), decoder_image)

    def predict(
        self,
        embedding: ImageEmbedding,
        box: tuple[float, float, float, float] | None = None,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """See :meth:`lama_model.interface.ServedSegmenter.predict`."""
        with torch.inference_mode():
            # Of the three masks a lone point asks for, only the best is upscaled and then
            # scaled to the image's size: the others would cost as much each.
            best, _ = self.decode(embedding, box, points, labels, best_only=True)
            logits = self.model.postprocess(best, embedding.input_size, embedding.original_size)
        return (logits[0, 0] > MASK_THRESHOLD).cpu().numpy()

    @torch.inference_mode()
    def predict_logits(
        self,
        embedding: ImageEmbedding,
        box: tuple[float, float, float, float] | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (1, M, H, W) at the image's size and their predicted IoU (1, M)."""
        low_res, iou = self.decode(embedding, box, points, labels)
        return self.model.postprocess(low_res, embedding.input_size, embedding.original_size), iou

    @torch.inference_mode()
    def decode(
        self,
        embedding: ImageEmbedding,
        box: tuple[float, float, float, float] | None,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        best_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked prompts to low-resolution mask logits (1, M, 4·rows, 4·columns) of the
        image tokens :meth:`Segmenter.mask_grid` keeps (256² for a square image) and IoU
        (1, M); ``best_only``: M = 1, the mask of the highest predicted IoU."""
        if box is None and points is None:
            raise PromptError("no prompt: give a box, points, or both")
        size = embedding.original_size
        scale = torch.tensor(
            [embedding.input_size[1] / size[1], embedding.input_size[0] / size[0]],
            device=self.device,
        )
        boxes = None
        if box is not None:
            corners = torch.as_tensor(check_box(box, size), dtype=torch.float32, device=self.device)
            boxes = (corners.view(2, 2) * scale).view(1, 4)
        prompt_points = None
        if points is not None:
            coords, marks = check_points(points, labels, size)
            xy = torch.as_tensor(coords, dtype=torch.float32, device=self.device) * scale
            prompt_points = (xy[None], torch.as_tensor(marks, device=self.device)[None])
        multimask = box is None and points is not None and len(points) == 1
        if isinstance(embedding, SamEmbedding):
            image = embedding.decoder_image
        else:  # an embedding made elsewhere: the per-image work once more
            image = self.model.decoder_image(embedding.features, self.image_pe)
        grid = self.model.mask_grid(embedding.input_size)
        return self.model.decode(image, prompt_points, boxes, multimask, best_only, grid)
