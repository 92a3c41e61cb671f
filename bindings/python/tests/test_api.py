"""The Python API against a real server (remote) and an embedded store:
every method, every exception class from a real failure, transfers,
dedup and resume, the GIL released during an upload."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import List

import pytest

import baas
from conftest import Agent, Server, make_image

MAC = "52:54:00:12:34:56"


def test_connect_checks_address_and_token(server: Server) -> None:
    with pytest.raises(baas.Unauthenticated):
        baas.connect(server.url, token="baas_not-a-real-token")
    with pytest.raises(baas.InvalidInput) as e:
        baas.connect("ftp://lab", token="x")
    assert e.value.field == "url"
    with pytest.raises(baas.Unavailable):
        baas.connect("http://127.0.0.1:9", token="baas_x")
    assert isinstance(baas.NotFound("x"), baas.BaasError)
    c = baas.connect(server.url, token=server.admin_token)
    assert c.kind == "remote" and "remote" in repr(c)


def test_users_and_tokens(client: baas.Client) -> None:
    me = client.me()
    assert me.role == "admin"
    name = f"alice{uuid.uuid4().hex[:8]}"
    alice = client.create_user(name, role="user", display_name="Alice", email="a@lab")
    assert alice.name == name and alice.display_name == "Alice" and alice.role == "user"
    assert any(u.id == alice.id for u in client.users())
    assert client.user(alice.id).email == "a@lab"
    alice = alice.update(display_name="Alice L.", role="moderator")
    assert alice.display_name == "Alice L." and alice.role == "moderator"
    with pytest.raises(baas.Conflict):
        client.create_user(name)
    with pytest.raises(baas.InvalidInput) as e:
        client.create_user("bad name!")
    assert e.value.field == "name"
    tok, secret = alice.create_token("ci", ttl=3600)
    assert secret.startswith("baas_") and tok.name == "ci" and tok.expires_at is not None
    assert [t.id for t in alice.tokens()] == [tok.id]
    mine, _ = client.create_token("mine")
    assert any(t.id == mine.id for t in client.tokens())
    client.revoke_token(mine)
    assert next(t for t in client.tokens() if t.id == mine.id).revoked_at is not None
    assert tok.user_id == alice.id and repr(tok).startswith("Token(")
    alice.delete()
    with pytest.raises(baas.NotFound):
        client.user(alice.id)


def test_images_versions_and_transfers(client: baas.Client, tmp_path: Path) -> None:
    img = client.create_image("kernel-test", size="64MiB", disk="first", metadata={"kernel": "6.12"})
    assert img.size == 64 << 20 and img.disk == "first" and img.metadata == {"kernel": "6.12"}
    assert any(i.id == img.id for i in client.images())
    assert client.image(img.id).name == "kernel-test"
    [v0] = img.versions()
    assert v0.number == 0 and v0.source == "blank" and v0.stored_size == 0

    data = make_image(tmp_path / "disk.img", 16)
    seen: List[baas.TransferProgress] = []
    v1 = img.upload(tmp_path / "disk.img", progress=seen.append, note="first")
    assert v1.number == 1 and v1.size == len(data) and v1.note == "first"
    assert 0 < v1.stored_size <= len(data) and len(v1.root) == 64 and v1.data_chunks == 64
    assert seen and seen[-1].done == seen[-1].total and "Transfer(" in repr(seen[-1])

    # The same bytes again, from a file object: nothing new is stored.
    with open(tmp_path / "disk.img", "rb") as f:
        v2 = img.upload(f)
    assert v2.number == 2 and v2.root == v1.root and v2.stored_size == 0

    assert [v.number for v in img.versions()] == [0, 1, 2]
    assert img.version("latest") == v2 and img.version(1).root == v1.root

    back = tmp_path / "back.img"
    got: List[baas.TransferProgress] = []
    assert img.download(v1, back, progress=got.append).number == 1
    assert back.read_bytes() == data
    assert got[-1].phase == "receive" and got[-1].done == len(data)
    buf = io.BytesIO()
    img.download("latest", buf)
    assert buf.getvalue() == data

    img.update(name="renamed", disk="index:1", visibility="shared")
    assert img.refresh().name == "renamed" and img.disk == "index:1" and img.visibility == "shared"
    img.delete_version(v2)
    assert [v.number for v in img.versions()] == [0, 1]
    with pytest.raises(baas.NotFound):
        img.version(2)
    with pytest.raises(baas.InvalidInput):
        img.download("newest", buf)
    with pytest.raises(baas.InvalidInput):
        client.create_image("x", size="8 parsecs")
    with pytest.raises(baas.InvalidInput):
        img.upload(tmp_path / "missing.img")
    with pytest.raises(baas.InvalidInput):
        with open(tmp_path / "disk.img", "r") as text:
            img.upload(text)  # type: ignore[arg-type]
    img.delete()
    with pytest.raises(baas.NotFound):
        client.image(img.id)


def test_download_to_a_path_skips_zeros_and_stays_byte_identical(client: baas.Client, tmp_path: Path) -> None:
    img = client.create_image("sparse", size="16MiB")
    # Zeros with some data inside (a few bytes in one chunk, a random MiB)
    # and 4 MiB of zeros at the end.
    data = bytearray(8 << 20)
    data[(1 << 20) + 7 : (1 << 20) + 12] = b"hello"
    data[3 << 20 : 4 << 20] = os.urandom(1 << 20)
    src = tmp_path / "disk.img"
    src.write_bytes(bytes(data))
    v = img.upload(src)

    # A regular file (here one that held something longer before): same
    # bytes and length, the zero runs left as holes.
    back = tmp_path / "back.img"
    back.write_bytes(os.urandom(9 << 20))
    assert img.download(v, back).root == v.root
    assert back.read_bytes() == data
    st = os.stat(back)
    assert st.st_size == len(data)
    assert st.st_blocks * 512 < 2 << 20, st.st_blocks

    # Anything else gets every byte, zeros included: a pipe read by a thread.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # Both ends held here: the download's open does not wait, and the
    # reader sees no end of file before the download is over.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo, os.O_WRONLY)
    os.set_blocking(rfd, True)
    got = bytearray()

    def drain() -> None:
        while True:
            b = os.read(rfd, 1 << 20)
            if not b:
                return
            got.extend(b)

    t = threading.Thread(target=drain)
    t.start()
    try:
        img.download(v, str(fifo))
    finally:
        os.close(wfd)
        t.join(60)
        os.close(rfd)
    assert bytes(got) == bytes(data)


def test_remote_upload_sends_only_missing_chunks_and_resumes(admin: baas.Client, tmp_path: Path) -> None:
    img = admin.create_image("dedup", size="32MiB")
    path = tmp_path / "disk.img"
    data = bytearray(make_image(path, 32, seed=7))
    img.upload(path)

    # Change one MiB: only its chunks are sent.
    data[5 << 20 : 6 << 20] = os.urandom(1 << 20)
    path.write_bytes(bytes(data))
    seen: List[baas.TransferProgress] = []
    v = img.upload(path, progress=seen.append)
    sent = [t for t in seen if t.phase == "send"]
    assert sent[-1].total == 1 << 20, sent[-1]
    assert v.stored_size <= (1 << 20) + 4096

    # An upload broken off mid-way (the callback raises) resumes: running it
    # again sends only what never arrived. (96 MiB of new data: more than
    # the client keeps in flight, 6 batches of 8 MiB.)
    big = admin.create_image("resume", size="128MiB")
    bigpath = tmp_path / "big.img"
    bigdata = os.urandom(96 << 20)
    bigpath.write_bytes(bigdata)

    class Stop(Exception):
        pass

    def stop_midway(t: baas.TransferProgress) -> None:
        if t.phase == "send" and t.done > 0:
            raise Stop()

    with pytest.raises(Stop):
        big.upload(bigpath, progress=stop_midway)
    again: List[baas.TransferProgress] = []
    v = big.upload(bigpath, progress=again.append)
    resent = [t for t in again if t.phase == "send"][-1].total
    assert 0 < resent < 96 << 20, resent
    out = io.BytesIO()
    big.download(v, out)
    assert out.getvalue() == bigdata


def test_errors_from_real_failures(server: Server, admin: baas.Client, user: baas.Client) -> None:
    with pytest.raises(baas.NotFound):
        user.image(str(uuid.uuid4()))
    with pytest.raises(baas.PermissionDenied):
        user.create_user("mallory")
    with pytest.raises(baas.PermissionDenied):
        user.register_machine("52:54:00:aa:bb:cc")
    theirs = admin.create_image("admins", size=4096)
    with pytest.raises(baas.NotFound):  # may not even know it exists
        user.image(theirs.id)
    with pytest.raises(baas.InvalidInput):
        user.machine("not-a-mac")
    with pytest.raises(baas.InvalidInput):
        user.image("not-a-uuid")
    tok, secret = user.create_token("short")
    c = baas.connect(server.url, token=secret)
    user.revoke_token(tok)
    with pytest.raises(baas.Unauthenticated):
        c.me()


def test_setups_machines_and_jobs(client: baas.Client, tmp_path: Path) -> None:
    mac = "52:54:00:00:00:%02x" % (uuid.uuid4().int % 250)
    m = client.register_machine(mac, name=f"node-{uuid.uuid4().hex[:6]}", pool="lab")
    assert m.state == "ready" and m.pool == "lab" and m.inventory is None
    assert any(x.id == m.id for x in client.machines())
    assert client.machine(mac.upper()).id == m.id and client.machine(m.id).mac == mac
    with pytest.raises(baas.Conflict):
        client.register_machine(mac)
    m.update(name=m.name + "-x")
    assert m.refresh().name.endswith("-x")

    a = client.create_image("a", size="1MiB")
    b = client.create_image("b", size="1MiB")
    make_image(tmp_path / "a.img", 1)
    va = a.upload(tmp_path / "a.img")
    setup = client.create_setup("exp-42", [(a, va), (b, "latest", "index:1")])
    assert [e["version"] for e in setup.entries] == [1, "latest"]
    assert setup.entries[1]["disk"] == "index:1"
    assert client.setup(setup.id).name == "exp-42" and any(s.id == setup.id for s in client.setups())
    with pytest.raises(baas.InvalidInput):
        client.create_setup("bad", [{"image_id": str(uuid.uuid4())}])

    job = m.boot(setup, capture=True)
    assert job.state == "queued" and [e["version"] for e in job.entries] == [1, 0]
    assert all(e["capture"] for e in job.entries) and all(e["capture"] for e in client.setup(setup.id).entries)
    job2 = m.boot(a, version=va, disk="index:0")
    assert [j.id for j in m.queue()] == [job.id, job2.id]
    assert {j.id for j in client.jobs(machine=m)} >= {job.id, job2.id}
    assert [j.id for j in client.jobs(machine=m, states=["queued"], limit=1)] == [job2.id]
    assert client.job(job.id).state == "queued" and not job.done

    with pytest.raises(TimeoutError):
        job.wait(timeout=0.2, poll=0.05)
    job2.cancel()
    with pytest.raises(baas.JobFailed) as e:
        job2.wait(timeout=5)
    assert "cancelled" in str(e.value) and job2.state == "cancelled" and job2.done
    assert any(ev.kind == "cancelled" for ev in job2.events())
    with pytest.raises(baas.Conflict):
        job2.cancel()
    with pytest.raises(baas.InvalidInput):
        m.boot(setup, disk="first")

    setup.update(name="exp-43", entries=[a])
    assert setup.name == "exp-43" and len(setup.entries) == 1
    job.cancel()
    m.retire()
    assert m.state == "retired"
    with pytest.raises(baas.Conflict):
        m.boot(a)
    setup.delete()
    with pytest.raises(baas.NotFound):
        client.setup(setup.id)


def test_job_wait_follows_the_agent(server: Server, admin: baas.Client, tmp_path: Path) -> None:
    mac = "52:54:00:10:00:%02x" % (uuid.uuid4().int % 250)
    m = admin.register_machine(mac)
    img = admin.create_image("wait", size="1MiB")
    agent = Agent(server, server.admin_token, mac)

    ok = m.boot(img)
    agent.take()
    agent.advance(ok.id, "running", "booted")
    agent.advance(ok.id, "succeeded", "done")
    assert ok.wait(timeout=30, poll=0.05).state == "succeeded"
    kinds = [e.kind for e in ok.events()]
    assert "running" in kinds and "succeeded" in kinds

    bad = m.boot(img)
    agent.take()
    agent.fail(bad.id, "flash", "no disk matches serial:XYZ")
    with pytest.raises(baas.JobFailed) as e:
        bad.wait(timeout=30, poll=0.05)
    assert "no disk matches serial:XYZ" in str(e.value)
    assert e.value.job["state"] == "failed" and bad.error is not None


def test_gil_is_released_during_an_upload(embedded: baas.Client, tmp_path: Path) -> None:
    img = embedded.create_image("big", size="256MiB")
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        for _ in range(96):
            f.write(os.urandom(1 << 20))
    done = threading.Event()
    result: List[baas.Version] = []

    def run() -> None:
        result.append(img.upload(path))
        done.set()

    t = threading.Thread(target=run)
    t.start()
    # Python code keeps running in this thread while the upload is going on
    # in the other: the upload does not hold the GIL.
    ticks_while_uploading = 0
    while not done.is_set():
        ticks_while_uploading += 1
        sum(range(100))
    t.join()
    assert result and result[0].size == 96 << 20
    assert ticks_while_uploading > 100, ticks_while_uploading


def test_embedded_opens_data_dirs_users_and_postgres(tmp_path: Path) -> None:
    c = baas.open(tmp_path / "d")
    assert c.kind == "embedded" and c.me().name == "admin"
    c.create_user("bob")
    bob = baas.open(tmp_path / "d", user="bob")
    assert bob.me().name == "bob"
    with pytest.raises(baas.PermissionDenied):
        bob.create_user("eve")
    with pytest.raises(baas.NotFound):
        baas.open(tmp_path / "d", user="nobody")
    with pytest.raises(baas.Unauthenticated):
        baas.open(tmp_path / "d", token="baas_wrong")
    _, secret = c.create_token("t", user=c.users()[0])
    assert baas.open(tmp_path / "d", token=secret).me().role == "admin"
    with pytest.raises(baas.InvalidInput):
        baas.open("postgres://localhost/x")

    url = os.environ.get("BAAS_TEST_POSTGRES_URL")
    if not url or not shutil.which("psql"):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs PostgreSQL (BAAS_TEST_POSTGRES_URL) and psql")
        pytest.skip("no PostgreSQL")
    db = f"pybaas_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", url, "-qc", f"CREATE DATABASE {db}"], check=True)
    try:
        dburl = url.rsplit("/", 1)[0] + "/" + db
        pg = baas.open(dburl, chunks=tmp_path / "chunks")
        img = pg.create_image("pg", size="1MiB")
        make_image(tmp_path / "p.img", 1)
        v = img.upload(tmp_path / "p.img")
        assert baas.open(dburl, chunks=tmp_path / "chunks").image(img.id).version().root == v.root
        del pg
    finally:
        subprocess.run(["psql", url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], check=False)


def test_parse_size() -> None:
    assert baas.parse_size("8GiB") == 8 << 30 and baas.parse_size(4096) == 4096
    with pytest.raises(baas.InvalidInput):
        baas.parse_size("lots")
