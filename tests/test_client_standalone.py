"""The client as the plugins bundle it: one package, stdlib only, token found on its own."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_client_transport import TOKEN, FakeServer

import lama_client
from lama_client import client

CLIENT_DIR = Path(lama_client.__file__).parent


@pytest.mark.parametrize("path", sorted(CLIENT_DIR.glob("*.py")), ids=lambda p: p.name)
def test_package_imports_only_the_standard_library(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional = set()
    for node in tree.body:  # a guarded import block may name the real libraries
        if isinstance(node, ast.Try):
            optional |= {a.name for n in node.body if isinstance(n, ast.Import) for a in n.names}
    assert optional <= {"zmq", "msgpack"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # inside the package, which travels whole
                assert node.level == 1, "relative import reaching out of the client package"
                continue
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in optional | {"__future__"}, name


def test_bundled_copy_works_without_pyzmq_or_msgpack(tmp_path):
    shutil.copytree(CLIENT_DIR, tmp_path / "lama_client")
    script = textwrap.dedent(
        """
        import sys, threading
        sys.path.insert(0, sys.argv[3])  # where the plugin keeps lama_client/
        sys.modules["zmq"] = None      # import zmq -> ImportError, as in GIMP on Windows
        sys.modules["msgpack"] = None
        import lama_client as lc
        with lc.LamaClient(sys.argv[1], sys.argv[2]) as c:
            assert not c.uses_pyzmq
            assert c.ping()["pong"] is True
            steps = []
            out = c.inpaint(lc.ImageData(2, 1, "GRAYA8", b"\\x00\\x01\\x02\\x03"), b"\\xff\\x00",
                            {"output": "layer"}, progress=lambda p, s: steps.append(s),
                            cancel=threading.Event())
        try:
            lc.LamaClient(sys.argv[1], use_pyzmq=True)
        except lc.LamaError as exc:
            assert exc.code == "unavailable"
        else:
            raise AssertionError("use_pyzmq=True must fail without pyzmq")
        assert "lama_server" not in sys.modules
        print(out.data.hex(), steps[0])
        """
    )
    with FakeServer(steps=1) as server:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", script, server.endpoint, TOKEN, str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fffefdfc", "queued"]


def test_token_path_follows_env_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("LAMA_TOKEN_FILE", str(tmp_path / "explicit"))
    assert client.default_token_path() == str(tmp_path / "explicit")
    monkeypatch.delenv("LAMA_TOKEN_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert client.default_token_path() == str(tmp_path / "xdg" / "lama-inpaint" / "token")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".config" / "lama-inpaint" / "token"
    assert client.default_token_path() == str(expected)


def test_token_path_on_windows_uses_appdata(monkeypatch, tmp_path):
    monkeypatch.delenv("LAMA_TOKEN_FILE", raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path))
    assert client.default_token_path() == os.path.join(str(tmp_path), "lama-inpaint", "token")


def test_read_token_prefers_env_then_file(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    monkeypatch.delenv("LAMA_TOKEN", raising=False)
    monkeypatch.setenv("LAMA_TOKEN_FILE", str(token_file))
    assert client.read_token() is None  # no file yet
    token_file.write_text(TOKEN + "\n")
    assert client.read_token() == TOKEN
    assert client.read_token(str(tmp_path / "missing")) is None
    monkeypatch.setenv("LAMA_TOKEN", "from-env")
    assert client.read_token(str(token_file)) == "from-env"


@pytest.mark.parametrize("use_pyzmq", [False, True], ids=["stdlib", "pyzmq"])
def test_client_without_token_argument_reads_the_token_file(monkeypatch, tmp_path, use_pyzmq):
    monkeypatch.delenv("LAMA_TOKEN", raising=False)
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setenv("LAMA_TOKEN_FILE", str(tmp_path / "token"))
    with FakeServer() as server, client.LamaClient(server.endpoint, use_pyzmq=use_pyzmq) as c:
        assert c.ping()["pong"]
