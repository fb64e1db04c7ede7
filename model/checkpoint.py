"""Load LaMa weights from every layout users have, safely, with errors that say what is wrong.

Accepted sources:
- the official model folder: ``config.yaml`` + ``models/best.ckpt`` (kwargs from the config);
- a Lightning ``.ckpt`` (``state_dict`` with ``generator.*`` keys; other entries are skipped);
- a plain generator ``state_dict`` (``model.N…`` or ``generator.model.N…`` keys);
- a TorchScript file such as the ``big-lama.pt`` other tools distribute
  (``model(image, mask)`` → composited image);
- a known model name (``big-lama``), resolved through :mod:`lama_model.weights`.

Pickles are only ever read with ``torch.load(weights_only=True)``: no arbitrary objects.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .config_yaml import ConfigError, load_generator_kwargs
from .generator import FFCRatios, FFCResNetGenerator, LamaConfig


class CheckpointError(ValueError):
    """A model file that cannot be used, with the reason in the message."""


class LamaModel(nn.Module):
    """Uniform inpainting network: ``forward(image, mask) → image``.

    ``image`` is ``(B, 3, H, W)`` float in [0, 1], ``mask`` ``(B, 1, H, W)`` with 1 = hole;
    H and W must be multiples of :attr:`size_multiple`. The output may or may not already be
    composited (TorchScript exports composite); callers composite again, which is idempotent.
    """

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
    def generator(self) -> FFCResNetGenerator | None:
        """The eager generator, or None for a TorchScript model."""
        return None if self.scripted else self.net  # type: ignore[return-value]

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.scripted:
            return self.net(image, mask)
        return self.net(torch.cat([image * (1 - mask), mask], dim=1))


def load_model(source: str | Path, device: str | torch.device = "cpu") -> LamaModel:
    """Load a model from a folder, checkpoint, state_dict, TorchScript file or known name."""
    path = Path(source).expanduser()
    if not path.exists():
        from .weights import KNOWN_MODELS, ensure_model

        if str(source) in KNOWN_MODELS:
            path = ensure_model(str(source))
        else:
            known = ", ".join(KNOWN_MODELS)
            raise CheckpointError(
                f"{source}: no such file or folder, and not a known model ({known})"
            )
    model = _load_path(path)
    return model.to(device).eval()


def _load_path(path: Path) -> LamaModel:
    if path.is_dir():
        return _load_folder(path)
    if _is_torchscript(path):
        return _load_torchscript(path)
    config_path = _sibling_config(path)
    state = extract_generator_state(_read_pickle(path), path)
    config = _config_from_file(config_path) if config_path else infer_config(state, path)
    return LamaModel(build_strict(config, state, path), name=path.stem)


def _load_folder(folder: Path) -> LamaModel:
    config_path = folder / "config.yaml"
    ckpt = folder / "models" / "best.ckpt"
    if not ckpt.is_file():
        candidates = sorted(folder.glob("*.pt")) + sorted(folder.glob("*.ckpt"))
        if len(candidates) == 1:
            return _load_path(candidates[0])
        raise CheckpointError(
            f"{folder}: not a LaMa model folder (expected config.yaml and models/best.ckpt)"
        )
    state = extract_generator_state(_read_pickle(ckpt), ckpt)
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


def _load_torchscript(path: Path) -> LamaModel:
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError subclasses of many kinds here
        raise CheckpointError(f"{path}: damaged TorchScript file ({_first_line(exc)})") from exc
    return LamaModel(net.eval(), name=path.stem, scripted=True)


def _read_pickle(path: Path) -> object:
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file")
    with path.open("rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a pickle)"
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported (global: GLOBAL \S+|operand \d+)", str(exc))
        detail = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused to load: it holds more than tensors{detail}; weights are "
            "loaded with weights_only=True, never as arbitrary pickled objects"
        ) from exc
    except Exception as exc:  # the unpickler raises IndexError, KeyError… on garbage
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or another format?): "
            f"{_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
    return LamaConfig(
        input_nc=input_nc,
        output_nc=output_nc,
        ngf=ngf,
        n_downsampling=n_down,
        n_blocks=len(blocks),
        resnet_conv=FFCRatios(ratio, ratio),
    )


def build_strict(
    config: LamaConfig, state: Mapping[str, torch.Tensor], path: Path | str
) -> FFCResNetGenerator:
    """Build the generator and load ``state`` strictly, naming every mismatch."""
    generator = FFCResNetGenerator(config)
    expected = generator.state_dict()
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
    if problems:
        raise CheckpointError(
            f"{path}: weights do not fit the generator "
            f"(ngf={config.ngf}, n_blocks={config.n_blocks}): " + "; ".join(problems)
        )
    generator.load_state_dict({k: state[k] for k in expected}, strict=True)
    return generator.eval()


def _few(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")
