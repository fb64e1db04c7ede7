"""``lama-inpaint export`` without the ``export`` extra says in one line what to install."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

from lama_server.commands.export import main
from lama_server.commands.inpaint import main as inpaint_main


@pytest.mark.parametrize("entry", [main, lambda argv: inpaint_main(["export", *argv])])
def test_onnx_export_without_the_extra_names_it_before_loading(tmp_path, monkeypatch, capsys,
                                                               entry):  # fmt: skip
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # how Python marks a missing module
    # A missing model: had it been loaded first, the error would say so.
    assert entry([str(tmp_path / "no-model"), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err == 'lama-inpaint export: ONNX export needs onnxscript: pip install "lama-inpaint[export]"\n'
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_packages_are_an_extra_not_for_everyone():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [dep.split(">")[0].split("=")[0] for dep in project["dependencies"]]
    assert not {"onnx", "onnxscript", "protobuf"} & set(names)
    extras = project["optional-dependencies"]
    for extra in ("export", "onnxruntime", "test"):
        assert {"onnx", "onnxscript"} <= {d.split(">")[0] for d in extras[extra]}, extra
