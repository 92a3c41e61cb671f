"""The ``baas`` command: the bindings' everyday tasks from a shell.

Connects with ``--url``/``--token`` (or ``BAAS_URL``/``BAAS_TOKEN``), or
opens a data directory embedded with ``--data-dir`` (``BAAS_DATA_DIR``)::

    baas images
    baas create-image my-test --size 8GiB --disk first
    baas upload IMAGE_ID disk.img --note "kernel 6.12"
    baas versions IMAGE_ID
    baas download IMAGE_ID latest back.img
    baas setups
    baas create-setup exp-42 IMAGE_ID[:VERSION[:DISK]] ...
    baas boot 52:54:00:12:34:56 --setup SETUP_ID --capture
    baas wait JOB_ID --timeout 900
    baas logs JOB_ID
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO

import baas


class ProgressBar:
    """A one-line progress bar on a terminal (plain lines elsewhere)."""

    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last_phase = ""
        self.last_line = 0.0

    def __call__(self, t: baas.TransferProgress) -> None:
        now = time.monotonic()
        if t.phase != self.last_phase:
            if self.last_phase and self.tty:
                self.stream.write("\n")
            self.last_phase = t.phase
            self.start = now
        finished = t.total > 0 and t.done >= t.total
        if not self.tty and not finished and now - self.last_line < 2.0:
            return
        self.last_line = now
        frac = t.done / t.total if t.total else 1.0
        width = 30
        filled = int(frac * width)
        rate = t.done / max(now - self.start, 1e-6) / 1e6
        line = (
            f"{self.label} {t.phase:<7} [{'#' * filled}{'.' * (width - filled)}] "
            f"{frac * 100:5.1f}% {t.done / 2**20:,.0f}/{t.total / 2**20:,.0f} MiB {rate:,.0f} MB/s"
        )
        if self.tty:
            self.stream.write("\r" + line)
            if finished:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _client(args: argparse.Namespace) -> baas.Client:
    if args.data_dir:
        return baas.open(args.data_dir, user=args.user)
    if not args.url or not args.token:
        raise baas.InvalidInput("give --url and --token (or BAAS_URL, BAAS_TOKEN), or --data-dir")
    return baas.connect(args.url, token=args.token)


def _print_versions(versions: Sequence[baas.Version]) -> None:
    print(f"{'VERSION':>7}  {'SIZE':>14}  {'STORED':>12}  {'SOURCE':<8} {'CREATED':<20} ROOT")
    for v in versions:
        print(
            f"{v.number:>7}  {v.size:>14,}  {v.stored_size:>12,}  {v.source:<8} "
            f"{v.created_at:%Y-%m-%d %H:%M:%S}  {v.root}"
        )


def _version(s: str) -> Any:
    return int(s) if s.isdigit() else s


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the ``baas`` command; returns its exit status."""
    p = argparse.ArgumentParser(prog="baas", description="BAAS from the command line.")
    p.add_argument("--url", default=os.environ.get("BAAS_URL"), help="server URL (BAAS_URL)")
    p.add_argument("--token", default=os.environ.get("BAAS_TOKEN"), help="API token (BAAS_TOKEN)")
    p.add_argument(
        "--data-dir", default=os.environ.get("BAAS_DATA_DIR"), help="open this data directory embedded instead"
    )
    p.add_argument("--user", default=None, help="with --data-dir: act as this user (default: the first admin)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("whoami", help="the user you act as")
    sub.add_parser("images", help="images you may read")
    c = sub.add_parser("create-image", help="create an image")
    c.add_argument("name")
    c.add_argument("--size", required=True, help="e.g. 8GiB")
    c.add_argument("--disk", default="first")
    u = sub.add_parser("upload", help="upload a file as the next version of an image")
    u.add_argument("image")
    u.add_argument("file")
    u.add_argument("--note")
    v = sub.add_parser("versions", help="an image's versions")
    v.add_argument("image")
    d = sub.add_parser("download", help="download a version to a file")
    d.add_argument("image")
    d.add_argument("version", help="a number or latest")
    d.add_argument("file")
    sub.add_parser("setups", help="your setups")
    cs = sub.add_parser("create-setup", help="create a setup from IMAGE[:VERSION[:DISK]] entries")
    cs.add_argument("name")
    cs.add_argument("entries", nargs="*")
    sub.add_parser("machines", help="every machine")
    b = sub.add_parser("boot", help="queue a job on a machine")
    b.add_argument("machine", help="MAC address or id")
    g = b.add_mutually_exclusive_group(required=True)
    g.add_argument("--setup")
    g.add_argument("--image")
    b.add_argument("--version", default="latest")
    b.add_argument("--disk")
    b.add_argument("--capture", action="store_true")
    w = sub.add_parser("wait", help="wait for a job to end")
    w.add_argument("job")
    w.add_argument("--timeout", type=float)
    lg = sub.add_parser("logs", help="a job's timeline")
    lg.add_argument("job")
    cn = sub.add_parser("cancel", help="cancel a job")
    cn.add_argument("job")

    args = p.parse_args(argv)
    try:
        client = _client(args)
        bar = None if args.quiet else ProgressBar(args.cmd)
        if args.cmd == "whoami":
            me = client.me()
            print(f"{me.name} ({me.role}) {me.id}")
        elif args.cmd == "images":
            for i in client.images():
                print(f"{i.id}  {i.name}  {i.size:,} B  {i.disk}  {i.visibility}")
        elif args.cmd == "create-image":
            print(client.create_image(args.name, size=args.size, disk=args.disk).id)
        elif args.cmd == "upload":
            ver = client.image(args.image).upload(args.file, progress=bar, note=args.note)
            print(f"version {ver.number}: {ver.size:,} bytes, {ver.stored_size:,} stored, root {ver.root}")
        elif args.cmd == "versions":
            _print_versions(client.image(args.image).versions())
        elif args.cmd == "download":
            ver = client.image(args.image).download(_version(args.version), args.file, progress=bar)
            print(f"version {ver.number}: {ver.size:,} bytes written to {args.file}")
        elif args.cmd == "setups":
            for s in client.setups():
                print(f"{s.id}  {s.name}  {len(s.entries)} entries")
        elif args.cmd == "create-setup":
            entries: List[Any] = []
            for e in args.entries:
                parts = e.split(":", 2)
                entry: Dict[str, Any] = {"image_id": parts[0]}
                if len(parts) > 1:
                    entry["version"] = _version(parts[1])
                if len(parts) > 2:
                    entry["disk"] = parts[2]
                entries.append(entry)
            print(client.create_setup(args.name, entries).id)
        elif args.cmd == "machines":
            for m in client.machines():
                print(f"{m.id}  {m.mac}  {m.name}  {m.state}")
        elif args.cmd == "boot":
            m = client.machine(args.machine)
            target: Any = client.setup(args.setup) if args.setup else client.image(args.image)
            if args.setup:
                job = m.boot(target, capture=True if args.capture else None)
            else:
                job = m.boot(target, version=_version(args.version), disk=args.disk, capture=args.capture)
            print(job.id)
        elif args.cmd == "wait":
            job = client.job(args.job).wait(timeout=args.timeout)
            print(f"job {job.id} {job.state}")
        elif args.cmd == "logs":
            for ev in client.job(args.job).events():
                print(f"{ev.at:%Y-%m-%d %H:%M:%S}  {ev.kind:<12} {ev.message}")
        elif args.cmd == "cancel":
            print(client.job(args.job).cancel().state)
    except baas.JobFailed as e:
        print(f"baas: {e}", file=sys.stderr)
        return 3
    except TimeoutError as e:
        print(f"baas: {e}", file=sys.stderr)
        return 2
    except baas.BaasError as e:
        print(f"baas: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
