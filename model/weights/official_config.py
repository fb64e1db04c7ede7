"""Read the generator section of an official LaMa ``config.yaml``.

The released configs use OmegaConf interpolations (``${generator.init_conv_kwargs.ratio_gout}``,
``${env:TORCH_HOME}``). We resolve the references we need ourselves rather than depend on
OmegaConf/Hydra for one small section.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

_REF = re.compile(r"^\$\{([^}]+)\}$")


class ConfigError(ValueError):
    """The config file cannot be read or has no usable ``generator`` section."""


def read_yaml(path: str | Path, what: str = "model config") -> Any:
    """The parsed YAML file; a :class:`ConfigError` naming ``what`` if it cannot be read."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc}") from exc


def generator_kwargs(root: Any, path: str | Path) -> dict[str, Any]:
    """The ``generator:`` mapping of a parsed config (``path`` is for messages), resolved."""
    path = Path(path)
    if not isinstance(root, dict) or not isinstance(root.get("generator"), dict):
        raise ConfigError(f"{path}: no 'generator:' section; is this a LaMa config.yaml?")
    return _resolve(root["generator"], root, path, depth=0)


def load_generator_kwargs(path: str | Path) -> dict[str, Any]:
    """Return the ``generator:`` mapping of a training config with references resolved."""
    return generator_kwargs(read_yaml(path), path)


def _resolve(value: Any, root: dict, path: Path, depth: int) -> Any:
    if depth > 32:
        raise ConfigError(f"{path}: interpolation cycle in the generator section")
    if isinstance(value, dict):
        return {k: _resolve(v, root, path, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root, path, depth) for v in value]
    if isinstance(value, str):
        match = _REF.match(value.strip())
        if match:
            ref = match.group(1).strip()
            if ":" in ref:  # resolvers such as ${env:TORCH_HOME} never matter to the generator
                return None
            node: Any = root
            for part in ref.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"{path}: unresolvable reference ${{{ref}}}")
                node = node[part]
            return _resolve(node, root, path, depth + 1)
    return value
