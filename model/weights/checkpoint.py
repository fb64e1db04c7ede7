"""Load LaMa weights from every layout users have, safely, with errors that say what is wrong.

Accepted sources:
- the official model folder: ``config.yaml`` + ``models/best.ckpt`` (kwargs from the config);
- a Lightning ``.ckpt`` (``state_dict`` with ``generator.*`` keys; other entries are skipped);
- a plain generator ``state_dict`` (``model.N…`` or ``generator.model.N…`` keys);
- a TorchScript file such as the ``big-lama.pt`` other tools distribute
  (``model(image, mask)`` → composited image), only with ``allow_torchscript=True`` or when it
  is the known ``big-lama-jit`` file (MD5 pinned in :mod:`lama_model.weights.downloads`);
- a known model name (``big-lama``), resolved through :mod:`lama_model.weights.downloads`.

Pickles are only ever read with ``torch.load(weights_only=True)``: no arbitrary objects.
TorchScript archives hold code (``__setstate__`` runs at load, ``forward`` at every call), so
they are never chosen by content alone: a ``.pth``/``.ckpt`` that holds TorchScript is refused,
and any other name needs the explicit opt-in or the pinned checksum. Tensor shapes are checked
against sane limits before a generator is built, so a tiny file cannot make us allocate GBs.
"""

from __future__ import annotations

import logging
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from lama_model.choices import RUN_CHECKPOINTS
from lama_model.errors import CheckpointError, first_line
from lama_model.interface import CompileProgress, PrecisionChoice, kept_source
from lama_model.net.generator import FFCRatios, FFCResNetGenerator, LamaConfig
from lama_model.weights.official_config import ConfigError, load_generator_kwargs


class LamaModel(nn.Module):
    """Uniform inpainting network: ``forward(image, mask) → image``; a
    :class:`~lama_model.interface.ServedModel` in float32.

    ``image`` is ``(B, 3, H, W)`` float in [0, 1], ``mask`` ``(B, 1, H, W)`` with 1 = hole;
    H and W must be multiples of :attr:`size_multiple`. The output may or may not already be
    composited (TorchScript exports composite); callers composite again, which is idempotent.
    """

    precision = "fp32"
    choice: PrecisionChoice | None = None
    compiler: CompileProgress | None = None

    def __init__(self, net: nn.Module, name: str, scripted: bool = False, size_multiple: int = 8):
        super().__init__()
        self.net = net
        self.name = name
        self.scripted = scripted
        self.size_multiple = size_multiple

    @property
    def device(self) -> torch.device:
        for tensor in self.net.parameters():
            return tensor.device
        for tensor in self.net.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def input_device(self) -> torch.device:
        return self.device

    @property
    def description(self) -> str:
        return "torchscript" if self.scripted else "fp32"

    @property
    def generator(self) -> FFCResNetGenerator | None:
        """The eager generator, or None for a TorchScript model."""
        return None if self.scripted else self.net  # type: ignore[return-value]

    @property
    def refine_generator(self) -> nn.Module | None:
        """The eager generator (the fused model's source, kept by ``keep_source``)."""
        if self.scripted:
            return None
        source = kept_source(self)
        if source is not None:
            return source
        return self.net if isinstance(self.net, FFCResNetGenerator) else None

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.scripted:
            return self.net(image, mask)
        return self.net(torch.cat([image * (1 - mask), mask], dim=1))


def load_model(
    source: str | Path, device: str | torch.device = "cpu", allow_torchscript: bool = False
) -> LamaModel:
    """Load a model from a folder, checkpoint, state_dict, TorchScript file or known name.

    ``allow_torchscript``: load TorchScript files, which run the code they hold; without it
    only the pinned ``big-lama-jit`` file is accepted.
    """
    path = Path(source).expanduser()
    if not path.exists():
        from lama_model.weights.downloads import KNOWN_MODELS, ensure_model, known_generators

        known = ", ".join(known_generators())
        if str(source) in known_generators():
            path = ensure_model(str(source))
        elif str(source) in KNOWN_MODELS:  # e.g. the perceptual-loss encoder: nothing to download
            raise CheckpointError(
                f"{source} is not an inpainting model ({KNOWN_MODELS[str(source)].description}); "
                f"known inpainting models: {known}"
            )
        else:
            raise CheckpointError(
                f"{source}: no such file or folder, and not a known model ({known})"
            )
    model = _load_path(path, allow_torchscript)
    return model.to(device).eval()


#: Suffixes under which users expect tensors only; TorchScript there is always refused.
PICKLE_SUFFIXES = (".pth", ".ckpt", ".bin")


def _load_path(path: Path, allow_torchscript: bool = False) -> LamaModel:
    if path.is_dir():
        return _load_folder(path, allow_torchscript)
    if _is_torchscript(path):
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise CheckpointError(
                f"{path}: refused: this {path.suffix} file is a TorchScript archive, which holds "
                "code that runs when it is loaded, not just weights. If you trust it, rename it "
                "to .pt and pass --allow-torchscript"
            )
        if not (allow_torchscript or _is_pinned_torchscript(path)):
            raise CheckpointError(
                f"{path}: refused: TorchScript files hold code that runs when they are loaded "
                "and used. Load it only if you trust its source: pass --allow-torchscript "
                "(lama-server, lama-inpaint), or use a weights file (.ckpt/.pth) or the "
                "official model folder"
            )
        return _load_torchscript(path)
    config_path = _sibling_config(path)
    state = extract_generator_state(read_checkpoint_file(path), path)
    config = _config_from_file(config_path) if config_path else infer_config(state, path)
    return LamaModel(build_strict(config, state, path), name=path.stem)


def model_source(model: str | Path, checkpoint: str | None) -> str | Path:
    """What to load for ``--model MODEL [--checkpoint CHECKPOINT]``: the model itself, or the
    checkpoint file :func:`choose_run_checkpoint` names."""
    return model if checkpoint is None else choose_run_checkpoint(model, checkpoint)


def choose_run_checkpoint(model: str | Path, checkpoint: str) -> Path:
    """The weights file ``--checkpoint`` names for ``--model``: ``best`` or ``last`` (the run
    folder's ``models/best.ckpt`` / ``models/last.ckpt``) or the path of a checkpoint file
    (relative to the current folder, else to the run folder). Raises :class:`CheckpointError`
    with a one-line reason when it is not there; unlike a plain ``--model RUN``, asking for
    ``best`` explicitly never falls back to ``last``."""
    folder = Path(model).expanduser()
    if checkpoint in RUN_CHECKPOINTS:
        if not folder.is_dir():
            raise CheckpointError(
                f"--checkpoint {checkpoint} needs --model to be a run folder (lama-train "
                f"fit --out); {model} is not a folder"
            )
        path = folder / "models" / f"{checkpoint}.ckpt"
        if path.is_file():
            return path
        if checkpoint == "best" and (folder / "models" / "last.ckpt").is_file():
            raise CheckpointError(
                f"{folder}: no models/best.ckpt yet (no validation has run); "
                "use --checkpoint last"
            )
        raise CheckpointError(f"{folder}: no models/{checkpoint}.ckpt (not a lama-train run)")
    path = Path(checkpoint).expanduser()
    if not path.is_file() and not path.is_absolute() and folder.is_dir():
        path = folder / path
    if not path.is_file():
        raise CheckpointError(
            f"--checkpoint {checkpoint}: no such file (give best, last or a .ckpt file)"
        )
    return path


def _load_folder(folder: Path, allow_torchscript: bool = False) -> LamaModel:
    config_path = folder / "config.yaml"
    ckpt = folder / "models" / "best.ckpt"
    if not ckpt.is_file() and (folder / "models" / "last.ckpt").is_file():
        # a lama-train run stopped before its first validation has no best.ckpt yet
        ckpt = folder / "models" / "last.ckpt"
        logging.getLogger(__name__).warning(
            "%s: no models/best.ckpt yet (no validation has run): serving models/last.ckpt", folder
        )
    if not ckpt.is_file():
        candidates = sorted(folder.glob("*.pt")) + sorted(folder.glob("*.ckpt"))
        if len(candidates) == 1:
            return _load_path(candidates[0], allow_torchscript)
        raise CheckpointError(
            f"{folder}: not a LaMa model folder (expected config.yaml and models/best.ckpt)"
        )
    state = extract_generator_state(read_checkpoint_file(ckpt), ckpt)
    config = _config_from_file(config_path) if config_path.is_file() else infer_config(state, ckpt)
    return LamaModel(build_strict(config, state, ckpt), name=folder.name)


def _sibling_config(path: Path) -> Path | None:
    """``models/best.ckpt`` inside an official folder has its config one level up."""
    for candidate in (path.parent.parent / "config.yaml", path.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _config_from_file(path: Path) -> LamaConfig:
    try:
        return LamaConfig.from_official(load_generator_kwargs(path))
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _is_pinned_torchscript(path: Path) -> bool:
    """True for the known TorchScript release whose checksum :mod:`weights` pins."""
    from lama_model.weights.downloads import KNOWN_MODELS, file_digest

    pinned = [m.digest for m in KNOWN_MODELS.values() if m.digest and m.filename.endswith(".pt")]
    if not pinned:
        return False
    digests = {}
    for entry in pinned:
        algorithm, _, expected = entry.partition(":")
        if algorithm not in digests:
            digests[algorithm] = file_digest(path, algorithm)
        if digests[algorithm].lower() == expected.lower():
            return True
    return False


def _load_torchscript(path: Path) -> LamaModel:
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError subclasses of many kinds here
        raise CheckpointError(f"{path}: damaged TorchScript file ({first_line(exc)})") from exc
    return LamaModel(net.eval(), name=path.stem, scripted=True)


def read_checkpoint_file(path: Path) -> object:
    """The tensors of a ``torch.save`` file, read with ``weights_only=True``.

    Raises :class:`CheckpointError` with one line: empty, not a checkpoint, truncated or
    corrupt (never PyTorch's paragraph about its zip reader), or holding more than tensors.
    """
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    with path.open("rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a pickle)"
        )
    if head == b"PK" and not zipfile.is_zipfile(path):
        # A torch.save zip ends with its directory: a cut file has none, and PyTorch would
        # answer with a multi-line paragraph or "[Errno 22] Invalid argument".
        raise CheckpointError(f"truncated or corrupt: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):  # a cut pickle, not a hostile one
            raise CheckpointError(f"truncated or corrupt: {path}") from exc
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(exc))
        detail = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused to load: it holds more than tensors{detail}; weights are "
            "loaded with weights_only=True, never as arbitrary pickled objects"
        ) from exc
    except (RuntimeError, OSError, EOFError, struct.error) as exc:  # the zip reader, a cut pickle
        raise CheckpointError(f"truncated or corrupt: {path}") from exc
    except Exception as exc:  # the unpickler raises IndexError, KeyError… on garbage
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (another format?): {first_line(exc)}"
        ) from exc


_GEN_KEY = re.compile(r"^model\.\d+\.")


def extract_generator_state(obj: object, path: Path | str) -> dict[str, torch.Tensor]:
    """Find the generator's tensors in a Lightning checkpoint or a plain state_dict.

    Returns keys relative to the generator (``model.N…``).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint (top level is {type(obj).__name__})")
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is not a mapping")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
    prefixed = {k[len("generator.") :]: v for k, v in tensors.items() if k.startswith("generator.")}
    if prefixed:
        return prefixed
    plain = {k: v for k, v in tensors.items() if _GEN_KEY.match(k)}
    if plain and len(plain) == len(tensors):
        return plain
    sample = ", ".join(list(state)[:5]) or "nothing"
    raise CheckpointError(
        f"{path}: no LaMa generator weights found (expected keys 'generator.model.N…' or "
        f"'model.N…'; found {sample})"
    )


def infer_config(state: Mapping[str, torch.Tensor], path: Path | str) -> LamaConfig:
    """Recover the architecture from tensor shapes when no config.yaml is at hand."""
    try:
        first = state["model.1.ffc.convl2l.weight"]
    except KeyError:
        raise CheckpointError(f"{path}: missing key model.1.ffc.convl2l.weight") from None
    if first.dim() != 4:
        raise CheckpointError(
            f"{path}: model.1.ffc.convl2l.weight has shape {tuple(first.shape)}; a LaMa "
            "generator's first convolution is 4-D (out, in, 7, 7)"
        )
    ngf, input_nc = int(first.shape[0]), int(first.shape[1])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv1\.", k))}
    if not blocks:
        raise CheckpointError(f"{path}: no FFC residual blocks found")
    n_down = min(blocks) - 2
    # Global share of the blocks: bn_g width over block width.
    first_block = min(blocks)
    bn_l = state.get(f"model.{first_block}.conv1.bn_l.weight")
    bn_g = state.get(f"model.{first_block}.conv1.bn_g.weight")
    local = int(bn_l.shape[0]) if bn_l is not None else 0
    glob = int(bn_g.shape[0]) if bn_g is not None else 0
    ratio = glob / (local + glob) if local + glob else 0.0
    out_keys = sorted(
        (int(m.group(1)), k)
        for k in state
        if (m := re.match(r"model\.(\d+)\.weight$", k)) and state[k].dim() == 4
    )
    output_nc = int(state[out_keys[-1][1]].shape[0]) if out_keys else 3
    if not 0 <= n_down <= MAX_DOWNSAMPLING:
        raise CheckpointError(f"{path}: block numbering implies {n_down} downsamplings")
    return LamaConfig(
        input_nc=input_nc,
        output_nc=output_nc,
        ngf=ngf,
        n_downsampling=n_down,
        n_blocks=len(blocks),
        resnet_conv=FFCRatios(ratio, ratio),
    )


#: Sane bounds for a LaMa generator (Big LaMa: ngf 64, 3 downsamplings, 18 blocks, ~51M
#: parameters); checked before building, so shapes in a tiny file cannot make us allocate GBs.
MAX_NGF = 256
MAX_DOWNSAMPLING = 6
MAX_BLOCKS = 64
MAX_IO_CHANNELS = 16
MAX_PARAMETERS = 400_000_000


def check_config_limits(config: LamaConfig, path: Path | str) -> None:
    """Refuse an architecture outside sane limits before any of it is allocated."""
    problems = []
    if not 1 <= config.ngf <= MAX_NGF:
        problems.append(f"ngf={config.ngf} (1..{MAX_NGF})")
    if not 0 <= config.n_downsampling <= MAX_DOWNSAMPLING:
        problems.append(f"n_downsampling={config.n_downsampling} (0..{MAX_DOWNSAMPLING})")
    if not 1 <= config.n_blocks <= MAX_BLOCKS:
        problems.append(f"n_blocks={config.n_blocks} (1..{MAX_BLOCKS})")
    for name in ("input_nc", "output_nc"):
        value = getattr(config, name)
        if not 1 <= value <= MAX_IO_CHANNELS:
            problems.append(f"{name}={value} (1..{MAX_IO_CHANNELS})")
    if not problems:
        # An upper bound of the parameter count: two 3×3 convolutions per residual block at
        # the widest width, plus the down/up-sampling ladder.
        width = min(config.ngf * 2**config.n_downsampling, config.max_features)
        estimate = 18 * config.n_blocks * width * width + 2 * 16 * sum(
            min(config.ngf * 2**i, config.max_features) ** 2
            for i in range(config.n_downsampling + 1)
        )
        if estimate > MAX_PARAMETERS:
            limit = MAX_PARAMETERS // 10**6
            problems.append(f"about {estimate / 1e6:.0f}M parameters (at most {limit}M)")
    if problems:
        raise CheckpointError(
            f"{path}: refused: the weights describe a generator outside sane limits: "
            + ", ".join(problems)
        )


def build_strict(
    config: LamaConfig, state: Mapping[str, torch.Tensor], path: Path | str
) -> FFCResNetGenerator:
    """Build the generator and load ``state`` strictly, naming every mismatch."""
    check_config_limits(config, path)
    generator = FFCResNetGenerator(config)
    expected = generator.state_dict()
    problems = state_mismatches(expected, state)
    if problems:
        raise CheckpointError(
            f"{path}: weights do not fit the generator "
            f"(ngf={config.ngf}, n_blocks={config.n_blocks}): " + "; ".join(problems)
        )
    generator.load_state_dict({k: state[k] for k in expected}, strict=True)
    return generator.eval()


def state_mismatches(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> list[str]:
    """What keeps ``state`` from loading strictly where ``expected`` is: missing and unexpected
    keys, shape mismatches, each as one short phrase (empty when it fits)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches: {_few(wrong)}")
    return problems


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")
