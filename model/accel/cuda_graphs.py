"""The CUDA-graph cache: one captured graph per input shape, replayed instead of launched.

Launch overhead dominates LaMa's many small kernels at typical sizes on a GPU; replaying a
captured graph removes it. Used by :class:`~lama_model.accel.optimize.OptimizedModel` and
:class:`~lama_model.accel.gpu_model.GpuFusedModel`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

MAX_CUDA_GRAPHS = 4  # each graph keeps its activations alive; a few sizes cover a session


class CudaGraphs:
    """CUDA graph per input shape and dtype (LRU of ``limit``): static buffers in, replay,
    copy out. CUDA only; the optimized model and the GPU model both run through it."""

    def __init__(
        self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], limit: int = MAX_CUDA_GRAPHS
    ) -> None:
        self.fn = fn
        self.limit = limit
        self.graphs: OrderedDict[tuple, tuple] = OrderedDict()

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[0] > 1:
            # Batches (the server's dynamic batching) hide their launches; a graph per batch
            # size would evict the per-size graphs and re-capture over and over.
            return self.fn(image, mask)
        key = (*image.shape, *mask.shape, image.dtype)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(image, mask)
            self.graphs[key] = entry
            if len(self.graphs) > self.limit:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        graph, static_image, static_mask, static_out = entry
        static_image.copy_(image)
        static_mask.copy_(mask)
        graph.replay()
        return static_out.clone()

    def _capture(self, image: torch.Tensor, mask: torch.Tensor) -> tuple:
        static_image, static_mask = image.clone(), mask.clone()
        # Warm-up on a side stream, as CUDA graph capture requires (cuDNN picks algorithms),
        # on the inputs' device (a worker on cuda:1 need not have it as the current device).
        device = image.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.fn(static_image, static_mask)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other workers' threads (other GPUs, or the same one) keep running.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(static_image, static_mask)
        return graph, static_image, static_mask, static_out


__all__ = ["MAX_CUDA_GRAPHS", "CudaGraphs"]
