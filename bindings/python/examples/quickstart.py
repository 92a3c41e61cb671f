"""The issue's example, as a script (also type-checked by the tests with
``mypy --strict``): upload an image, boot a machine with it, wait, and
download what the session left."""

from __future__ import annotations

import sys

import baas


def main(url: str, token: str, mac: str, disk_image: str) -> int:
    c = baas.connect(url, token=token)
    img = c.create_image("my-kernel-test", size="8GiB", disk="first")
    v = img.upload(disk_image, progress=print)
    print(f"version {v.number}: {v.size} bytes, {v.stored_size} stored, root {v.root}")
    setup = c.create_setup("exp-42", [(img, v)])
    job = c.machine(mac).boot(setup, capture=True)
    try:
        job.wait(timeout=900)
    except baas.JobFailed as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1
    for event in job.events():
        print(event.at, event.kind, event.message)
    latest: baas.Version = img.version("latest")
    img.download(latest, "back.img")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
