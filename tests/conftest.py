"""Shared test fixtures: the LaMa fixtures that live beside the repository.

Every fixture folder is found here and nowhere else:

- ``LAMA_GOLDEN_DIR``: the golden folder (tiny checkpoint, inputs, official outputs), else
  ``lama-golden`` in the fixtures root;
- the fixtures root: ``LAMA_FIXTURES_DIR``, else the folder holding ``LAMA_GOLDEN_DIR``,
  else ``../shared/fixtures`` beside the repository; ``lama-train`` and ``lama-refine`` live
  there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    """The folder that holds ``lama-golden``, ``lama-train`` and ``lama-refine``."""
    if os.environ.get("LAMA_FIXTURES_DIR"):
        return Path(os.environ["LAMA_FIXTURES_DIR"]).expanduser()
    if os.environ.get("LAMA_GOLDEN_DIR"):
        return Path(os.environ["LAMA_GOLDEN_DIR"]).expanduser().parent
    return REPO.parent / "shared" / "fixtures"


GOLDEN = Path(os.environ.get("LAMA_GOLDEN_DIR") or fixtures_root() / "lama-golden").expanduser()


def _fixture_folder(name: str, marker: str) -> Path:
    """A fixtures folder, or a skip that says where it was looked for.

    Missing beside the repository: a newcomer's clone without the shared fixtures, so the
    tests that need them are skipped with the reason. Missing where LAMA_GOLDEN_DIR or
    LAMA_FIXTURES_DIR points, or with REQUIRE_FIXTURES=1 (CI): a failure.
    """
    folder = GOLDEN if name == "lama-golden" else fixtures_root() / name
    if not (folder / marker).exists():
        reason = f"FIXTURES NOT FOUND: {name} at {folder}; set LAMA_FIXTURES_DIR (README: Tests)"
        named = os.environ.get("LAMA_FIXTURES_DIR") or os.environ.get("LAMA_GOLDEN_DIR")
        if named or os.environ.get("REQUIRE_FIXTURES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
    """Tests (and the servers they start) keep model and precision caches to themselves."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LAMA_CACHE_DIR", str(tmp_path_factory.mktemp("lama-cache")))
    patch.delenv("LAMA_PRECISION_PROBE", raising=False)
    # `auto` measures torch's paths only: the tiny model's many server starts would otherwise
    # each convert and calibrate it for OpenVINO. tests/test_openvino_backend.py sets it back.
    patch.setenv("LAMA_AUTO_BACKENDS", "torch")
    yield
    patch.undo()


def host_missing(what: str) -> None:
    """A real host (Krita, GIMP) is not installed: skip loudly, or fail if REQUIRE_HOSTS=1."""
    reason = f"REAL-HOST TEST NOT RUN: {what}"
    if os.environ.get("REQUIRE_HOSTS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The official-code golden fixtures (tiny checkpoint, inputs, official outputs)."""
    return _fixture_folder("lama-golden", "tiny-lama/models/best.ckpt")


@pytest.fixture(scope="session")
def train_fixtures_dir() -> Path:
    """The official-code training fixtures (``lama-train``: mask sampler, one training step)."""
    return _fixture_folder("lama-train", "README.md")


@pytest.fixture(scope="session")
def refine_fixtures_dir() -> Path:
    """The official high-resolution refinement run on the tiny model (``lama-refine``)."""
    return _fixture_folder("lama-refine", "expected_crop.npy")


@pytest.fixture(scope="session")
def train_recipe(train_fixtures_dir: Path):
    """The fixtures' ``recipe_weights`` module: the deterministic D and ResNet-50 weights."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "lama_train_recipe_weights", train_fixtures_dir / "losses" / "recipe_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def recipe_discriminator(train_fixtures_dir: Path, train_recipe):
    """Build the fixture's discriminator ``bigd`` or ``tinyd`` with its recipe weights."""
    import json

    from lama_model.train.discriminator import build_discriminator

    def build(variant: str):
        manifest = train_fixtures_dir / "losses" / variant / "manifest-discriminator.json"
        kwargs = json.loads(manifest.read_text())["kwargs"]
        net = build_discriminator(ndf=kwargs["ndf"], n_layers=kwargs["n_layers"])
        net.load_state_dict(train_recipe.state_dict_from_manifest(manifest))
        return net

    return build


@pytest.fixture(scope="session")
def recipe_resnet50(train_fixtures_dir: Path, train_recipe):
    """Build the ResNetPL encoder (dilated ResNet-50) with the fixture's recipe weights."""
    from lama_model.train.perceptual import DilatedResNet50

    manifest = train_fixtures_dir / "losses" / "manifest-resnet50dilated.json"

    def build():
        encoder = DilatedResNet50()
        encoder.load_state_dict(train_recipe.state_dict_from_manifest(manifest))
        return encoder

    return build


@pytest.fixture(scope="session")
def tiny_model_dir(golden_dir: Path) -> Path:
    """The tiny checkpoint in the official big-lama folder layout."""
    return golden_dir / "tiny-lama"


class RunningServer:
    """A real ``lama-server`` subprocess on a free loopback port with the tiny model."""

    def __init__(self, proc, endpoint: str, token: str, token_file: Path, log_path: Path) -> None:
        self.proc = proc
        self.endpoint = endpoint
        self.token = token
        self.token_file = token_file
        self.log_path = log_path

    @property
    def port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int | None = None, timeout: float = 20) -> int:
        import signal as _signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            raise


def start_server(tmp: Path, model: Path, *extra: str, timeout: float = 60) -> RunningServer:
    """Start ``lama-server`` and wait for its ``ready`` line."""
    import re
    import subprocess
    import sys
    import time

    token_file = (
        Path(extra[extra.index("--token-file") + 1]) if "--token-file" in extra else tmp / "token"
    )
    log_path = tmp / "server.log"
    env = dict(os.environ, LAMA_TOKEN_FILE=str(token_file), PYTHONUNBUFFERED="1")
    env.pop("LAMA_TOKEN", None)
    cmd = [sys.executable, "-m", "lama_server.commands.serve", "--model", str(model), "--device", "cpu",
           "--listen", "tcp://127.0.0.1:*", *extra]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = re.search(r"ready on (\S+)", text)
        if found:
            token = token_file.read_text().strip()
            return RunningServer(proc, found.group(1), token, token_file, log_path)
        if proc.poll() is not None:
            raise RuntimeError(f"lama-server exited early:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"lama-server not ready in {timeout} s:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def running_server(tmp_path_factory, tiny_model_dir):
    """One shared real server for tests that do not stop it."""
    server = start_server(tmp_path_factory.mktemp("server"), tiny_model_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def served_precision(running_server) -> str:
    """The precision ``running_server`` runs (``auto`` measures it, so it depends on the CPU)."""
    from lama_client.client import LamaClient

    with LamaClient(running_server.endpoint, running_server.token) as c:
        return c.info()["precision"]


@pytest.fixture(scope="session")
def served_tiny(tiny_model_dir, served_precision):
    """The tiny model as ``running_server`` runs it: same inference path, so its replies are
    bit-identical to local calls."""
    import torch

    from lama_model.factory import load_for_inference

    return load_for_inference(tiny_model_dir, torch.device("cpu"), served_precision)


@pytest.fixture
def server_factory(tmp_path, tiny_model_dir):
    """Start private servers (with extra flags) that are stopped after the test."""
    started: list[RunningServer] = []

    def start(*extra: str) -> RunningServer:
        server = start_server(tmp_path / f"s{len(started)}", tiny_model_dir, *extra)
        started.append(server)
        return server

    for d in range(8):
        (tmp_path / f"s{d}").mkdir()
    yield start
    for server in started:  # stopped as a user would, so it removes its pixel folder
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in started:
        try:
            server.proc.wait(10)
        except Exception:
            server.proc.kill()
            server.proc.wait()


class TinyModelFiles:
    """The tiny model in every format users have, each written on first use:
    ``folder`` (official layout), ``ckpt`` (Lightning, without its config), ``pth``
    (generator ``state_dict``), ``torchscript`` (the official ``to_jit.py`` trace),
    ``onnx`` (our export; needs onnx and onnxscript, so only built when asked for)."""

    def __init__(self, folder: Path, golden: Path, tiny: Path) -> None:
        self.folder, self.golden, self.tiny = folder, golden, tiny
        self.made: dict[str, Path] = {}

    def __getitem__(self, fmt: str) -> Path:
        if fmt not in self.made:
            self.made[fmt] = self._make(fmt)
        return self.made[fmt]

    def _make(self, fmt: str) -> Path:
        import shutil

        import torch

        if fmt == "folder":
            return self.tiny
        if fmt == "torchscript":
            return self.golden / "tiny-lama.pt"
        ckpt = self.tiny / "models" / "best.ckpt"
        if fmt == "ckpt":
            return Path(shutil.copy(ckpt, self.folder / "tiny.ckpt"))
        if fmt == "pth":
            state = torch.load(ckpt, weights_only=True)["state_dict"]
            prefix = "generator."
            plain = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            torch.save(plain, self.folder / "tiny.pth")
            return self.folder / "tiny.pth"
        if fmt == "onnx":
            from lama_model.accel.onnx import export_onnx
            from lama_model.weights.checkpoint import load_model

            return export_onnx(load_model(self.tiny), self.folder / "tiny.onnx")
        raise KeyError(fmt)


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory, golden_dir, tiny_model_dir) -> TinyModelFiles:
    """The tiny model as a folder, ``.ckpt``, ``.pth``, TorchScript ``.pt`` and ``.onnx``."""
    return TinyModelFiles(tmp_path_factory.mktemp("tiny-formats"), golden_dir, tiny_model_dir)


# --------------------------------------------------------------------------------------------
# lama-train trainer/CLI (12b)

# A training run small enough for the test suite: the golden tiny generator's architecture,
# the tiny discriminator, 64² crops and the small random stand-in for the perceptual network.
TINY_TRAIN_ARGS = (
    "--generator", "tiny", "--discriminator", "tiny", "--crop", "64", "--batch-size", "2",
    "--workers", "0", "--perceptual-encoder", "tiny-random-for-tests", "--val-count", "4",
    "--val-size", "64", "--log-every", "1", "--preview-every", "10", "--val-every", "1000",
    "--save-every", "1000", "--no-progress",
)  # fmt: skip


def write_train_photos(folder: Path, count: int = 12, seed: int = 0) -> Path:
    """Photo-like test images (smooth gradients with shapes), PNG and JPEG, in two subfolders."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:80, 0:96] / 80.0
    for i in range(count):
        base = rng.rand(3, 1, 1) * 0.6 + rng.rand(3, 1, 1) * 0.4 * np.stack([xx, yy, xx * yy])
        image = base.transpose(1, 2, 0).copy()
        for _ in range(3):
            y, x, h, w = (
                rng.randint(0, 60),
                rng.randint(0, 76),
                rng.randint(8, 24),
                rng.randint(8, 24),
            )
            image[y : y + h, x : x + w] = rng.rand(3)
        pixels = Image.fromarray((image.clip(0, 1) * 255).astype(np.uint8))
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        if i % 3:
            pixels.save(sub / f"photo_{i:02d}.png")
        else:
            pixels.save(sub / f"photo_{i:02d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="session")
def train_photos(tmp_path_factory) -> Path:
    """A folder of 12 generated photos (80×96) for training runs."""
    return write_train_photos(tmp_path_factory.mktemp("train-photos"))


@pytest.fixture
def one_thread():
    """Tiny training steps on one thread: on a shared 2-core machine, two OpenMP threads spin on
    each other's barriers and make a 40 ms step take a second."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny golden checkpoint loaded on the CPU (eval mode); do not modify it."""
    from lama_model.weights.checkpoint import load_model

    return load_model(tiny_model_dir)


def big_lama_shaped(n_blocks: int = 1):
    """Big LaMa's layer pattern and widths (a 384-channel global part, 192-channel Fourier
    units) with ``n_blocks`` residual blocks, seeded weights and seeded non-trivial BatchNorm
    statistics, as a ``LamaModel`` on the CPU in eval mode."""
    import torch

    from lama_model.net.generator import LamaConfig, build_generator
    from lama_model.weights.checkpoint import LamaModel

    torch.manual_seed(0)
    net = build_generator(LamaConfig(n_blocks=n_blocks))
    randomise_batchnorm(net)
    return LamaModel(net, name=f"big-lama-shaped-{n_blocks}").eval()


def randomise_batchnorm(net, seed: int = 1) -> None:
    """Seeded non-trivial statistics and affine parameters for every BatchNorm2d of ``net``
    (fresh ones are the identity, which hides folding mistakes)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)


EVAL_GOLDEN = REPO / "tests" / "golden" / "eval"  # made by tests/golden_tools/make_eval_golden.py


@pytest.fixture(scope="session")
def eval_golden():
    """The official evaluator's numbers on fixed inputs with seeded networks (in the repo).

    ``inputs`` (image, inpainted, mask arrays), ``official`` (per-image LPIPS, SSIM, Inception
    features), ``table`` (``"metric/bin" -> {"mean", "std"}``) and ``tools``, the script that
    made them (its ``seeded_networks()`` builds our networks with the same weights).
    """
    import importlib.util
    import json
    import types

    import numpy as np

    path = REPO / "tests" / "golden_tools" / "make_eval_golden.py"
    spec = importlib.util.spec_from_file_location("make_eval_golden", path)
    tools = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tools)
    return types.SimpleNamespace(
        inputs=dict(np.load(EVAL_GOLDEN / "inputs.npz")),
        official=dict(np.load(EVAL_GOLDEN / "official.npz")),
        table=json.loads((EVAL_GOLDEN / "official.json").read_text()),
        tools=tools,
    )


SEGMENT_GOLDEN = REPO / "tests" / "golden" / "segment"  # tests/golden_tools/make_segment_golden.py


@pytest.fixture(scope="session")
def tiny_segmenter_path() -> Path:
    """A seeded MobileSAM checkpoint of a tiny configuration (official state_dict keys, its
    configuration beside it as ``tiny.pt.json``), made with the official code."""
    return SEGMENT_GOLDEN / "tiny.pt"


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_segmenter_path: Path):
    """``load_segmenter(tiny_segmenter_path, "cpu", runtime="torch")``: a served segmenter
    for tests (its encoder the torch modules, whichever runtimes are installed)."""
    from lama_model import load_segmenter

    return load_segmenter(str(tiny_segmenter_path), "cpu", runtime="torch")


@pytest.fixture(scope="session")
def tiny_openvino_segmenter(tiny_segmenter_path: Path):
    """The tiny segmenter with its encoder on OpenVINO (converted and checked once per
    session, cached in the session's model cache); skips where OpenVINO is not installed."""
    pytest.importorskip("openvino", reason="OpenVINO not installed: pip install -e '.[openvino]'")
    from lama_model import load_segmenter

    return load_segmenter(str(tiny_segmenter_path), "cpu", runtime="openvino")


@pytest.fixture(scope="session")
def segment_golden() -> dict:
    """The official predictor's outputs on the tiny checkpoint: ``image``, ``features`` and,
    per prompt name of ``make_segment_golden.PROMPTS``, its embeddings, logits and IoU."""
    import torch

    return torch.load(SEGMENT_GOLDEN / "golden.pt", weights_only=True)


@pytest.fixture
def small_segmenter():
    """A fresh MobileSAM of MobileSAM's layout (every encoder stage, windows that need
    padding, a two-block decoder) at small widths and a 256-pixel input, every parameter and
    batch-norm statistic drawn at random from a fixed seed (non-zero biases, norms that do
    something), batch norms not folded: for tests that compare the served inference paths
    with the plain modules."""
    import torch

    from lama_model.segment.config import SegmenterConfig
    from lama_model.segment.net import build_segmenter

    config = SegmenterConfig(
        name="mobile-sam-small-test",
        image_size=256,
        embed_dims=(16, 32, 48, 64),
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 3, 4),
        num_classes=2,
        prompt_dim=64,
        mask_in_chans=4,
        decoder_mlp_dim=128,
        iou_head_hidden_dim=32,
    )
    torch.manual_seed(0)
    model = build_segmenter(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
        for module in model.modules():
            if "Norm" in type(module).__name__:  # scales of order 1: signals neither vanish
                module.weight.uniform_(0.5, 1.5)  # nor blow up through the layers
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    return model


# --------------------------------------------------------------------------------------------
# Ray (issue 24): one local CPU-only cluster per test session

RAY_TIMEOUT_S = 240  # a Ray job on the shared 2-core machine: generous, but never a hang


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster (2 CPUs, no dashboard) in this process; its head address lets
    subprocesses join it. Skipped when Ray is not installed (``pip install .[ray]``)."""
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       configure_logging=False)  # fmt: skip
    yield context.address_info["address"]
    ray.shutdown()


def write_folder_cases(golden_dir: Path, folder: Path, count: int) -> Path:
    """``count`` images with masks in the official folder layout (half in a sub-folder),
    alternating the two golden cases."""
    import shutil

    for index in range(count):
        case = golden_dir / ("case-a", "case-b")[index % 2]
        where = folder / "sub" if index % 2 else folder
        where.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(case / "image.png", where / f"photo{index:03d}.png")
        shutil.copyfile(case / "mask.png", where / f"photo{index:03d}_mask.png")
    return folder


# Ray Serve behind lama-server (issue 24: ``lama-server --ray``)


@pytest.fixture(scope="module")
def ray_serve_server(tmp_path_factory, tiny_model_dir, ray_cluster, served_precision):
    """A real ``lama-server --ray`` joined to ``ray_cluster``: two CPU replicas (half a core
    each) of the tiny model, at the precision ``running_server`` runs, so their replies can be
    compared byte for byte. Skipped without Ray Serve (``pip install .[ray]``)."""
    pytest.importorskip("ray.serve")
    server = start_server(
        tmp_path_factory.mktemp("ray-serve"), tiny_model_dir, "--ray", ray_cluster,
        "--replicas", "2", "--ray-cpus", "0.5", "--precision", served_precision,
        "--no-segment", "--ray-app", "lama-test", timeout=RAY_TIMEOUT_S,
    )  # fmt: skip
    yield server
    server.stop(timeout=60)


@pytest.fixture(scope="module")
def one_thread_server(tmp_path_factory, tiny_model_dir, served_precision):
    """A plain local ``lama-server`` whose torch runs one thread, as each ``ray_serve_server``
    replica does (Ray gives an actor of under one CPU one thread). Torch splits float
    reductions by thread count, so a 16-bit or float answer can differ in its last bit between
    a one-thread and a two-thread run: equal thread counts make replies comparable byte for
    byte."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        server = start_server(
            tmp_path_factory.mktemp("one-thread"), tiny_model_dir, "--precision",
            served_precision, "--no-segment",
        )  # fmt: skip
    yield server
    server.stop()


class RayHead:
    """A Ray cluster of its own in a subprocess (``ray.init``): it ends when :meth:`stop`
    closes the subprocess's stdin, as a cluster that goes away does."""

    SCRIPT = (
        "import sys, ray\n"
        "context = ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
        "print(context.address_info['address'], flush=True)\n"
        "sys.stdin.read()\n"
        "ray.shutdown()\n"
    )

    def __init__(self) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.address = self.proc.stdout.readline().strip()  # blocks until the head is up
        if not self.address:
            self.proc.kill()
            raise RuntimeError("the Ray head did not start")

    def stop(self) -> None:
        """Shut the cluster down (its GCS and raylet end with it)."""
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except Exception:
            self.proc.kill()


@pytest.fixture
def ray_head():
    """A Ray cluster that the test may shut down (the session's ``ray_cluster`` must stay)."""
    pytest.importorskip("ray.serve")
    head = RayHead()
    yield head
    if head.proc.poll() is None:
        head.stop()


@pytest.fixture(scope="session")
def tiny_openvino(tiny_model_dir):
    """``build(precision)``: the tiny model served by OpenVINO (converted, and for int8
    calibrated, once per session: the IR is cached in the session's model cache)."""
    pytest.importorskip("openvino", reason="OpenVINO not installed: pip install -e '.[openvino]'")
    import torch

    from lama_model.accel.openvino_runtime import openvino_model
    from lama_model.weights.checkpoint import load_model

    model = load_model(tiny_model_dir, torch.device("cpu"))
    built: dict[str, object] = {}

    def build(precision: str):
        if precision not in built:
            built[precision] = openvino_model(model, precision)
        return built[precision]

    return build


@pytest.fixture(scope="session")
def tiny_openvino_graph(tiny_model):
    """The tiny generator converted to an ``openvino.Model`` (float32, dynamic H and W; not
    cached on disk); skips where OpenVINO is not installed. Do not modify it."""
    pytest.importorskip("openvino", reason="OpenVINO not installed: pip install -e '.[openvino]'")
    from lama_model.accel.openvino_runtime import convert_generator

    return convert_generator(tiny_model.refine_generator)
