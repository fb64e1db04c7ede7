"""One Ray Serve replica of ``lama-server --ray``: the model, loaded once, behind a deployment.

Each replica holds a :class:`~lama_server.daemon.worker.Worker` (the same code a local server
runs), so a request computes exactly what it would locally. Serve's ``@serve.batch`` gathers
concurrent requests; the batch is then split by the worker's own batch rule
(:meth:`Worker.batch_key`: same-size whole-image requests share one forward, refinement runs
alone), so batching here never changes a result the local server would give.

A request is a stream of two messages: :class:`ReplicaStarted` as soon as the replica has it
(the server turns it into a progress message, and ``info`` into the replica's load), then the
outcome: a :class:`RegionOutcome`, or the final error reply's bytes. The replica returns the
region, not reply bytes, because only the server that took the request can write into the
client's pixel file.
"""

from __future__ import annotations

import asyncio
import time

import ray
import torch
from ray import serve

from lama_model.pipeline import RegionResult
from lama_server.daemon.ray_messages import RegionOutcome, ReplicaSpec, ReplicaStarted
from lama_server.daemon.scheduler import Job
from lama_server.daemon.worker import Worker
from lama_server.wire.protocol import Request


def _region_outcome(
    req: Request, result: RegionResult, queue_ms: float, model_ms: float
) -> RegionOutcome:
    return RegionOutcome(result, queue_ms, model_ms)


class InpaintReplica:
    """The deployment's class: ``__call__`` streams one request's messages."""

    def __init__(self, spec: ReplicaSpec) -> None:
        from lama_model.factory import load_for_inference
        from lama_model.weights.checkpoint import model_source

        if spec.device == "cpu":
            torch.set_num_threads(max(1, spec.threads))
        model = load_for_inference(
            model_source(spec.model, spec.checkpoint), torch.device(spec.device),
            spec.precision, backend=spec.backend,
        )  # fmt: skip
        self.worker = Worker(
            model, model.name, model.precision, backend=spec.backend, path=model.description,
            max_batch=spec.max_batch, build_reply=_region_outcome,
        )  # fmt: skip
        if spec.warm_up:
            self.worker.warm_up()
        self.inpaint.set_max_batch_size(max(1, spec.max_batch))
        self.inpaint.set_batch_wait_timeout_s(spec.batch_wait if spec.max_batch > 1 else 0.0)
        context = serve.get_replica_context()
        self.started = ReplicaStarted(
            replica=context.replica_id.unique_id,
            actor=ray.get_runtime_context().get_actor_name() or "",
            node=ray.util.get_node_ip_address(),
            device=str(self.worker.device),
        )  # fmt: skip

    def describe(self) -> dict:
        """The served model as ``info`` reports it."""
        w = self.worker
        return {"model": w.model_name, "precision": w.precision, "path": w.path,
                "refine": w.refine_available, "device": str(w.device)}  # fmt: skip

    async def __call__(self, request: Request):
        yield self.started
        yield await self.inpaint(request)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def inpaint(self, requests: list[Request]) -> list:
        # The model runs in a thread: the replica's event loop stays free for Serve's health
        # checks and for cancellations while a forward takes seconds.
        return await asyncio.to_thread(self._run, requests)

    def _run(self, requests: list[Request]) -> list:
        """The outcome of each request, grouped by the worker's batch rule."""
        received = time.monotonic()
        jobs = [Job(request, [b""], received=received) for request in requests]
        groups: dict[object, list[int]] = {}
        for index, job in enumerate(jobs):
            key = self.worker.batch_key(job.request)
            groups.setdefault(("alone", index) if key is None else key, []).append(index)
        outcomes: list = [None] * len(jobs)
        for indices in groups.values():
            batch = [jobs[i] for i in indices]
            for i, outcome in zip(indices, self.worker.run_batch(batch, _no_progress), strict=True):
                outcomes[i] = outcome
        return outcomes


def _no_progress(job: Job, message: bytes) -> None:
    """Progress inside a replica stays there: the server reports started and done."""
