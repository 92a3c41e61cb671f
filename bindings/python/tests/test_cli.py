"""The ``baas`` console script, driven as a subprocess against a real
server and an embedded data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import List

import pytest

from conftest import Server, make_image


def baas_cmd() -> List[str]:
    exe = shutil.which("baas", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "baas.cli"]


def run(args: List[str], env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(baas_cmd() + args, env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_cli_against_a_server(server: Server, tmp_path: Path) -> None:
    env = dict(os.environ, BAAS_URL=server.url, BAAS_TOKEN=server.admin_token)
    env.pop("BAAS_DATA_DIR", None)
    assert "admin" in run(["whoami"], env).stdout
    image = run(["create-image", "cli-test", "--size", "8MiB"], env).stdout.strip()
    data = make_image(tmp_path / "disk.img", 8)
    up = run(["upload", image, str(tmp_path / "disk.img"), "--note", "from the cli"], env)
    assert "version 1" in up.stdout and "MiB" in up.stderr  # the progress bar
    versions = run(["versions", image], env).stdout
    assert "upload" in versions and "blank" in versions
    run(["download", image, "latest", str(tmp_path / "back.img")], env)
    assert (tmp_path / "back.img").read_bytes() == data
    assert image in run(["images"], env).stdout

    setup = run(["create-setup", "exp-cli", f"{image}:1"], env).stdout.strip()
    assert setup in run(["setups"], env).stdout
    mac = "52:54:00:30:00:%02x" % (uuid.uuid4().int % 250)
    subprocess.run(
        [sys.executable, "-c", f"import baas; baas.connect({server.url!r}, {server.admin_token!r}).register_machine({mac!r})"],
        check=True,
    )
    assert mac in run(["machines"], env).stdout
    job = run(["boot", mac, "--setup", setup, "--capture"], env).stdout.strip()
    assert "queued" in run(["logs", job], env).stdout
    waited = run(["wait", job, "--timeout", "0.5"], env, ok=False)
    assert waited.returncode == 2 and "still queued" in waited.stderr
    assert run(["cancel", job], env).stdout.strip() == "cancelled"
    failed = run(["wait", job], env, ok=False)
    assert failed.returncode == 3 and "cancelled" in failed.stderr
    job2 = run(["boot", mac, "--image", image, "--version", "1", "--disk", "first"], env).stdout.strip()
    assert job2 and job2 != job

    missing = run(["versions", str(uuid.uuid4())], env, ok=False)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    bad = run(["whoami"], dict(env, BAAS_TOKEN="baas_nope"), ok=False)
    assert bad.returncode == 1 and "Unauthenticated" in bad.stderr


def test_cli_embedded(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAAS_")}
    env["BAAS_DATA_DIR"] = str(tmp_path / "data")
    image = run(["-q", "create-image", "emb", "--size", "1MiB"], env).stdout.strip()
    make_image(tmp_path / "d.img", 1)
    assert "version 1" in run(["-q", "upload", image, str(tmp_path / "d.img")], env).stdout
    assert "admin" in run(["whoami"], env).stdout
    p = run(["versions", "nope"], env, ok=False)
    assert p.returncode == 1 and "InvalidInput" in p.stderr


def test_typing_of_an_example_script() -> None:
    """The stubs and the package type-check a script under mypy --strict."""
    pytest.importorskip("mypy")
    here = Path(__file__).resolve().parents[1]
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(here / "examples" / "quickstart.py"), str(here / "python" / "baas")],
        capture_output=True,
        text=True,
        cwd=here / "examples",
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_stubs_match_the_module() -> None:
    """mypy's stubtest: ``_baas.pyi`` against the built extension (names,
    signatures, classes that cannot be subclassed)."""
    pytest.importorskip("mypy")
    here = Path(__file__).resolve().parents[1]
    p = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "baas._baas"],
        capture_output=True,
        text=True,
        cwd=here,
    )
    assert p.returncode == 0, p.stdout + p.stderr
