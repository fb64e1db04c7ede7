"""The layout is the architecture: imports only go down, no cycles, no private names cross.

Walks every import (module level and inside functions) of the three packages and the plug-ins,
as written in the source, so a lazy import cannot hide a cycle. ``docs/architecture.md`` draws
the same layers.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"lama_client": REPO / "client", "lama_model": REPO / "model", "lama_server": REPO / "server"}

# Lowest first. A module may import its own layer and the layers below, never one above.
# A package's __init__ is its public face: it sits above everything inside the package.
LAYERS: list[tuple[str, ...]] = [
    ("lama_client",),
    ("lama_model.choices", "lama_model.errors", "lama_model.geometry", "lama_model.devices"),
    ("lama_model.interface",),
    ("lama_model.net",),
    ("lama_model.weights",),
    ("lama_model.accel",),
    ("lama_model.pipeline",),
    ("lama_model.segment",),  # select an object (MobileSAM): its own net, weights entry, predictor
    ("lama_model.factory",),
    ("lama_model.train",),
    ("lama_model",),  # the lazy public face
    ("lama_server",),  # its face holds only the version
    ("lama_server.wire",),
    ("lama_server.daemon",),
    ("lama_server.commands",),
]
FACES = {"lama_model", "lama_server"}  # in LAYERS these name the package's __init__ alone


def _module_name(path: Path) -> str:
    for package, root in PACKAGES.items():
        if root in path.parents:
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


def _sources() -> dict[str, Path]:
    return {
        _module_name(p): p
        for root in PACKAGES.values()
        for p in root.rglob("*.py")
        if "__pycache__" not in p.parts
    }


SOURCES = _sources()


def _imports(module: str, path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [alias.name for alias in node.names]
            # `from pkg import submodule` imports the submodule
            subs = [n for n in names if f"{base}.{n}" in SOURCES]
            found += [(f"{base}.{n}", []) for n in subs]
            found.append((base, [n for n in names if n not in subs]))
    return [(m, names) for m, names in found if m.split(".")[0] in PACKAGES]


GRAPH = {module: _imports(module, path) for module, path in SOURCES.items()}


def _layer(module: str) -> int:
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix in FACES and module != prefix:
                continue
            if module == prefix or module.startswith(prefix + "."):
                if len(prefix) > best:
                    best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return rank


def test_every_module_has_a_layer():
    for module in SOURCES:
        _layer(module)


def test_imports_only_go_down():
    upward = [
        f"{module} imports {target}"
        for module, imports in GRAPH.items()
        for target, _ in imports
        if _layer(target) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = {m: {t for t, _ in imps if t in SOURCES and t != m} for m, imps in GRAPH.items()}
    # A package's face importing its own members is how a face works, not a cycle.
    for module in edges:
        if SOURCES[module].name == "__init__.py":
            edges[module] = {t for t in edges[module] if not t.startswith(module + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_no_private_name_crosses_a_module():
    crossing = [
        f"{module} takes {name} from {target}"
        for module, imports in GRAPH.items()
        for target, names in imports
        for name in names
        if name.startswith("_") and not name.endswith("__") and target != module
    ]
    private_modules = [
        f"{module} imports private module {target}"
        for module, imports in GRAPH.items()
        for target, _ in imports
        if any(part.startswith("_") and part != "__init__" for part in target.split("."))
        and target.rpartition(".")[0] != module.rpartition(".")[0]
    ]
    assert not crossing + private_modules, "\n".join(crossing + private_modules)


def test_the_model_never_imports_the_server_and_the_client_imports_neither():
    wrong = [
        f"{module} imports {target}"
        for module, imports in GRAPH.items()
        for target, _ in imports
        if (module.startswith("lama_model") and not target.startswith("lama_model"))
        or (module.startswith("lama_client") and not target.startswith("lama_client"))
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "command", ["lama_server.commands.serve", "lama_server.commands.inpaint", "lama_model.train.cli"]
)
def test_help_starts_without_importing_torch(command):
    code = (
        "import sys, runpy\n"
        f"sys.argv = [{command!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_module({command!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH LOADED' if 'torch' in sys.modules else 'NO TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "usage:" in proc.stdout, proc.stderr[-500:]
    assert proc.stdout.rstrip().endswith("NO TORCH")


MAX_FUNCTION_LINES = 59  # a function should read on one screen


def test_every_function_fits_on_a_screen():
    long = []
    for path in sorted(REPO.rglob("*.py")):
        if {".git", ".venv", "build", "__pycache__"} & set(path.relative_to(REPO).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_every_module_imports(module):
    """A name moved by a refactor fails here, not in the one code path that imports it late."""
    importlib.import_module(module)


def test_every_imported_name_exists():
    """Imports inside functions included: they run only on the path that needs them."""
    missing = []
    for module, imports in GRAPH.items():
        for target, names in imports:
            loaded = importlib.import_module(target)
            missing += [f"{module}: {target}.{n}" for n in names if not hasattr(loaded, n)]
    assert not missing, "\n".join(missing)
