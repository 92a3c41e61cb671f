"""The original BAAS quickstart (create a user, create an image, download
it, change it, upload it, boot a machine with it), rewritten in Python
against a real server, with the machine's agent played over the real
agent API; then the same flow embedded."""

from __future__ import annotations

import uuid
from pathlib import Path

import baas
from conftest import Agent, Server


def test_quickstart_in_python(server: Server, admin: baas.Client, tmp_path: Path) -> None:
    name = f"USER{uuid.uuid4().hex[:6]}"
    user = admin.create_user(name, email="EMAIL")
    _, secret = admin.create_token("quickstart", user=user)
    c = baas.connect(server.url, token=secret)
    assert c.me().name == name

    img = c.create_image("Test image", size="4MiB", disk="first")
    blank = tmp_path / "image.img"
    img.download("latest", blank)
    assert blank.read_bytes() == bytes(4 << 20)

    with open(blank, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"hello, bare metal" * 1000)
    v = img.upload(blank, progress=print)
    assert v.number == 1

    mac = "52:54:00:20:00:%02x" % (uuid.uuid4().int % 250)
    admin.register_machine(mac)
    agent = Agent(server, server.admin_token, mac)
    setup = c.create_setup("exp-42", [(img, v)])
    job = c.machine(mac).boot(setup, capture=True)
    taken = agent.take()
    assert taken["id"] == job.id
    agent.advance(job.id, "running")
    agent.advance(job.id, "capturing")
    agent.advance(job.id, "succeeded")
    job.wait(timeout=60, poll=0.05)
    assert [e.kind for e in job.events()][0] == "queued"
    back = tmp_path / "back.img"
    img.download(v, back)
    assert back.read_bytes() == blank.read_bytes()


def test_quickstart_embedded(tmp_path: Path) -> None:
    c = baas.open(tmp_path / "data")
    img = c.create_image("Test image", size="4MiB")
    blank = tmp_path / "image.img"
    img.download("latest", blank)
    with open(blank, "r+b") as f:
        f.write(b"x" * 70000)
    v = img.upload(blank)
    c.register_machine("52:54:00:12:34:56")
    job = c.machine("52-54-00-12-34-56").boot(c.create_setup("exp", [(img, v)]), capture=True)
    assert job.state == "queued" and job.entries[0]["capture"]
    assert [j.id for j in c.machine("52:54:00:12:34:56").queue()] == [job.id]
