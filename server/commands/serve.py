"""``lama-server``: run the daemon, query it, install the host plugins.

lama-server [--model PATH|NAME] [--checkpoint best|last|PATH] [--device auto|cuda|cpu|mps]
            [--listen ENDPOINT] ...
lama-server ping [ENDPOINT] [--token-file F]
lama-server info [ENDPOINT] [--token-file F]
lama-server install-plugin krita|gimp [--dest DIR] [--gimp-version 3.N]
lama-server package-plugin krita -o FILE.zip
lama-server install-service [--dest FILE | --print] [-- SERVER FLAGS]
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lama_client.client import DEFAULT_ENDPOINT
from lama_model.choices import BACKENDS, CHECKPOINT_HELP, PRECISIONS, SEGMENTERS
from lama_model.errors import (
    BackendError,
    CheckpointError,
    DeviceError,
    PrecisionError,
    WeightsError,
    one_line,
)
from lama_server import __version__
from lama_server.commands import exit_codes

if TYPE_CHECKING:  # imported where used: `lama-server --help` must not load torch
    from lama_model.interface import ServedModel
    from lama_server.daemon.ray_serve_backend import RayServeBackend
    from lama_server.daemon.router import ServerConfig
    from lama_server.daemon.segmenting import SegmentWorker
    from lama_server.daemon.worker import Worker

log = logging.getLogger("lama_server")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lama-server",
        description="Local LaMa inpainting daemon for the Krita and GIMP plugins.",
        epilog="Other commands: lama-server ping|info [ENDPOINT]; "
        "lama-server install-plugin krita|gimp; lama-server package-plugin krita -o FILE.zip; "
        "lama-server install-service (a systemd user unit)",
    )
    _add_model_arguments(p)
    _add_segment_arguments(p)
    _add_serving_arguments(p)
    _add_ray_arguments(p)
    p.add_argument("--no-warmup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--version", action="version", version=f"lama-server {__version__}")
    return p


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which model runs where, and how."""
    p.add_argument("--model", default="big-lama", help="model folder/file or known name")
    p.add_argument("--checkpoint", metavar="best|last|PATH", help=CHECKPOINT_HELP)
    p.add_argument(
        "--device", default="auto", metavar="DEVICE[,DEVICE...]",
        help="auto, cpu, cuda, cuda:N, mps; several (cuda:0,cuda:1 or cuda:all) run one worker "
        "with its own model per device behind the one endpoint",
    )
    p.add_argument(
        "--batch", type=int, default=None, metavar="N",
        help="run up to N concurrent same-size requests in one forward (default 8 on CUDA, "
        "1 elsewhere)",
    )
    p.add_argument(
        "--batch-wait-ms", type=float, default=2.0, metavar="MS",
        help="how long a request waits for others to batch with (default 2)",
    )
    p.add_argument(
        "--precision", default="auto", choices=PRECISIONS,
        help="auto: measured once per machine and model: bf16/fp16/tf32 where faster than "
        "fp32 with PSNR >= 40 dB, else fp32 (TF32 off on CUDA)",
    )
    p.add_argument(
        "--backend", default="torch", choices=BACKENDS,
        help="torch (fused fast path) or onnxruntime (exports the model once, or give an .onnx)",
    )
    p.add_argument(
        "--compile", action="store_true",
        help="torch.compile the model (CUDA: per size bucket in the background, serving "
        "uncompiled meanwhile; kernels cached in the user cache)",
    )
    p.add_argument(
        "--allow-torchscript", action="store_true",
        help="load a TorchScript model file: it runs the code it holds, so only trusted files",
    )  # fmt: skip


def _add_segment_arguments(p: argparse.ArgumentParser) -> None:
    """The segmenter behind ``segment`` (the plug-ins' "Select object"), loaded on first use."""
    p.add_argument(
        "--segment-model", default=SEGMENTERS[0], metavar="NAME|PATH",
        help=f"segmenter for 'Select object': {', '.join(SEGMENTERS)} (downloaded on first "
        f"use) or a checkpoint file (default {SEGMENTERS[0]}; loaded on the first request)",
    )
    p.add_argument(
        "--no-segment", action="store_true",
        help="serve no segmenter: 'Select object' requests get a one-line refusal",
    )


def _add_serving_arguments(p: argparse.ArgumentParser) -> None:
    """Where the server listens, for whom, and how much it accepts."""
    from lama_server.wire.protocol import Limits

    limits = Limits()
    p.add_argument(
        "--listen", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
        help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT}; ipc:// works)",
    )
    p.add_argument(
        "--max-pixels", type=int, default=limits.max_pixels, metavar="N",
        help="largest window accepted, in pixels",
    )
    p.add_argument(
        "--queue", type=int, default=limits.queue, metavar="N",
        help="requests waiting beyond the running one; more get 'busy'",
    )
    p.add_argument("--token-file", type=Path, help="token file (default: per-user config folder)")
    p.add_argument(
        "--allow-remote", action="store_true",
        help="allow a non-loopback --listen address (then CURVE encryption is on)",
    )
    p.add_argument(
        "--no-pixel-files", action="store_true",
        help="local clients send pixels inside messages instead of through shared files",
    )  # fmt: skip


def _add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """``--ray``: the same endpoint, its jobs on a Ray Serve deployment (README "Scaling out")."""
    p.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run inpaint jobs on a Ray Serve deployment (pip install 'lama-inpaint[ray]'): "
        "ADDRESS of the cluster's head (auto: the cluster this machine is in; none given: "
        "start Ray on this machine); the endpoint, token and plug-ins stay the same",
    )
    p.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="with --ray: replicas, each holding the model (default 1)")
    p.add_argument("--min-replicas", type=int, default=None, metavar="N",
                   help="with --ray: autoscale between --min-replicas and --max-replicas")
    p.add_argument("--max-replicas", type=int, default=None, metavar="N")
    p.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                   help="with --ray: GPUs per replica (fractions share one GPU); 0: CPU")
    p.add_argument("--ray-cpus", type=float, default=1.0, metavar="C",
                   help="with --ray: CPUs per CPU replica (also its torch threads; default 1)")
    p.add_argument("--ray-app", default="lama-inpaint", metavar="NAME",
                   help="with --ray: the Serve application's name (one per server on a cluster)")
    p.add_argument("--ray-timeout", type=float, default=60.0, metavar="S",
                   help="with --ray: seconds for a replica to take a request, else the client "
                   "hears 'unavailable' (default 60)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    if command in ("ping", "info"):
        return _query(command, args[1:])
    if command in ("install-plugin", "package-plugin"):
        return _plugins(command, args[1:])
    if command == "install-service":
        from lama_server.commands import service

        return service.main(args[1:])
    return serve(_serve_parser().parse_args(args))


def serve(args: argparse.Namespace) -> int:
    """Take the endpoint, load the model, warm it up, serve until SIGINT/SIGTERM; 0 on a clean
    stop. The endpoint comes first: a busy one fails in a moment, not after the model loaded."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s lama-server %(levelname)s %(message)s"
    )
    problem = _argument_problem(args)
    if problem:
        print(f"lama-server: error: {problem}", file=sys.stderr)
        return 2
    from lama_server.daemon.router import Server

    try:
        config, token_path = _server_config(args)
    except OSError as exc:
        print(f"lama-server: error: {exc}", file=sys.stderr)
        return 1
    server = Server(config)
    try:
        server.bind()
    except OSError as exc:  # zmq.ZMQError is an OSError too
        print(f"lama-server: error: {_bind_failure(args.listen, exc)}", file=sys.stderr)
        return 1
    try:
        workers, devices = _start_workers(args)
    except Exception as exc:
        server.close()
        message, code = _start_failure(exc)
        print(f"lama-server: error: {message}", file=sys.stderr)
        return code

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def ready(endpoint: str) -> None:
        print(f"lama-server ready on {endpoint} (model {workers[-1].model_name}, {devices}, "
              f"{workers[-1].path}; token file {token_path})", flush=True)  # fmt: skip

    try:
        server.serve(workers, on_ready=ready, segment_worker=_segment_worker(args, workers))
    except Exception as exc:
        print(f"lama-server: error: cannot serve on {args.listen}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.ray is not None:  # frees the replicas' CPUs/GPUs on the cluster
            workers[0].close()
    log.info("stopped")
    return 0


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line, or None."""
    from lama_server.daemon.auth import is_loopback_endpoint

    if not is_loopback_endpoint(args.listen) and not args.allow_remote:
        return (f"{args.listen} is not a loopback address; anyone on the network could use it. "
                "Pass --allow-remote to serve remotely (CURVE-encrypted).")  # fmt: skip
    if args.batch is not None and not 1 <= args.batch <= 64:
        return "--batch must be in 1..64"
    if args.max_pixels < 64 * 64 or args.queue < 1:
        return "--max-pixels must be >= 4096 and --queue >= 1"
    return _ray_problem(args)


def _ray_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the ``--ray`` flags, in one line, or None."""
    scaling = (args.replicas, args.min_replicas, args.max_replicas)
    if args.ray is None:
        if any(n is not None for n in scaling) or args.ray_gpus:
            return "--replicas, --min-replicas, --max-replicas and --ray-gpus need --ray"
        return None
    if args.replicas is not None and (args.min_replicas or args.max_replicas):
        return "give either --replicas or --min-replicas/--max-replicas, not both"
    low, high = args.min_replicas or 1, args.max_replicas or args.min_replicas or 1
    if not (args.replicas or 1) >= 1 or not 0 <= low <= high or high < 1:
        return "--replicas must be >= 1 and 0 <= --min-replicas <= --max-replicas (>= 1)"
    if args.ray_gpus < 0 or args.ray_cpus <= 0 or args.ray_timeout <= 0:
        return "--ray-gpus must be >= 0, --ray-cpus and --ray-timeout > 0"
    if args.device not in ("auto", "cpu", "cuda"):
        return "with --ray the replicas choose their device: --ray-gpus G for CUDA, else CPU"
    try:
        import ray.serve  # noqa: F401  (only to say how to install it)
    except ImportError:
        return "--ray needs Ray Serve: pip install 'lama-inpaint[ray]'"
    return None


def _server_config(args: argparse.Namespace) -> tuple[ServerConfig, Path]:
    """The server's configuration (the token made if there is none, and for remote serving the
    CURVE keys), and the token file's path."""
    from lama_server.daemon.auth import (
        is_loopback_endpoint,
        load_or_create_curve_keys,
        load_or_create_token,
    )
    from lama_server.daemon.router import ServerConfig
    from lama_server.wire.protocol import Limits

    token, token_path = load_or_create_token(args.token_file)
    curve_secret = None
    if not is_loopback_endpoint(args.listen):
        public, curve_secret = load_or_create_curve_keys(token_path.parent)
        log.info("remote serving: clients need the server public key %s", public.decode())
    limits = Limits(max_pixels=args.max_pixels, queue=args.queue)
    config = ServerConfig(
        args.listen, token, limits, curve_secret, pixel_files=not args.no_pixel_files
    )
    return config, token_path


def _bind_failure(endpoint: str, exc: OSError) -> str:
    """Why the endpoint cannot be had, in one line; when it is taken, what probably took it."""
    if exc.errno != errno.EADDRINUSE:
        return f"cannot serve on {endpoint}: {exc}"
    return (f"cannot serve on {endpoint}: {exc.strerror or exc}; a lama-server is probably "
            f"running there already (check with: lama-server ping {endpoint}), or pass "
            "--listen with another address")  # fmt: skip


def _start_workers(args: argparse.Namespace) -> tuple[list[Worker], str]:
    """Load one model per device, each behind its own worker, and warm them up; the workers
    and the devices as ``--device`` named them."""
    from lama_model.devices import resolve_devices
    from lama_model.factory import load_for_inference
    from lama_model.weights.checkpoint import model_source
    from lama_server.daemon.worker import Worker

    if args.ray is not None:
        return _start_ray_backend(args)
    devices = resolve_devices(args.device)
    source = model_source(args.model, args.checkpoint)
    workers = []
    locks: dict[str, threading.Lock] = {}  # one per GPU that several workers share
    gpu_keys = [_gpu_key(d) for d in devices]
    for device in devices:
        log.info("loading model %s on %s (backend %s)", source, device, args.backend)
        model = load_for_inference(
            source, device, args.precision, backend=args.backend, compile=args.compile,
            allow_torchscript=args.allow_torchscript, background=True,
        )  # fmt: skip
        path = inference_path(model, args.precision)
        precision = model.precision
        log.info("inference path on %s: %s", device, path)
        batch = args.batch or (8 if device.type == "cuda" else 1)
        lock = None
        if device.type == "cuda" and gpu_keys.count(_gpu_key(device)) > 1:
            lock = locks.setdefault(_gpu_key(device), threading.Lock())
        workers.append(
            Worker(model, model.name, precision, backend=args.backend, path=path,
                   max_batch=batch, batch_wait=args.batch_wait_ms / 1000, device_lock=lock,
                   describe=functools.partial(_described, model, args.precision))
        )  # fmt: skip
    if not args.no_warmup:
        for worker in workers:
            log.info("warm-up forward on %s took %.2f s", worker.device, worker.warm_up())
    return workers, ",".join(str(d) for d in devices)


def _start_ray_backend(args: argparse.Namespace) -> tuple[list[RayServeBackend], str]:
    """Deploy the model on Ray Serve and wait until a replica holds it (``--ray``)."""
    from lama_server.daemon.ray_messages import RaySettings, ReplicaSpec
    from lama_server.daemon.ray_serve_backend import RayServeBackend

    device = "cuda" if args.ray_gpus > 0 else "cpu"
    spec = ReplicaSpec(
        model=str(args.model), checkpoint=args.checkpoint, device=device,
        precision=args.precision, backend=args.backend,
        max_batch=args.batch or (8 if device == "cuda" else 1),
        batch_wait=args.batch_wait_ms / 1000, threads=max(1, round(args.ray_cpus)),
        warm_up=not args.no_warmup,
    )  # fmt: skip
    autoscale = args.min_replicas is not None or args.max_replicas is not None
    low = args.min_replicas if args.min_replicas is not None else 1
    settings = RaySettings(
        address=None if args.ray == "local" else args.ray, app=args.ray_app, spec=spec,
        replicas=None if autoscale else (args.replicas or 1), min_replicas=low,
        max_replicas=args.max_replicas or max(low, 1), cpus=args.ray_cpus, gpus=args.ray_gpus,
        request_timeout=args.ray_timeout,
    )  # fmt: skip
    log.info("deploying %s on Ray Serve (%s)", args.model, args.ray)
    backend = RayServeBackend(settings)
    return [backend], backend.device


def _segment_worker(args: argparse.Namespace, workers: list[Worker]) -> SegmentWorker | None:
    """The segment worker (its model loads on the first request, on the first worker's
    device), or None with ``--no-segment``."""
    if args.no_segment:
        return None
    from lama_server.daemon.segmenting import SegmentWorker

    device = "cpu" if args.ray is not None else str(workers[0].device)  # segment runs here
    return SegmentWorker(args.segment_model, device)


def _start_failure(exc: Exception) -> tuple[str, int]:
    """Why the model did not start, in one line (a model that fails to run: no traceback), and
    the exit code: a configuration error (missing model, bad device or precision) exits with
    ``exit_codes.CONFIG`` so that systemd does not restart what a restart cannot fix."""
    if isinstance(exc, (BackendError, CheckpointError, DeviceError, WeightsError, PrecisionError)):
        return str(exc), exit_codes.CONFIG
    from lama_server.daemon.ray_serve_backend import RayServeError

    if isinstance(exc, (OSError, RayServeError)):
        return str(exc), exit_codes.FAILED
    log.debug("start-up failed", exc_info=exc)
    return f"the model failed to run: {one_line(exc)}", exit_codes.FAILED


def inference_path(model: ServedModel, asked: str) -> str:
    """The path in words with why ``auto`` chose it, e.g. ``fp32+fused (bf16 was 0.95x)``."""
    path = model.description
    choice = model.choice
    if asked == "auto" and choice is not None and choice.reason:
        return f"{path} ({choice.reason})"
    return path


def _described(model: ServedModel, asked: str) -> tuple[str, str]:
    """The model's precision and path now (``auto`` may switch after measuring)."""
    return model.precision, inference_path(model, asked)


def _gpu_key(device) -> str:
    """``cuda`` and ``cuda:N`` of the same GPU give the same key."""
    if device.type != "cuda":
        return str(device)
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index}"


def _query(command: str, rest: Sequence[str]) -> int:
    from lama_client.client import LamaClient, LamaError

    p = argparse.ArgumentParser(prog=f"lama-server {command}")
    p.add_argument("endpoint", nargs="?", default=DEFAULT_ENDPOINT)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--server-key", help="CURVE public key of a remote server (Z85 text)")
    p.add_argument(
        "--token-file",
        type=Path,
        help="the server's token file (default: $LAMA_TOKEN, else $LAMA_TOKEN_FILE, else the "
        "per-user config folder)",
    )
    args = p.parse_args(rest)
    token = None
    if args.token_file is not None:  # an explicit file wins over $LAMA_TOKEN
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"lama-server {command}: cannot read the token file: {exc}", file=sys.stderr)
            return 1
    try:
        with LamaClient(
            args.endpoint, token, timeout=args.timeout, server_key=args.server_key
        ) as client:
            reply = client.ping() if command == "ping" else client.info()
    except LamaError as exc:
        print(f"lama-server {command}: {exc.message}", file=sys.stderr)
        return 1
    if command == "ping":
        print(f"pong from {args.endpoint} (lama-server {reply.get('version')})")
    else:
        print(json.dumps(reply, indent=2, sort_keys=True))
    return 0


def _plugins(command: str, rest: Sequence[str]) -> int:
    from lama_server.commands import plugins as plugin_install

    p = argparse.ArgumentParser(prog=f"lama-server {command}")
    p.add_argument("host", choices=plugin_install.HOSTS)
    if command == "install-plugin":
        p.add_argument("--dest", type=Path, help="plugin folder (default: every one the host has)")
        p.add_argument("--gimp-version", help="install only for this GIMP series, e.g. 3.2")
    else:
        p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(rest)
    try:
        if command == "install-plugin":
            done = plugin_install.install_plugin(
                args.host, args.dest, gimp_version=args.gimp_version
            )
            for item in done:
                print(f"installed the {args.host} plugin in {item.path} ({item.label})")
            if args.dest is None:
                for note in plugin_install.install_notes(args.host, args.gimp_version):
                    print(f"note: {note}")
            print(plugin_install.AFTER_INSTALL[args.host])
        else:
            path = plugin_install.package_plugin(args.host, args.output)
            print(f"wrote {path}")
    except (OSError, ValueError) as exc:
        print(f"lama-server {command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
