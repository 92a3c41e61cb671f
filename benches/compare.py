#!/usr/bin/env python3
"""BAAS against its peers, every comparison in one run on the same data.

Run through `benches/compare.sh` (which installs the tools and builds the
release binaries); this file does the measuring and writes
`benches/REPORT.md` and its plots.

Every timed step runs RUNS times (default 3) on cold caches (as root) and is
reported as median, min and max; every figure is also given as a ratio
against a baseline measured in the same run. Bytes on the wire are read from
the programs themselves: the agent's counters, rsync's `--stats`, nginx's
access log (for bmaptool and casync over HTTP), curl's. For A -> B and
A -> C they count both directions where the protocol sends more than a
request line up (the agent's delta requests, rsync's checksums).

Work that produces sizes only (the storage row's casync stores and zstd
copies) runs in the background at idle priority, and is stopped during
every timed step: see `Background`.

Environment: SIZE_MIB (4096), RUNS (3), SEED (1), VERSIONS (10),
COMPACT (1: also measure storage after `baas-server admin compact`),
WRK_SECONDS (10), OUT (benches/REPORT.md), KEEP (keep the work directory).
"""

import contextlib
import ctypes
import errno
import json
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
SERVER = REL / "baas-server"
AGENT = REL / "baas-agent"
DATA = REL / "compare-data"
UPLOAD = REL / "chunk-upload"

SIZE_MIB = int(os.environ.get("SIZE_MIB", "4096"))
RUNS = int(os.environ.get("RUNS", "3"))
SEED = int(os.environ.get("SEED", "1"))
VERSIONS = int(os.environ.get("VERSIONS", "10"))
COMPACT = os.environ.get("COMPACT", "1") == "1"
WRK_SECONDS = int(os.environ.get("WRK_SECONDS", "10"))
DEFAULT_OUT = ROOT / "benches" / "REPORT.md"
# Another OUT (a trial run) leaves README.md's headline table alone.
OUT = Path(os.environ.get("OUT", DEFAULT_OUT)).resolve()
STEP_TIMEOUT = int(os.environ.get("STEP_TIMEOUT", "900"))
MAC = "52:54:00:c0:4a:01"
MIB = 1 << 20


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# Wall-clock seconds by section of the run (in order), and what some of it
# went to across sections; both go into results.json and the report's
# "Where the time went".
SECTIONS = {}
SPENT = {}
# By background job: the seconds it was allowed to run (quiet spells not
# counted) and how long the run waited for it at the end.
BACKGROUND = {}


def idle_seconds():
    """CPU seconds all cores have spent idle (or waiting for I/O) since
    boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


# Idle CPU seconds (summed over cores) by section: what was left unused.
IDLE = {}


class section:
    """Times a section of the run: `with section("name"): ...`."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        log(self.name)
        self.t = time.monotonic()
        self.idle = idle_seconds()

    def __exit__(self, *exc):
        secs = time.monotonic() - self.t
        idle = idle_seconds() - self.idle
        SECTIONS[self.name] = SECTIONS.get(self.name, 0) + secs
        IDLE[self.name] = IDLE.get(self.name, 0) + idle
        log(f"{self.name}: {secs:.1f} s, {idle:.0f} s of a core idle")


def spent(what, t):
    """Adds the seconds since monotonic time t to SPENT[what]."""
    SPENT[what] = SPENT.get(what, 0) + time.monotonic() - t


def together(*jobs):
    """Runs the callables at the same time (their subprocesses use both
    cores); their results in order. Only for preparation nobody times:
    sizes and formats, never a figure in seconds."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(j) for j in jobs]
        return [f.result() for f in futures]


class Background:
    """Untimed work run on the side: the storage row's casync stores and
    zstd sizes (over 250 s of one core). Its processes run at idle priority
    (SCHED_IDLE), so they fill the cores the run's untimed work leaves free
    (checks, disk resets, data, uploads), and never share them with a
    figure: every timed step runs in `quiet()`, which stops them (SIGSTOP to
    their process groups) until the step is over and holds back new ones."""

    def __init__(self):
        self.cond = threading.Condition()
        self.paused = 0
        self.busy = 0
        self.procs = set()
        self.stopping = False
        self.pool = ThreadPoolExecutor(4)
        self.futures = {}
        # Seconds spent quiet so far (the current quiet spell not included).
        self.quiet_total = 0.0
        self.quiet_since = None

    def sh(self, *args, capture=False):
        """sh() for background work: waits while the run is quiet."""
        args = [str(a) for a in args]
        with self.cond:
            while self.paused and not self.stopping:
                self.cond.wait()
            if self.stopping:
                raise RuntimeError("the run stopped")
            # SCHED_IDLE: it only gets a core nothing else wants, so it
            # fills the gaps of the untimed work without slowing it.
            p = subprocess.Popen(["chrt", "--idle", "0", *args],
                                 stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)
            self.procs.add(p)
        try:
            # Wall-clock time, stopped spells included: a generous bound.
            out, err = p.communicate(timeout=4 * STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        finally:
            with self.cond:
                self.procs.discard(p)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {p.returncode}: {err}")
        return out

    def _signal(self, sig):
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)

    @contextlib.contextmanager
    def working(self):
        """For the background's own file work (deleting, merging stores):
        waits while the run is quiet, and `quiet()` waits for it to end."""
        with self.cond:
            while self.paused and not self.stopping:
                self.cond.wait()
            self.busy += 1
        try:
            yield
        finally:
            with self.cond:
                self.busy -= 1
                self.cond.notify_all()

    @contextlib.contextmanager
    def quiet(self):
        """Nothing of the background runs inside this block."""
        with self.cond:
            self.paused += 1
            if self.paused == 1:
                self._signal(signal.SIGSTOP)
                self.quiet_since = time.monotonic()
            while self.busy:
                self.cond.wait()
        try:
            yield
        finally:
            with self.cond:
                self.paused -= 1
                if not self.paused:
                    self.quiet_total += time.monotonic() - self.quiet_since
                    self.quiet_since = None
                    self._signal(signal.SIGCONT)
                    self.cond.notify_all()

    def _quiet_so_far(self):
        with self.cond:
            now = time.monotonic()
            return self.quiet_total + (now - self.quiet_since if self.quiet_since else 0.0)

    def start(self, name, job, *args):
        """Runs job(*args) on a thread of its own; `result(name)` waits for
        it. BACKGROUND[name] gets the seconds it was allowed to run (not
        counting quiet spells) and how long `result` waited for it."""

        def run():
            t, q = time.monotonic(), self._quiet_so_far()
            try:
                return job(*args)
            finally:
                BACKGROUND.setdefault(name, {})["seconds"] = time.monotonic() - t - (self._quiet_so_far() - q)

        BACKGROUND[name] = {}
        self.futures[name] = self.pool.submit(run)

    def result(self, name):
        t = time.monotonic()
        try:
            return self.futures[name].result()
        finally:
            BACKGROUND[name]["waited"] = time.monotonic() - t

    def stop(self):
        """Kills whatever still runs (on the way out after an error)."""
        with self.cond:
            self.stopping = True
            self._signal(signal.SIGKILL)
            self._signal(signal.SIGCONT)
            self.cond.notify_all()


BG = Background()


def sh(*args, check=True, capture=False, **kw):
    args = [str(a) for a in args]
    kw.setdefault("stdout", subprocess.PIPE if capture else subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.PIPE if capture else None)
    r = subprocess.run(args, check=False, timeout=STEP_TIMEOUT, text=True, **kw)
    if check and r.returncode != 0:
        err = r.stderr if capture else ""
        raise RuntimeError(f"{' '.join(args)} exited {r.returncode}: {err}")
    return r


def timed(*args, **kw):
    with BG.quiet():
        drop_caches()
        t = time.monotonic()
        r = sh(*args, **kw)
        return time.monotonic() - t, r


def drop_caches():
    t = time.monotonic()
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass
    spent("cold caches (sync, drop_caches)", t)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def extents(path):
    """The data extents of a file, as (start, end) offsets (SEEK_DATA and
    SEEK_HOLE); everything else reads as zeros."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            pos = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append((start, pos))
    finally:
        os.close(fd)
    return out


def subtract(xs, ys):
    """The parts of sorted disjoint ranges xs outside sorted disjoint ranges
    ys."""
    out, j = [], 0
    for s, e in xs:
        while j < len(ys) and ys[j][1] <= s:
            j += 1
        cur, k = s, j
        while k < len(ys) and ys[k][0] < e:
            if ys[k][0] > cur:
                out.append((cur, ys[k][0]))
            cur = max(cur, ys[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def data_union(x, y, align=4096):
    """Where x or y holds data, in merged `align`ed ranges: anywhere else
    both are holes, that is equal zeros."""
    size = os.stat(x).st_size
    spans = sorted((s // align * align, min(size, -(-e // align) * align)) for s, e in extents(x) + extents(y))
    out = []
    for s, e in spans:
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def chunks_of(x, y, step=1 << 20):
    """(offset, x's bytes, y's bytes) over data_union(x, y), `step` at a
    time; both files must have the same size."""
    fx, fy = os.open(x, os.O_RDONLY), os.open(y, os.O_RDONLY)
    try:
        for s, e in data_union(x, y):
            for off in range(s, e, step):
                n = min(step, e - off)
                yield off, os.pread(fx, n, off), os.pread(fy, n, off)
    finally:
        os.close(fx)
        os.close(fy)


# In-memory copies (/dev/shm, when it has room) of A, B and C for the
# checks to read instead: the timed steps drop the page cache, so the
# files on disk would be read cold for every check.
REFERENCE = {}


# Directories outside the work directory (in /dev/shm) that the run removes
# at its end.
TEMP_DIRS = []


def keep_references(files):
    d = snapshot_dir(files[0], None)
    if d is None:
        return
    d = Path(tempfile.mkdtemp(prefix="baas-compare-ref-", dir=d))
    TEMP_DIRS.append(d)
    for f in files:
        REFERENCE[f] = d / f.name
        sparse_copy(f, REFERENCE[f])


def same(a, b):
    """Whether two files hold the same bytes, as `cmp` would say; reads
    only where either holds data (where both have holes both read zeros).
    Both are synced first so their extents are final. A file with a copy
    in REFERENCE is read from there."""
    t = time.monotonic()
    a, b = REFERENCE.get(a, a), REFERENCE.get(b, b)
    try:
        for f in [a, b]:
            fd = os.open(f, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        if os.stat(a).st_size != os.stat(b).st_size:
            return False
        return all(p == q for _, p, q in chunks_of(a, b))
    finally:
        spent("correctness checks (disk = target)", t)


def sparse_copy(src, dst):
    sh("cp", "--sparse=always", src, dst)


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def punch_hole(fd, off, n):
    """fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)."""
    if LIBC.fallocate(fd, 2 | 1, off, n) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"punching a hole: {os.strerror(e)}")


class DiskOfA:
    """Puts A back on the file-backed disk before a run, exactly as
    `cp --sparse=always A disk` leaves it (the same bytes, holes where A's
    4 KiB blocks are zeros), but cheaply when it knows what the disk holds:
    nothing to do if nothing wrote to it since it held A (same inode, size,
    mtime and ctime), only the blocks where A and B (or C) differ if a
    checked run left B (or C) on it, else a full copy. Then the disk holds
    A's bytes; where it holds data but the first full copy had a hole (a
    run wrote a whole chunk of which only a block changed), those bytes are
    checked to be zeros and made a hole again. Any other difference from
    the first full copy's data extents means a full copy."""

    def __init__(self, a, disk, changed):
        self.a, self.disk, self.changed = a, disk, changed
        self.holds, self.stamp, self.layout = None, None, None
        self.counts = {"untouched": 0, "changed blocks put back": 0, "holes punched again": 0, "full copies": 0}

    def _stamp(self):
        try:
            st = os.stat(self.disk)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def holding(self, what):
        """The disk was just checked to hold `what` (A, B or C's path)."""
        self.holds, self.stamp = what, self._stamp()

    def _copy(self):
        sparse_copy(self.a, self.disk)
        self.counts["full copies"] += 1

    def _put_back(self, blocks, block=4096):
        zero = bytes(block)
        fa, fd = os.open(self.a, os.O_RDONLY), os.open(self.disk, os.O_WRONLY)
        try:
            for k in blocks:
                data = os.pread(fa, block, k * block)
                if data == zero:
                    punch_hole(fd, k * block, block)
                else:
                    os.pwrite(fd, data, k * block)
        finally:
            os.close(fa)
            os.close(fd)
        self.counts["changed blocks put back"] += 1

    def _punch(self, spans, step=1 << 20):
        fd = os.open(self.disk, os.O_RDWR)
        try:
            for s, e in spans:
                for off in range(s, e, step):
                    n = min(step, e - off)
                    assert os.pread(fd, n, off) == bytes(n), "A has data where its copy has a hole"
                punch_hole(fd, s, e - s)
        finally:
            os.close(fd)
        self.counts["holes punched again"] += 1

    def put_a(self):
        t = time.monotonic()
        known = self.stamp is not None and self._stamp() == self.stamp
        if known and self.holds == self.a:
            self.counts["untouched"] += 1
        elif known and self.holds in self.changed:
            self._put_back(self.changed[self.holds])
        else:
            self._copy()
        if self.layout is None:
            self.layout = extents(self.disk)  # the first put-back is always a full copy
        extra = subtract(extents(self.disk), self.layout)
        if extra:
            self._punch(extra)
        if extents(self.disk) != self.layout:
            log("the disk's holes differ from a fresh copy of A: copying A in full")
            self._copy()
            assert extents(self.disk) == self.layout, "a fresh copy of A has other holes than the first"
        self.holding(self.a)
        spent("disk resets (A put back)", t)


def remove(path):
    """Deletes a file; freeing a big one takes a while here (the file
    system is mounted with `discard`), counted in SPENT."""
    t = time.monotonic()
    Path(path).unlink(missing_ok=True)
    spent("removing disks (ext4 discards the freed blocks)", t)


def fresh_disk(path):
    remove(path)
    with open(path, "wb") as f:
        f.truncate(SIZE_MIB * MIB)


def du(path):
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total


class Stat:
    """Several runs of one measurement: seconds and bytes on the wire."""

    def __init__(self, name, secs, wire=None):
        self.name, self.secs, self.wire = name, list(secs), wire

    @property
    def med(self):
        return statistics.median(self.secs)

    def cell(self):
        s = self.secs
        if len(s) == 1:
            return f"{s[0]:.2f}"
        return f"{self.med:.2f} ({min(s):.2f}..{max(s):.2f})"


class Lab:
    """The servers every comparison talks to, all on 127.0.0.1."""

    def __init__(self, work):
        self.work = Path(work)
        self.procs = []
        self.www = self.work / "www"
        self.www.mkdir()
        (self.www / "small.json").write_text('{"job": null}\n')
        self.access_log = self.work / "nginx-access.log"

    def start_nginx(self):
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        d = self.work / "nginx"
        d.mkdir()
        self.nport = free_port()
        temp = " ".join(
            f"{k}_temp_path {d}/{k};" for k in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        )
        (d / "nginx.conf").write_text(
            f"""worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  log_format bytes '$bytes_sent';
  access_log {self.access_log} bytes;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  {temp}
  server {{
    listen 127.0.0.1:{self.nport};
    root {self.www};
    location = /small.json {{ access_log off; }}
    location /sink {{ client_max_body_size 0; access_log off; return 200 "ok\\n"; }}
  }}
}}
"""
        )
        self.procs.append(subprocess.Popen([nginx, "-c", str(d / "nginx.conf"), "-g", "daemon off;"]))
        self.wait_http(f"http://127.0.0.1:{self.nport}/small.json")

    def nginx_bytes(self):
        """Bytes nginx has sent since the last call."""
        text = self.access_log.read_text() if self.access_log.exists() else ""
        lines = text.splitlines()
        start = getattr(self, "_log_mark", 0)
        self._log_mark = len(lines)
        return sum(int(x) for x in lines[start:] if x.strip().isdigit())

    def start_rsyncd(self):
        d = self.work / "rsyncd"
        d.mkdir()
        self.rport = free_port()
        (d / "rsyncd.conf").write_text(
            f"pid file = {d}/pid\nuse chroot = no\n[data]\npath = {self.www}\nread only = yes\nuid = root\ngid = root\n"
        )
        self.procs.append(
            subprocess.Popen(
                ["rsync", "--daemon", "--no-detach", f"--port={self.rport}", "--address=127.0.0.1", f"--config={d}/rsyncd.conf"]
            )
        )
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.rport)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("rsync daemon did not start")

    def start_server(self, data_dir):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        err = open(self.work / "server.log", "ab")
        self.server = subprocess.Popen(
            [SERVER, "--data-dir", data_dir, "--bind", "127.0.0.1", "--port", str(self.port)],
            stderr=err,
            stdout=err,
        )
        self.procs.append(self.server)
        self.wait_http(f"{self.base}/healthz")
        self.token = (Path(data_dir) / "admin-token").read_text().strip()

    def stop_server(self):
        if self.server not in self.procs:
            return
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=60)
        self.procs.remove(self.server)

    @staticmethod
    def wait_http(url):
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer")

    def api(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=STEP_TIMEOUT) as r:
            text = r.read()
        return json.loads(text) if text else None

    def upload(self, image, path, cold=True):
        """Uploads a file as the image's next version (curl, streamed);
        returns (seconds, version json). `cold`: caches dropped first."""
        with BG.quiet() if cold else contextlib.nullcontext():
            if cold:
                drop_caches()
            t = time.monotonic()
            r = sh(
                "curl", "-sSf", "-X", "POST", "-H", f"Authorization: Bearer {self.token}", "-H",
                "Content-Type: application/octet-stream", "-T", path,
                f"{self.base}/api/v1/images/{image}/versions", capture=True,
            )
            return time.monotonic() - t, json.loads(r.stdout)

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


class Agent:
    """baas-agent on a file-backed disk, against the lab's server."""

    def __init__(self, lab, work):
        self.lab, self.work = lab, Path(work)
        self.disk = self.work / "disk.img"
        m = lab.api("POST", "/api/v1/machines", {"mac": MAC, "name": "compare", "arch": "x86_64"})
        self.machine = m.get("id") or m["machine"]["id"]
        tok = lab.api("POST", f"/api/v1/machines/{self.machine}/agent-token", {})
        root = self.work / "root"
        (root / "sys/block").mkdir(parents=True)
        (root / "sys/class/net/eth0").mkdir(parents=True)
        (root / "sys/class/net/eth0/address").write_text(MAC + "\n")
        (root / "sys/class/net/eth0/type").write_text("1\n")
        (root / "proc").mkdir()
        for f in ["meminfo", "cpuinfo"]:
            shutil.copy(f"/proc/{f}", root / "proc" / f)
        self.config = self.work / "agent.toml"
        self.config.write_text(
            f'server = "{lab.base}"\nmac = "{MAC}"\ntoken = "{tok.get("secret") or tok["token"]}"\n'
            f'root = "{root}"\n[disks]\n"first" = "{self.disk}"\n'
        )
        self.runs = 0

    def queue(self, image, version, capture=False):
        job = self.lab.api(
            "POST",
            f"/api/v1/machines/{self.machine}/jobs",
            {"image_id": image, "version": version, "disk": "first", "capture": capture},
        )
        return job["id"]

    def cancel(self, job):
        self.lab.api("POST", f"/api/v1/jobs/{job}/cancel", {})

    def run(self):
        """One agent pass (`--once`): seconds and its counters."""
        self.runs += 1
        logf = self.work / f"agent-{self.runs}.log"
        with open(logf, "w") as err:
            secs, _ = timed(AGENT, "--config", self.config, "--once", "--no-reboot", "--log", "info", stderr=err)
        text = logf.read_text()

        def field(name):
            found = re.findall(rf"(?:^|\s){name}=(\d+)", text)
            return int(found[-1]) if found else 0

        return secs, {k: field(k) for k in ["frame_bytes_received", "frame_bytes_sent", "bytes_sent", "bytes_received",
                                       "fetch_request_bytes"]}

    def flash(self, image, version):
        job = self.queue(image, version)
        secs, c = self.run()
        self.cancel(job)
        return secs, c


def rounds(methods, runs=RUNS):
    """Measures the (name, f) methods of one comparison in `runs` rounds,
    each running every method once, starting one further along each round
    (f returns (seconds, bytes)). Interleaved, a spell of this shared
    machine's disk or CPU being slow or fast touches every method, not the
    three runs of one; rotated, no method always runs right after the same
    other. Returns {name: Stat}, in the order given."""
    secs = {name: [] for name, _ in methods}
    wire = {name: [] for name, _ in methods}
    for k in range(runs):
        for name, f in methods[k % len(methods):] + methods[:k % len(methods)]:
            t, b = f()
            secs[name].append(t)
            wire[name].append(b)
            SPENT["timed steps (the figures)"] = SPENT.get("timed steps (the figures)", 0) + t
    return {name: Stat(name, secs[name], statistics.median(wire[name]) if wire[name][0] is not None else None)
            for name, _ in methods}


def render(raw):
    """Writes the report again from a results.json of an earlier run."""
    r = json.loads(Path(raw).read_text())
    for key in ["full", "ab", "ac", "capture", "server"]:
        for name, v in r[key].items():
            if isinstance(v, dict):
                r[key][name] = Stat(v["name"], v["secs"], v["wire"])
    write_report(r, None)


def main():
    if sys.argv[1:2] == ["--render"]:
        render(sys.argv[2])
        return
    for tool in ["bmaptool", "rsync", "casync", "zstd", "curl", "wrk", "gnuplot", "debugfs"]:
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"compare.py: missing {tool} (run benches/compare.sh, which installs it)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="baas-compare.", dir=os.environ.get("TMPDIR", "/var/tmp")))
    os.chmod(work, 0o755)
    lab = Lab(work)
    try:
        report = measure(lab, work)
        report["total_seconds"] = time.monotonic() - started
        report["sections"] = SECTIONS
        report["spent"] = SPENT
        report["background"] = BACKGROUND
        report["idle"] = IDLE
        log("where the time went: " + ", ".join(f"{k} {v:.0f} s" for k, v in SECTIONS.items()))
        raw = OUT.parent / "report" / "results.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(report, default=lambda o: o.__dict__, indent=1))
        write_report(report, work)
    finally:
        BG.stop()
        lab.close()
        for d in TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


def measure(lab, work):
    size = SIZE_MIB * MIB
    www = lab.www
    a, b, c = www / "a.img", www / "b.img", www / "c.img"
    with section(f"data: {SIZE_MIB} MiB ext4 image A, B, C (seed {SEED})"):
        t = time.monotonic()
        sh(DATA, "base", a, SIZE_MIB, 25, SEED)
        BG.start("the storage row's casync stores and zstd sizes", storage_peers, a, work)
        sparse_copy(a, b)
        sh(DATA, "add-files", b, SEED * 1000 + 1, max(1, SIZE_MIB // 100))
        sparse_copy(a, c)
        sh(DATA, "scatter", c, SEED, 1)
        data_secs = time.monotonic() - t
        blocks_b, blocks_c = list(diff_blocks(a, b)), list(diff_blocks(a, c))
        changed_b, changed_c = len(blocks_b) * 4096, len(blocks_c) * 4096
        for f in [a, b, c]:
            os.chmod(f, 0o644)
        keep_references([a, b, c])
    with section("peers' formats (bmap, zstd, casync index and store), upload of A, B, C"):
        lab.start_nginx()
        lab.start_rsyncd()
        lab.start_server(work / "data")
        image = lab.api("POST", "/api/v1/images", {"name": "compare", "size": size})["image"]["id"]
        castore = www / "castore"

        def bmap_zstd():
            sh("bmaptool", "-q", "create", "-o", www / "a.bmap", a)
            sh("zstd", "-q", "-1", "-T0", a, "-o", www / "a.img.zst")

        def casync_make(v):
            # Each into a store of its own, merged below: casync's chunker
            # uses one core.
            sh("casync", "make", f"--store={work / ('castore-' + v.stem)}", www / f"{v.stem}.caibx", v)

        def uploads():
            return [upload_number(lab, image, v) for v in [a, b, c]]

        _, _, _, (va, vb, vc) = together(bmap_zstd, lambda: casync_make(b), lambda: casync_make(c), uploads)
        castore.mkdir()
        for v in [b, c]:
            merge_store(work / f"castore-{v.stem}", castore)
    agent = Agent(lab, work)
    disk = agent.disk
    r = {"size": size, "changed_b": changed_b, "changed_c": changed_c, "data_secs": data_secs, "runs": RUNS,
         "seed": SEED, "versions": VERSIONS, "wrk_seconds": WRK_SECONDS,
         "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()[0],
         "casync_tmpdir": CASYNC_ENV.get("TMPDIR"), "interleaved": True, "machine": machine_description()}

    # 1. Full flash of A onto an empty disk.

    def agent_full():
        fresh_disk(disk)
        s, ctr = agent.flash(image, va)
        assert same(a, disk), "disk differs from A after the agent's flash"
        return s, ctr["frame_bytes_received"]

    def dd_full():
        remove(disk)
        s, _ = timed("dd", f"if={a}", f"of={disk}", "bs=4M", "conv=fsync", "status=none")
        return s, size

    def bmap_local():
        fresh_disk(disk)
        s, _ = timed("bmaptool", "-q", "copy", "--bmap", www / "a.bmap", a, disk)
        return s, None

    def bmap_http():
        fresh_disk(disk)
        lab.nginx_bytes()
        s, _ = timed("bmaptool", "-q", "copy", "--bmap", www / "a.bmap", f"http://127.0.0.1:{lab.nport}/a.img.zst", disk)
        return s, lab.nginx_bytes()

    with section("full flash of A"):
        full = rounds([("baas-agent", agent_full), ("dd bs=4M conv=fsync", dd_full),
                       ("bmaptool copy (local)", bmap_local), ("bmaptool copy (HTTP, zstd)", bmap_http)])
    r["full"] = full

    # 2./3. A -> B and A -> C on a disk holding A.
    disk_a = DiskOfA(a, disk, {b: blocks_b, c: blocks_c})
    on_a = disk_a.put_a

    def deltas(target, version, label):

        def agent_delta():
            on_a()
            s, ctr = agent.flash(image, version)
            assert same(target, disk), f"disk differs from {label} after the agent's delta"
            disk_a.holding(target)
            # Both directions: chunk frames and deltas down, the block
            # hashes of delta requests up.
            return s, ctr["frame_bytes_received"] + ctr["fetch_request_bytes"]

        def rsync():
            on_a()
            s, res = timed(
                "rsync", "--inplace", "--no-whole-file", "-z", "--block-size=4096", "--stats",
                f"rsync://127.0.0.1:{lab.rport}/data/{target.name}", disk, capture=True,
            )
            assert same(target, disk), f"disk differs from {label} after rsync"
            disk_a.holding(target)
            # Both directions: the blocks down, the checksums up.
            got = [re.search(rf"Total bytes {d}: ([\d,]+)", res.stdout) for d in ("received", "sent")]
            return s, sum(int(g.group(1).replace(",", "")) for g in got) if all(got) else None

        def casync():
            # casync cannot extract in place here (its synchronizer fails
            # with "Stale file handle" on the output): it reads the disk
            # holding A as its seed and writes a new file.
            on_a()
            out = disk.with_name("casync-out.img")
            remove(out)
            lab.nginx_bytes()
            s, _ = timed(
                "casync", "extract", f"--store=http://127.0.0.1:{lab.nport}/castore", f"--seed={disk}",
                "--seed-output=no", f"http://127.0.0.1:{lab.nport}/{target.stem}.caibx", out,
                env=CASYNC_ENV,
            )
            assert same(target, out), f"output differs from {label} after casync"
            remove(out)
            return s, lab.nginx_bytes()

        return rounds([("baas-agent delta", agent_delta), ("rsync --inplace -z (block 4096)", rsync),
                       ("casync extract, seeded", casync)])

    with section("A -> B"):
        r["ab"] = deltas(b, vb, "B")
    with section("A -> C"):
        r["ac"] = deltas(c, vc, "C")

    # 4. Capture of an unchanged disk.

    def capture():
        on_a()
        job = agent.queue(image, va, capture=True)
        agent.run()  # nothing to write: the disk already holds A
        s, ctr = agent.run()  # the next boot captures it
        state = lab.api("GET", f"/api/v1/jobs/{job}")["state"]
        assert state == "succeeded", f"the capture job ended {state}"
        return s, ctr["bytes_sent"]

    def dd_read():
        s, _ = timed("dd", f"if={disk}", "of=/dev/null", "bs=4M", "status=none")
        return s, None

    with section("capture of an unchanged disk"):
        cap = rounds([("baas-agent capture", capture), ("dd read of the disk", dd_read)])
    r["capture"] = cap
    r["disk_resets"] = disk_a.counts

    # 5.-7. The server against nginx. Before the storage row on purpose:
    # its compaction replaces thousands of chunk files, and on ext4 without
    # a journal (this machine's root filesystem) every file created in the
    # next minutes pays for skipping the inodes just freed (the allocator's
    # "recently deleted" check), which would be charged to the upload.
    with section("server transfers and hot path against nginx"), BG.quiet():
        r["server"] = server_side(lab, work, a)

    # 8. Storage of 10 versions.
    r["storage"] = storage(lab, work, a)
    return r


def merge_store(src, dst):
    """Moves a casync store's chunk files into another store and removes
    it. A chunk file's name is its chunk's hash: one dst already has is the
    same chunk, compressed the same way."""
    for f in sorted(src.rglob("*")):
        if f.is_file():
            to = dst / f.relative_to(src)
            if to.exists():
                assert to.stat().st_size == f.stat().st_size, f"{to} and {f} differ"
                f.unlink()
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                f.rename(to)
    shutil.rmtree(src)


def casync_env():
    """casync's environment: TMPDIR on tmpfs when there is one. Seeding
    from a 4 GiB disk, casync keeps a symlink per seed chunk (about 65,000)
    in a directory under TMPDIR; on this machine's ext4 without a journal,
    creating and deleting them cost 30% of an extract (8 s of 30 s; perf:
    `recently_deleted` under `ext4_symlink`), work casync's own design
    does not need. The peer gets its best setting; BAAS's store stays on
    disk."""
    env = dict(os.environ)
    if os.access("/dev/shm", os.W_OK):
        env["TMPDIR"] = "/dev/shm"
    return env


CASYNC_ENV = casync_env()


def snapshot_dir(image, fallback):
    """Where snapshots of versions go: /dev/shm when it holds three copies
    of the image's data with room to spare, else `fallback`."""
    need = 3 * os.stat(image).st_blocks * 512
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 2 * need:
            return "/dev/shm"
    except OSError:
        pass
    return fallback


def upload_number(lab, image, path):
    _, v = lab.upload(image, path, cold=False)
    return v.get("number") or v["version"]["number"]


def diff_blocks(x, y, block=4096):
    """The numbers of the `block`-sized blocks where x and y differ (same
    size; reads only where either holds data)."""
    assert os.stat(x).st_size == os.stat(y).st_size
    for off, p, q in chunks_of(x, y):
        if p == q:
            continue
        for k in range(0, len(p), block):
            if p[k:k + block] != q[k:k + block]:
                yield (off + k) // block


def version_seed(k):
    """add-files' seed for version k of the storage row (k >= 1)."""
    return SEED * 1000 + 100 + k


def storage_peers(a, work):
    """The storage row's peers, in the background (see `Background`): a
    casync store and the zstd -3 size of each of the VERSIONS versions,
    made again here from A with the same seeds as `storage`'s uploads.
    casync's chunker uses one core, so two versions are worked on at a
    time, each read from a snapshot (sparse, in memory when /dev/shm has
    room) into a store of its own, merged at the end like the stores of B
    and C. Returns (casync store, [zstd size of each version])."""
    v = work / "v-peers.img"
    BG.sh("cp", "--sparse=always", a, v)
    shm = snapshot_dir(a, work)
    snaps = Path(tempfile.mkdtemp(prefix="baas-compare-", dir=shm))
    # The stores too (sizes only, about 0.6 GB): tens of thousands of chunk
    # files not created on, and later deleted from, the disk the timed
    # steps use.
    stores = Path(tempfile.mkdtemp(prefix="baas-compare-castore-", dir=shm))
    TEMP_DIRS.append(stores)
    slots = [stores / f"castore10-{i}" for i in range(2)]
    free = queue.Queue()
    for slot in slots:
        free.put(slot)
    room = threading.Semaphore(len(slots) + 1)
    sizes = [0] * VERSIONS

    def peers_of(k, snap):
        try:
            slot = free.get()
            try:
                BG.sh("casync", "make", f"--store={slot}", work / f"v{k}.caibx", snap)
            finally:
                free.put(slot)
            sizes[k] = int(BG.sh("sh", "-c", f"zstd -3 -T0 -q -c {snap} | wc -c", capture=True))
        finally:
            with BG.working():
                snap.unlink()
            room.release()

    try:
        with ThreadPoolExecutor(len(slots)) as pool:
            made = []
            for k in range(VERSIONS):
                if k:
                    BG.sh(DATA, "add-files", v, version_seed(k), max(1, SIZE_MIB // 100))
                room.acquire()
                snap = snaps / f"v{k}.img"
                BG.sh("cp", "--sparse=always", v, snap)
                made.append(pool.submit(peers_of, k, snap))
            for m in made:
                m.result()
    finally:
        with BG.working():
            shutil.rmtree(snaps, ignore_errors=True)
            v.unlink(missing_ok=True)
    store = stores / "castore10"
    with BG.working():
        store.mkdir()
        for slot in slots:
            if slot.exists():
                merge_store(slot, store)
    return store, sizes


def stored(data):
    """Bytes of a data directory's chunk store and database."""
    return du(data / "chunks") + sum(p.stat().st_size for p in data.glob("*.sqlite3*"))


def storage(lab, work, a):
    """Bytes a fresh store holds after VERSIONS versions, each adding 1% new
    files, against zstd copies and a casync store of the same versions
    (made in the background by `storage_peers`). Each version goes up as
    `baas upload` sends it: hashed here, only the chunks the server lacks
    sent (`chunk-upload`, the client crate's upload)."""
    with section(f"storage of {VERSIONS} versions: uploads, then waiting for the casync stores and zstd sizes"):
        lab.stop_server()
        data = work / "data-storage"
        lab.start_server(data)
        image = lab.api("POST", "/api/v1/images", {"name": "storage", "size": SIZE_MIB * MIB})["image"]["id"]
        v = work / "v.img"
        sparse_copy(a, v)
        for k in range(VERSIONS):
            if k:
                sh(DATA, "add-files", v, version_seed(k), max(1, SIZE_MIB // 100))
            sh(UPLOAD, lab.base, lab.token, image, v)
        lab.stop_server()
        remove(v)
        store, sizes = BG.result("the storage row's casync stores and zstd sizes")

    out = [("BAAS chunk store + metadata, as imported", stored(data), None)]
    if COMPACT:
        with section("storage: baas-server admin compact"):
            t = time.monotonic()
            sh(SERVER, "--data-dir", data, "admin", "compact")
        out.append(("BAAS chunk store + metadata, after `baas-server admin compact`", stored(data),
                    time.monotonic() - t))
    out += [("casync store (default chunking and compression)", du(store), None),
            (f"{VERSIONS} zstd -3 copies", sum(sizes), None), ("one zstd -3 version", sizes[0], None)]
    return out


def server_side(lab, work, a):
    size = SIZE_MIB * MIB
    res = {}
    curl = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}"]

    def up_sink():
        drop_caches()
        r = sh(*curl, "-X", "POST", "-T", a, "-H", "Content-Type: application/octet-stream",
               f"http://127.0.0.1:{lab.nport}/sink", capture=True)
        return float(r.stdout), size

    peaks = []

    def up_baas():
        # A fresh server and data directory: A is new data to it.
        lab.stop_server()
        d = work / f"data-up-{len(peaks)}"
        lab.start_server(d)
        image = lab.api("POST", "/api/v1/images", {"name": "up", "size": size})["image"]["id"]
        secs, _ = lab.upload(image, a)
        status = Path(f"/proc/{lab.server.pid}/status").read_text()
        peaks.append(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024)
        lab.image_up = image
        return secs, size

    def down_nginx():
        drop_caches()
        r = sh(*curl, f"http://127.0.0.1:{lab.nport}/a.img", capture=True)
        return float(r.stdout), size

    def down_baas():
        drop_caches()
        r = sh(*curl, "-H", f"Authorization: Bearer {lab.token}",
               f"{lab.base}/api/v1/images/{lab.image_up}/versions/latest/content", capture=True)
        return float(r.stdout), size

    # Rotated rounds keep an upload before the first download from
    # baas-server (`lab.image_up`).
    res.update(rounds([("curl upload to an nginx sink", up_sink), ("upload to baas-server", up_baas),
                       ("curl download from nginx", down_nginx), ("curl download from baas-server", down_baas)]))
    res["peak_rss"] = max(peaks)

    # The agent's hot path against nginx's small static file.
    mac = "52:54:00:c0:4a:02"
    m = lab.api("POST", "/api/v1/machines", {"mac": mac, "name": "hot", "arch": "x86_64"})
    mid = m.get("id") or m["machine"]["id"]
    tok = lab.api("POST", f"/api/v1/machines/{mid}/agent-token", {})
    tok = tok.get("secret") or tok["token"]

    def rps(*args):
        r = sh("wrk", "-t2", "-c32", f"-d{WRK_SECONDS}s", *args, capture=True)
        return float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))

    res["rps_nginx"] = rps(f"http://127.0.0.1:{lab.nport}/small.json")
    hot = f"{lab.base}/api/v1/agent/machines/{mid}/next-job?wait_ms=0"
    code = sh("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {tok}",
              hot, capture=True).stdout
    if not code.startswith("2"):
        raise SystemExit(f"the agent hot path answered {code}, not 2xx")
    res["rps_baas"] = rps("-H", f"Authorization: Bearer {tok}", hot)
    return res


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, k in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]:
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{int(n)} B"


def ratio(x, y):
    return f"{x / y:.2f}x" if y else "-"


def write_report(r, work):
    plots = OUT.parent / "report"
    plots.mkdir(parents=True, exist_ok=True)
    size = r["size"]
    lines = []
    w = lines.append
    machine = r.get("machine") or \
        f"{os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30))} GiB"
    w("# BAAS against its peers")
    w("")
    w(f"Written by `benches/compare.sh` on {r['when']}, "
      f"{machine}, load average at the start {r['load']:.2f}; the whole run took "
      f"{r['total_seconds'] / 60:.1f} min. Data: a {fmt_bytes(size)} ext4 image 25% full of real files "
      f"(seed {r['seed']}); B adds {fmt_bytes(r['changed_b'])} of new files (contiguous); C rewrites "
      f"{fmt_bytes(r['changed_c'])} as scattered 4 KiB blocks. Times are medians of {r['runs']} runs "
      "(min..max) in seconds, caches dropped before each"
      + ("; the methods of a table take turns, run by run (rotated rounds)" if r.get("interleaved") else "")
      + "; every ratio is against a baseline of the same run.")
    w("")
    full = r["full"]
    agent = full["baas-agent"]
    w("## Full flash of A onto a file-backed disk")
    w("")
    w("| method | seconds | bytes on the wire | BAAS is faster by |")
    w("| --- | ---: | ---: | ---: |")
    for s in full.values():
        w(f"| {s.name} | {s.cell()} | {fmt_bytes(s.wire)} | {ratio(s.med, agent.med) if s is not agent else '1.00x'} |")
    w("")
    w(f"Targets: faster than bmaptool over HTTP ({ratio(full['bmaptool copy (HTTP, zstd)'].med, agent.med)}), "
      f"at least 2x faster than dd ({ratio(full['dd bs=4M conv=fsync'].med, agent.med)}).")
    w("")
    for key, label, changed in [("ab", "B (1% new files, contiguous)", r["changed_b"]),
                                ("ac", "C (1% of 4 KiB blocks, scattered)", r["changed_c"])]:
        d = r[key]
        casync_note = (f" casync's temporary files (a symlink per seed chunk) were in {r['casync_tmpdir']}."
                       if r.get("casync_tmpdir") else "")
        w(f"## A to {label}")
        w("")
        w("| method | seconds | bytes on the wire | bytes vs changed |")
        w("| --- | ---: | ---: | ---: |")
        w(f"| baas-agent full flash (from above) | {agent.cell()} | {fmt_bytes(agent.wire)} | {ratio(agent.wire, changed)} |")
        for s in d.values():
            w(f"| {s.name} | {s.cell()} | {fmt_bytes(s.wire)} | {ratio(s.wire, changed)} |")
        w("")
        w(f"Changed: {fmt_bytes(changed)} ({changed} bytes). Bytes on the wire count both directions for "
          "baas-agent (frames and deltas down, delta requests' block hashes up) and rsync (blocks down, "
          "checksums up); casync's are what nginx served." + casync_note)
        w("")
    cap = r["capture"]
    c = cap["baas-agent capture"]
    w("## Capture of an unchanged disk")
    w("")
    w("| method | seconds | bytes on the wire |")
    w("| --- | ---: | ---: |")
    for s in cap.values():
        w(f"| {s.name} | {s.cell()} | {fmt_bytes(s.wire)} |")
    w("")
    w(f"Target: under 1 MiB uploaded ({c.wire} bytes in all requests).")
    w("")
    st = r["storage"]
    one = st[-1][1]
    w(f"## Storage of {r['versions']} versions (each adds 1% new files)")
    w("")
    w("| what | bytes | vs one zstd -3 version |")
    w("| --- | ---: | ---: |")
    for name, v, secs in st:
        took = f" ({secs:.0f} s)" if secs else ""
        w(f"| {name}{took} | {v:,} | {ratio(v, one)} |")
    w("")
    w("Target: at most 1.3x one compressed version.")
    w("")
    sv = r["server"]
    w("## Server transfers over loopback")
    w("")
    w("| transfer | seconds | MB/s | vs curl+nginx |")
    w("| --- | ---: | ---: | ---: |")
    pairs = [("curl upload to an nginx sink", None), ("upload to baas-server", "curl upload to an nginx sink"),
             ("curl download from nginx", None), ("curl download from baas-server", "curl download from nginx")]
    for name, base in pairs:
        s = sv[name]
        rate = size / s.med / 1e6
        w(f"| {name} | {s.cell()} | {rate:.0f} | {ratio(sv[base].med, s.med) if base else '1.00x'} |")
    w("")
    w(f"Agent hot path (next job, nothing queued): {sv['rps_baas']:.0f} req/s against nginx's small static file "
      f"{sv['rps_nginx']:.0f} req/s ({ratio(sv['rps_baas'], sv['rps_nginx'])}; wrk -t2 -c32, {r['wrk_seconds']} s each).")
    w("")
    w(f"Server peak RSS during the upload of A: {fmt_bytes(sv['peak_rss'])} for a {fmt_bytes(size)} image "
      "(target: at most 128 MiB).")
    w("")
    plot_files = plot(r, plots)
    w("## Plots")
    w("")
    for f in plot_files:
        w(f"![{f.stem}](report/{f.name})")
        w("")
    if r.get("sections"):
        total = r["total_seconds"]
        w("## Where the time went")
        w("")
        idle = r.get("idle", {})
        w("| section of the run | seconds | share | CPU seconds left idle (all cores) |")
        w("| --- | ---: | ---: | ---: |")
        for name, secs in r["sections"].items():
            w(f"| {name} | {secs:.0f} | {100 * secs / total:.0f}% | {idle.get(name, 0):.0f} |")
        rest = total - sum(r["sections"].values())
        w(f"| the rest (agent setup, plots and report) | {rest:.0f} | {100 * rest / total:.0f}% | |")
        w(f"| **total** | **{total:.0f}** | 100% | **{sum(idle.values()):.0f}** |")
        w("")
        w("Across sections: " + "; ".join(f"{k} {v:.0f} s" for k, v in r.get("spent", {}).items()) + ".")
        bg = r.get("background")
        if bg:
            w("In the background, stopped during every timed step (`Background` in benches/compare.py): " + "; ".join(
                f"{name}, {v.get('seconds', 0):.0f} s while allowed to run (waited for {v.get('waited', 0):.0f} s)"
                for name, v in bg.items()) + ".")
        if r.get("disk_resets"):
            w("Putting A back on the disk before a run: " + ", ".join(
                f"{k} {v}" for k, v in r["disk_resets"].items()) + " (see `DiskOfA` in benches/compare.py).")
        w("")
    OUT.write_text("\n".join(lines) + "\n")
    log(f"wrote {OUT}")
    if OUT == DEFAULT_OUT:
        headline(r)


def bar_chart(path, title, ylabel, rows, logscale=False):
    """A bar chart (SVG) of (label, value) rows with gnuplot."""
    dat = path.with_suffix(".dat")
    # BAAS's bars blue, the peers' grey.
    dat.write_text("".join(
        f'"{label}" {value} {0x3B6EA5 if "baas" in label.lower() else 0x9A9A9A}\n' for label, value in rows))
    script = f"""set terminal svg size 900,480 dynamic font "sans,11" background "white"
set output "{path}"
set title "{title}"
set ylabel "{ylabel}"
set style fill solid 0.85 border -1
set boxwidth 0.7
set bmargin 9
set xtics rotate by -30 left nomirror
set grid ytics
set key off
set yrange [{'1:' if logscale else '0:'}*]
{'set logscale y' if logscale else ''}
set xrange [-0.6:{len(rows) - 0.4}]
plot "{dat}" using 0:2:3:xtic(1) with boxes linecolor rgb variable
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True, timeout=60)
    dat.unlink()
    return path


def plot(r, d):
    """The report's plots: times, bytes on the wire, storage."""
    rows = [(f"flash: {s.name}", s.med) for s in r["full"].values()]
    rows += [(f"A-B: {s.name}", s.med) for s in r["ab"].values()]
    rows += [(f"A-C: {s.name}", s.med) for s in r["ac"].values()]
    times = bar_chart(d / "times.svg", "Reprovisioning time (median seconds, lower is better)", "seconds", rows)
    rows = [(f"A-B: {s.name}", s.wire or 1) for s in r["ab"].values()]
    rows += [(f"A-C: {s.name}", s.wire or 1) for s in r["ac"].values()]
    rows.append(("changed (A-B)", r["changed_b"]))
    rows.append(("changed (A-C)", r["changed_c"]))
    wire = bar_chart(d / "wire.svg", "Bytes on the wire for a delta (log scale, lower is better)", "bytes", rows,
                     logscale=True)
    rows = [(name.split(",")[0] if "BAAS" not in name else name.replace("BAAS chunk store + metadata", "BAAS")
             .replace("`baas-server admin compact`", "compact"), v / MIB) for name, v, _ in r["storage"]]
    store = bar_chart(d / "storage.svg", f"Storage of {r['versions']} versions (MiB, lower is better)", "MiB", rows)
    return [times, wire, store]


def machine_description():
    """This machine in a few words: cores, CPU model, memory, whether it
    is a virtual machine, kernel, and the file system the run works on."""
    model, virtual = "", False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and " hypervisor" in line:
                virtual = True
    except OSError:
        pass
    mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30))
    try:
        fs = sh("findmnt", "-n", "-o", "FSTYPE", "-T", os.environ.get("TMPDIR", "/var/tmp"),
                capture=True, check=False).stdout.strip()
    except OSError:
        fs = ""
    parts = [f"{os.cpu_count()} cores" + (f" of an {model}" if model else ""),
             f"{mem} GiB", "a virtual machine" if virtual else "bare metal",
             f"Linux {os.uname().release}"]
    if fs:
        parts.append(f"{fs} for the work files")
    return ", ".join(parts)


def headline(r):
    """Rewrites the headline table between the markers in README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
    if begin not in text or end not in text:
        return
    full, ab, ac, sv = r["full"], r["ab"], r["ac"], r["server"]
    agent = full["baas-agent"]
    baas_store = min(v for name, v, _ in r["storage"] if name.startswith("BAAS"))
    casync_store = next(v for name, v, _ in r["storage"] if name.startswith("casync"))
    one = r["storage"][-1][1]
    rows = [
        ("full flash of A", f"{agent.med:.2f} s", f"dd {full['dd bs=4M conv=fsync'].med:.2f} s, "
         f"bmaptool HTTP {full['bmaptool copy (HTTP, zstd)'].med:.2f} s"),
        ("A to B, bytes", fmt_bytes(ab["baas-agent delta"].wire), f"changed {fmt_bytes(r['changed_b'])}, "
         f"rsync {fmt_bytes(ab['rsync --inplace -z (block 4096)'].wire)}, casync {fmt_bytes(ab['casync extract, seeded'].wire)}"),
        ("A to C, bytes", fmt_bytes(ac["baas-agent delta"].wire), f"changed {fmt_bytes(r['changed_c'])}, "
         f"rsync {fmt_bytes(ac['rsync --inplace -z (block 4096)'].wire)}, casync {fmt_bytes(ac['casync extract, seeded'].wire)}"),
        ("capture, unchanged disk", fmt_bytes(r["capture"]["baas-agent capture"].wire) + " sent",
         f"dd read {r['capture']['dd read of the disk'].med:.2f} s"),
        (f"storage, {r['versions']} versions", f"{baas_store / one:.2f}x one zstd -3 copy",
         f"casync {casync_store / one:.2f}x, {r['versions']} zstd copies {r['storage'][-2][1] / one:.2f}x"),
        ("download of A", f"{ratio(sv['curl download from nginx'].med, sv['curl download from baas-server'].med)} nginx", ""),
        ("upload of A", f"{ratio(sv['curl upload to an nginx sink'].med, sv['upload to baas-server'].med)} curl-to-sink", ""),
        ("server peak RSS, upload of A", fmt_bytes(sv["peak_rss"]), f"image {fmt_bytes(r['size'])}"),
    ]
    table = ["| what | BAAS | peers, same run |", "| --- | --- | --- |"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    body = "\n".join(table) + f"\n\n![reprovisioning times](benches/report/times.svg)\n\n" \
        f"Measured by `benches/compare.sh` on {r['when'][:10]} on {r.get('machine') or f'{os.cpu_count()} cores'} " \
        f"({r['size'] >> 20} MiB image, medians of {r['runs']} runs; the run took " \
        f"{r['total_seconds'] / 60:.1f} min); the full report is benches/REPORT.md.\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + begin + "\n" + body + end + tail)


if __name__ == "__main__":
    main()
