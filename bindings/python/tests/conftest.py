"""Fixtures: a real ``baas-server`` on a free port (built with cargo, or
``BAAS_SERVER_BIN``), its bootstrap admin token, an embedded store, and an
HTTP helper that plays a machine's agent (real requests to the real agent
API)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

import baas

REPO = Path(__file__).resolve().parents[3]


def _server_bin() -> str:
    env = os.environ.get("BAAS_SERVER_BIN")
    if env:
        return env
    subprocess.run(["cargo", "build", "-q", "-p", "baas-server"], cwd=REPO, check=True)
    return str(REPO / "target" / "debug" / "baas-server")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class Server:
    """A running baas-server."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data.parent / "server.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BAAS_")}
        self.proc = subprocess.Popen(
            [_server_bin(), "--data-dir", str(data), "serve", "--bind", "127.0.0.1", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("baas-server did not come up: " + (data.parent / "server.log").read_text())
            time.sleep(0.05)
        self.admin_token = (data / "admin-token").read_text().strip()

    def http(self, method: str, path: str, token: str, body: Optional[Dict[str, Any]] = None) -> Any:
        """One JSON request; returns the decoded answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Agent:
    """Plays the agent of one machine over the real agent API."""

    def __init__(self, server: Server, admin_token: str, mac: str) -> None:
        self.server = server
        self.mac = mac
        out = server.http("POST", f"/api/v1/machines/{mac}/agent-token", admin_token, {})
        self.token: str = out["secret"]

    def take(self) -> Dict[str, Any]:
        """Takes the next job (it becomes provisioning)."""
        out = self.server.http("GET", f"/api/v1/agent/machines/{self.mac}/next-job?wait_ms=0", self.token)
        assert out is not None and "id" in out, out
        job: Dict[str, Any] = out
        return job

    def advance(self, job: str, state: str, message: str = "") -> None:
        self.server.http("POST", f"/api/v1/agent/jobs/{job}/advance", self.token, {"state": state, "message": message})

    def fail(self, job: str, phase: str, reason: str) -> None:
        self.server.http("POST", f"/api/v1/agent/jobs/{job}/fail", self.token, {"phase": phase, "reason": reason})


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("server") / "data")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def admin(server: Server) -> baas.Client:
    return baas.connect(server.url, token=server.admin_token)


@pytest.fixture()
def user(admin: baas.Client, server: Server) -> baas.Client:
    """A fresh user with their own token, connected remotely."""
    name = f"u{time.monotonic_ns()}"
    u = admin.create_user(name, role="user", email=f"{name}@lab")
    _, secret = admin.create_token("pytest", user=u)
    return baas.connect(server.url, token=secret)


@pytest.fixture()
def embedded(tmp_path: Path) -> baas.Client:
    return baas.open(tmp_path / "store")


@pytest.fixture(params=["remote", "embedded"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> baas.Client:
    """An admin client of either kind: the same tests run on both."""
    if request.param == "remote":
        c: baas.Client = request.getfixturevalue("admin")
        return c
    return baas.open(tmp_path / "store")


def make_image(path: Path, mib: int, seed: int = 1) -> bytes:
    """A sparse-ish image: random data in every fourth MiB, zeros elsewhere."""
    import random

    rng = random.Random(seed)
    buf = bytearray(mib << 20)
    for i in range(0, mib, 4):
        buf[i << 20 : (i + 1) << 20] = rng.randbytes(1 << 20)
    path.write_bytes(bytes(buf))
    return bytes(buf)
