"""What ``lama-server --ray``'s three parts exchange: the server
(:mod:`~lama_server.daemon.ray_serve_backend`), its Ray driver process
(:mod:`~lama_server.daemon.ray_bridge`) and the Serve replicas
(:mod:`~lama_server.daemon.ray_replica`). Plain picklable dataclasses, no Ray and no torch at
import, so that each part imports them without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the pipeline imports torch
    from lama_model.pipeline import RegionResult


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica loads (it travels to the replicas' processes)."""

    model: str
    checkpoint: str | None
    device: str  # "cpu" or "cuda"
    precision: str
    backend: str
    max_batch: int
    batch_wait: float
    threads: int  # torch threads on a CPU replica (its share of the node's cores)
    warm_up: bool


@dataclass(frozen=True)
class RaySettings:
    """Where the deployment runs, how many replicas, what each asks Ray for."""

    address: str | None  # None: start a Ray instance on this machine
    app: str  # the Serve application's name on the cluster
    spec: ReplicaSpec
    replicas: int | None = 1  # fixed count, or None: autoscale between the bounds
    min_replicas: int = 1
    max_replicas: int = 1
    cpus: float = 1.0  # per replica
    gpus: float = 0.0  # per replica (fractions share a GPU); > 0 puts the model on CUDA
    start_timeout: float = 300.0  # seconds for the first replica to load the model
    request_timeout: float = 30.0  # seconds for a replica to take a request, else unavailable

    @property
    def most_replicas(self) -> int:
        return self.replicas if self.replicas is not None else self.max_replicas


@dataclass(frozen=True)
class ReplicaStarted:
    """A replica took a request: who it is and where it computes."""

    replica: str  # Serve's replica id
    actor: str  # the replica's Ray actor name (namespace "serve")
    node: str  # the node's IP address
    device: str


@dataclass(frozen=True)
class RegionOutcome:
    """What the model made for one request, and its timing on the replica."""

    result: RegionResult
    queue_ms: float
    model_ms: float
