"""BAAS (bare metal as a service) from Python.

Connect to a server, or open BAAS embedded on a data directory, then work
with images, versions, setups, machines and jobs::

    import baas
    c = baas.connect("http://lab:4848", token="baas_...")
    img = c.create_image("my-kernel-test", size="8GiB", disk="first")
    v = img.upload("disk.img", progress=print)   # chunk-level dedup, resumable
    setup = c.create_setup("exp-42", [(img, v)])
    job = c.machine("52:54:00:12:34:56").boot(setup, capture=True)
    job.wait(timeout=900)                          # raises JobFailed with the reason
    print(job.events()); img.download(v, "back.img")

``baas.open(data_dir)`` (or ``baas.open("postgres://...", chunks=DIR)``)
gives the same API on the same core services, without a server.

Every failure is a :class:`BaasError`: :class:`NotFound`, :class:`Conflict`,
:class:`InvalidInput` (and :class:`TooLarge`), :class:`Unauthenticated`,
:class:`PermissionDenied`, :class:`Unavailable`, :class:`JobFailed`.
Blocking calls release the GIL.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _baas
from ._baas import (
    BaasError,
    Conflict,
    InvalidInput,
    JobFailed,
    NotFound,
    PermissionDenied,
    TooLarge,
    TransferProgress,
    Unauthenticated,
    Unavailable,
    parse_size,
)

__all__ = [
    "BaasError",
    "Client",
    "Conflict",
    "Event",
    "Image",
    "InvalidInput",
    "Job",
    "JobFailed",
    "Machine",
    "NotFound",
    "PermissionDenied",
    "Setup",
    "Token",
    "TooLarge",
    "TransferProgress",
    "Unauthenticated",
    "Unavailable",
    "User",
    "Version",
    "connect",
    "open",
    "parse_size",
]

#: A path to a file.
PathLike = Union[str, "os.PathLike[str]"]
#: Where bytes come from or go: a path, or a binary file object.
FileArg = Union[str, "os.PathLike[str]", IO[bytes]]
#: A version: a :class:`Version`, its number, or ``"latest"``.
VersionArg = Union["Version", int, str]
#: Called with a :class:`TransferProgress` during uploads and downloads.
ProgressFn = Callable[[TransferProgress], Any]


def _time(ms: Optional[int]) -> Optional[_dt.datetime]:
    if ms is None:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)


def _req_time(ms: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)


def _version_ref(v: VersionArg) -> Union[int, str]:
    if isinstance(v, Version):
        return v.number
    return v


def _id(x: Any) -> str:
    return x.id if hasattr(x, "id") else str(x)


class User:
    """A BAAS user account."""

    def __init__(self, client: "Client", d: Dict[str, Any]) -> None:
        self._client = client
        #: Stable id (a UUID string).
        self.id: str = d["id"]
        #: Login name.
        self.name: str = d["name"]
        #: Display name.
        self.display_name: str = d["display_name"]
        #: Contact address (may be empty).
        self.email: str = d["email"]
        #: ``user``, ``moderator`` or ``admin``.
        self.role: str = d["role"]
        #: When the account was created.
        self.created_at: _dt.datetime = _req_time(d["created_at"])

    def __repr__(self) -> str:
        return f"User(name={self.name!r}, role={self.role!r}, id={self.id!r})"

    def tokens(self) -> List["Token"]:
        """This user's API tokens (never their secrets)."""
        return [Token(t) for t in self._client._native.list_tokens(self.id)]

    def create_token(self, name: str, ttl: Optional[int] = None) -> Tuple["Token", str]:
        """Creates a token for this user; returns it and its secret (shown only now).

        ``ttl`` is a lifetime in seconds (none: no expiry).
        """
        d, secret = self._client._native.create_token(self.id, name, ttl)
        return Token(d), secret

    def update(
        self,
        display_name: Optional[str] = None,
        email: Optional[str] = None,
        role: Optional[str] = None,
    ) -> "User":
        """Changes this user (admins change roles, never their own); returns the new state."""
        return User(self._client, self._client._native.update_user(self.id, display_name, email, role))

    def delete(self) -> None:
        """Deletes this user with their tokens, images and setups (admins)."""
        self._client._native.delete_user(self.id)


class Token:
    """An API token (its secret is only ever returned by ``create_token``)."""

    def __init__(self, d: Dict[str, Any]) -> None:
        #: Id (to revoke it).
        self.id: str = d["id"]
        #: Label.
        self.name: str = d["name"]
        #: The user it authenticates as.
        self.user_id: Optional[str] = d["user_id"]
        #: When it was created.
        self.created_at: _dt.datetime = _req_time(d["created_at"])
        #: When it expires, if it does.
        self.expires_at: Optional[_dt.datetime] = _time(d["expires_at"])
        #: When it was revoked, if it was.
        self.revoked_at: Optional[_dt.datetime] = _time(d["revoked_at"])

    def __repr__(self) -> str:
        return f"Token(name={self.name!r}, id={self.id!r})"


class Version:
    """One committed, immutable version of an image."""

    def __init__(self, d: Dict[str, Any]) -> None:
        #: The image's id.
        self.image_id: str = d["image_id"]
        #: Version number (0 is the blank image).
        self.number: int = d["number"]
        #: Size in bytes.
        self.size: int = d["size"]
        #: Compressed bytes this version added to the store (deduplicated).
        self.stored_size: int = d["stored_size"]
        #: Root hash (hex): what the agent verifies after writing.
        self.root: str = d["root"]
        #: Chunks that are not all zeros.
        self.data_chunks: int = d["data_chunks"]
        #: ``blank``, ``upload`` or ``capture``.
        self.source: str = d["source"]
        #: With ``capture``: the job whose session was captured.
        self.source_job_id: Optional[str] = d["source_job_id"]
        #: Optional note.
        self.note: Optional[str] = d["note"]
        #: Who made it (a user id).
        self.created_by: str = d["created_by"]
        #: When it was committed.
        self.created_at: _dt.datetime = _req_time(d["created_at"])

    def __repr__(self) -> str:
        return (
            f"Version(number={self.number}, size={self.size}, "
            f"stored_size={self.stored_size}, root={self.root[:16]!r}...)"
        )

    def __int__(self) -> int:
        return self.number

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Version):
            return (self.image_id, self.number) == (other.image_id, other.number)
        if isinstance(other, int):
            return self.number == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.image_id, self.number))


class Image:
    """An image: a named, owned series of immutable versions."""

    def __init__(self, client: "Client", d: Dict[str, Any]) -> None:
        self._client = client
        self._set(d)

    def _set(self, d: Dict[str, Any]) -> None:
        #: Stable id.
        self.id: str = d["id"]
        #: Owner's user id.
        self.owner_id: str = d["owner_id"]
        #: Name.
        self.name: str = d["name"]
        #: Default target disk (``first``, ``index:N``, ``serial:S``, ``/dev/X``...).
        self.disk: str = d["disk"]
        #: Declared size in bytes.
        self.size: int = d["size"]
        #: Free-form metadata.
        self.metadata: Dict[str, str] = dict(d["metadata"])
        #: ``private``, ``shared`` or ``public``.
        self.visibility: str = d["visibility"]
        #: With ``shared``: who else may read it.
        self.shared_with: List[str] = list(d["shared_with"])
        #: When it was created.
        self.created_at: _dt.datetime = _req_time(d["created_at"])

    def __repr__(self) -> str:
        return f"Image(name={self.name!r}, id={self.id!r})"

    def refresh(self) -> "Image":
        """Reads this image again from BAAS; returns self."""
        self._set(self._client._native.get_image(self.id))
        return self

    def versions(self) -> List[Version]:
        """Every version, by number, with size, stored size and root hash."""
        return [Version(v) for v in self._client._native.list_versions(self.id)]

    def version(self, v: VersionArg = "latest") -> Version:
        """One version: a number, or ``"latest"``."""
        return Version(self._client._native.get_version(self.id, _version_ref(v)))

    def upload(
        self,
        source: FileArg,
        progress: Optional[ProgressFn] = None,
        note: Optional[str] = None,
    ) -> Version:
        """Uploads the next version from a path or a seekable binary file object.

        Remote uploads hash the bytes locally, send only the chunks the
        server lacks, then commit: uploading a mostly unchanged image sends
        little, and running an interrupted upload again resumes it.
        ``progress`` is called with a :class:`TransferProgress` now and then.
        """
        return Version(self._client._native.upload(self.id, source, note, progress))

    def download(
        self,
        version: VersionArg,
        dest: FileArg,
        progress: Optional[ProgressFn] = None,
    ) -> Version:
        """Writes a version's bytes to a path or a binary file object.

        The bytes are checked against the version's root hash; returns the
        version written.
        """
        return Version(self._client._native.download(self.id, _version_ref(version), dest, progress))

    def update(
        self,
        name: Optional[str] = None,
        disk: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        visibility: Optional[str] = None,
        shared_with: Optional[Sequence[Union["User", str]]] = None,
    ) -> "Image":
        """Renames, re-targets, shares or publishes this image; returns self."""
        shared = None if shared_with is None else [_id(u) for u in shared_with]
        self._set(self._client._native.update_image(self.id, name, disk, metadata, visibility, shared))
        return self

    def delete_version(self, version: Union[Version, int]) -> None:
        """Deletes one version (unless a queued or running job needs it)."""
        self._client._native.delete_version(self.id, int(version))

    def delete(self) -> None:
        """Deletes this image; garbage collection reclaims its data."""
        self._client._native.delete_image(self.id)


#: One entry of a setup: an image, or ``(image, version)``, or
#: ``(image, version, disk)``, or a dict with ``image_id``, ``version``,
#: ``disk`` and ``capture``.
SetupEntryArg = Union[Image, Tuple[Image, VersionArg], Tuple[Image, VersionArg, str], Dict[str, Any]]


def _entry(e: SetupEntryArg) -> Dict[str, Any]:
    if isinstance(e, dict):
        d = dict(e)
        if "image" in d:
            d["image_id"] = _id(d.pop("image"))
        if "version" in d:
            d["version"] = _version_ref(d["version"])
        return d
    if isinstance(e, Image):
        return {"image_id": e.id, "version": "latest"}
    if isinstance(e, tuple):
        out: Dict[str, Any] = {"image_id": _id(e[0]), "version": "latest"}
        if len(e) > 1:
            out["version"] = _version_ref(e[1])
        if len(e) > 2:
            out["disk"] = e[2]
        return out
    raise InvalidInput(f"entries: {e!r} is not an image, (image, version) or a dict")


class Setup:
    """A setup: an ordered list of image versions and their target disks."""

    def __init__(self, client: "Client", d: Dict[str, Any]) -> None:
        self._client = client
        self._set(d)

    def _set(self, d: Dict[str, Any]) -> None:
        #: Stable id.
        self.id: str = d["id"]
        #: Owner's user id.
        self.owner_id: str = d["owner_id"]
        #: Name.
        self.name: str = d["name"]
        #: Entries, written in order: dicts with ``image_id``, ``version``, ``disk``, ``capture``.
        self.entries: List[Dict[str, Any]] = list(d["entries"])
        #: When it was created.
        self.created_at: _dt.datetime = _req_time(d["created_at"])
        #: When it last changed.
        self.updated_at: _dt.datetime = _req_time(d["updated_at"])

    def __repr__(self) -> str:
        return f"Setup(name={self.name!r}, entries={len(self.entries)}, id={self.id!r})"

    def update(
        self,
        name: Optional[str] = None,
        entries: Optional[Iterable[SetupEntryArg]] = None,
    ) -> "Setup":
        """Replaces the name and/or the entries; returns self."""
        new_entries = self.entries if entries is None else [_entry(e) for e in entries]
        self._set(self._client._native.update_setup(self.id, name or self.name, new_entries))
        return self

    def delete(self) -> None:
        """Deletes this setup (queued jobs keep what they resolved)."""
        self._client._native.delete_setup(self.id)


class Event:
    """A line of a job's timeline."""

    def __init__(self, d: Dict[str, Any]) -> None:
        #: When.
        self.at: _dt.datetime = _req_time(d["at"])
        #: A state name, ``progress``, ``log``, ``capture``...
        self.kind: str = d["kind"]
        #: Text.
        self.message: str = d["message"]

    def __repr__(self) -> str:
        return f"Event({self.at.isoformat()} {self.kind}: {self.message})"


class Job:
    """A job in a machine's boot queue."""

    def __init__(self, client: "Client", d: Dict[str, Any]) -> None:
        self._client = client
        self._set(d)

    def _set(self, d: Dict[str, Any]) -> None:
        #: Stable id.
        self.id: str = d["id"]
        #: The machine's id.
        self.machine_id: str = d["machine_id"]
        #: Who queued it.
        self.owner_id: str = d["owner_id"]
        #: The setup it came from, if any.
        self.setup_id: Optional[str] = d["setup_id"]
        #: What it writes: dicts with ``image_id``, ``version``, ``disk``, ``capture``.
        self.entries: List[Dict[str, Any]] = list(d["entries"])
        #: ``queued``, ``provisioning``, ``running``, ``capturing``,
        #: ``succeeded``, ``failed`` or ``cancelled``.
        self.state: str = d["state"]
        #: Progress of the current phase: ``phase``, ``bytes_done``, ``bytes_total``, ``rate``.
        self.progress: Dict[str, Any] = dict(d["progress"])
        #: Why it failed, or who cancelled it.
        self.error: Optional[str] = d["error"]
        #: When it was queued.
        self.created_at: _dt.datetime = _req_time(d["created_at"])
        #: When the agent took it.
        self.started_at: Optional[_dt.datetime] = _time(d["started_at"])
        #: When it ended.
        self.finished_at: Optional[_dt.datetime] = _time(d["finished_at"])

    def __repr__(self) -> str:
        return f"Job(state={self.state!r}, id={self.id!r})"

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.state in ("succeeded", "failed", "cancelled")

    def refresh(self) -> "Job":
        """Reads the job's state again; returns self."""
        self._set(self._client._native.get_job(self.id))
        return self

    def wait(self, timeout: Optional[float] = None, poll: float = 1.0) -> "Job":
        """Waits for the job to end; returns self when it succeeded.

        Raises :class:`JobFailed` (with the reason) when it failed or was
        cancelled, and :class:`TimeoutError` after ``timeout`` seconds.
        The GIL is released while waiting.
        """
        try:
            self._set(self._client._native.wait_job(self.id, timeout, poll))
        except JobFailed as e:
            self._set(e.job)
            raise
        return self

    def events(self) -> List[Event]:
        """The job's timeline, oldest first."""
        return [Event(e) for e in self._client._native.job_events(self.id)]

    def cancel(self) -> "Job":
        """Cancels the job if it has not ended; returns self."""
        self._set(self._client._native.cancel_job(self.id))
        return self


class Machine:
    """A lab machine, by id or MAC address."""

    def __init__(self, client: "Client", d: Dict[str, Any]) -> None:
        self._client = client
        self._set(d)

    def _set(self, d: Dict[str, Any]) -> None:
        #: Stable id.
        self.id: str = d["id"]
        #: The MAC address it PXE-boots with.
        self.mac: str = d["mac"]
        #: Name.
        self.name: str = d["name"]
        #: Architecture.
        self.arch: str = d["arch"]
        #: Pool, if any.
        self.pool: Optional[str] = d["pool"]
        #: ``pending``, ``ready`` or ``retired``.
        self.state: str = d["state"]
        #: What its agent last reported (disks, NICs, memory, CPUs), if anything.
        self.inventory: Optional[Dict[str, Any]] = d["inventory"]
        #: When its agent last talked to the server.
        self.last_seen: Optional[_dt.datetime] = _time(d["last_seen"])
        #: When it was registered.
        self.created_at: _dt.datetime = _req_time(d["created_at"])

    def __repr__(self) -> str:
        return f"Machine(name={self.name!r}, mac={self.mac!r}, state={self.state!r})"

    def refresh(self) -> "Machine":
        """Reads the machine again; returns self."""
        self._set(self._client._native.get_machine(self.id))
        return self

    def boot(
        self,
        target: Union[Setup, Image, Version],
        version: VersionArg = "latest",
        disk: Optional[str] = None,
        capture: Optional[bool] = None,
    ) -> Job:
        """Queues a job that writes ``target`` to this machine.

        ``target`` is a setup (its entries, in order) or one image (with
        ``version``, ``disk``). ``capture=True`` captures the disks as new
        versions when the session ends; for a setup it marks every entry
        for capture (the setup is updated first).
        """
        n = self._client._native
        if isinstance(target, Setup):
            if disk is not None:
                raise InvalidInput("disk: a setup's entries carry their own disks")
            if capture is not None and any(bool(e["capture"]) != capture for e in target.entries):
                entries = [dict(e, capture=capture) for e in target.entries]
                target._set(n.update_setup(target.id, target.name, entries))
            return Job(self._client, n.enqueue_job(self.id, setup=target.id))
        if isinstance(target, Version):
            version, target_id = target.number, target.image_id
        else:
            target_id = target.id
        return Job(
            self._client,
            n.enqueue_job(
                self.id,
                image=target_id,
                version=_version_ref(version),
                disk=disk,
                capture=bool(capture),
            ),
        )

    def queue(self) -> List[Job]:
        """The machine's waiting and active jobs, in order."""
        return [Job(self._client, j) for j in self._client._native.machine_queue(self.id)]

    def jobs(self, limit: Optional[int] = None) -> List[Job]:
        """The machine's jobs (newest first with ``limit``)."""
        return [Job(self._client, j) for j in self._client._native.list_jobs(machine=self.id, limit=limit)]

    def update(
        self,
        name: Optional[str] = None,
        arch: Optional[str] = None,
        pool: Optional[str] = None,
        state: Optional[str] = None,
    ) -> "Machine":
        """Renames it, moves it to a pool, or changes its state; returns self."""
        self._set(self._client._native.update_machine(self.id, name, arch, pool, False, state))
        return self

    def accept(self) -> "Machine":
        """Accepts a pending machine (it becomes ``ready`` for jobs)."""
        return self.update(state="ready")

    def retire(self) -> "Machine":
        """Retires the machine (no more jobs)."""
        return self.update(state="retired")


class Client:
    """A connection to BAAS, remote (:func:`connect`) or embedded (:func:`open`).

    Both kinds run the same core use cases with the same rules; only the
    transport differs.
    """

    def __init__(self, native: _baas.Client) -> None:
        self._native = native

    def __repr__(self) -> str:
        return repr(self._native)

    @property
    def kind(self) -> str:
        """``remote`` or ``embedded``."""
        return self._native.kind

    def me(self) -> User:
        """The user this client acts as."""
        return User(self, self._native.me())

    # users and tokens
    def users(self) -> List[User]:
        """Every user (moderators and admins)."""
        return [User(self, u) for u in self._native.list_users()]

    def user(self, id: str) -> User:
        """A user by id."""
        return User(self, self._native.get_user(id))

    def create_user(self, name: str, role: str = "user", display_name: str = "", email: str = "") -> User:
        """Creates a user (admins)."""
        return User(self, self._native.create_user(name, role, display_name, email))

    def tokens(self, user: Optional[Union[User, str]] = None) -> List[Token]:
        """A user's tokens (yours by default), without secrets."""
        uid = _id(user) if user is not None else self.me().id
        return [Token(t) for t in self._native.list_tokens(uid)]

    def create_token(
        self, name: str, ttl: Optional[int] = None, user: Optional[Union[User, str]] = None
    ) -> Tuple[Token, str]:
        """Creates a token (for yourself by default); returns it and its secret."""
        uid = _id(user) if user is not None else self.me().id
        d, secret = self._native.create_token(uid, name, ttl)
        return Token(d), secret

    def revoke_token(self, token: Union[Token, str]) -> None:
        """Revokes a token."""
        self._native.revoke_token(_id(token))

    # images
    def images(self, owner: Optional[Union[User, str]] = None) -> List[Image]:
        """Images you may read, optionally only ``owner``'s."""
        o = None if owner is None else _id(owner)
        return [Image(self, i) for i in self._native.list_images(o)]

    def image(self, id: str) -> Image:
        """An image by id."""
        return Image(self, self._native.get_image(id))

    def create_image(
        self,
        name: str,
        size: Union[int, str],
        disk: str = "first",
        metadata: Optional[Dict[str, str]] = None,
        visibility: str = "private",
        owner: Optional[Union[User, str]] = None,
    ) -> Image:
        """Creates an image with a blank version 0.

        ``size`` is bytes or a string like ``"8GiB"``; ``disk`` the default
        target disk (``first``, ``index:N``, ``serial:S``, ``/dev/X``...).
        """
        o = None if owner is None else _id(owner)
        d, _v0 = self._native.create_image(name, size, disk, metadata, visibility, o)
        return Image(self, d)

    # setups
    def setups(self, owner: Optional[Union[User, str]] = None) -> List[Setup]:
        """Your setups (admins: everyone's, or ``owner``'s)."""
        o = None if owner is None else _id(owner)
        return [Setup(self, s) for s in self._native.list_setups(o)]

    def setup(self, id: str) -> Setup:
        """A setup by id."""
        return Setup(self, self._native.get_setup(id))

    def create_setup(self, name: str, entries: Iterable[SetupEntryArg] = ()) -> Setup:
        """Creates a setup from entries: images, ``(image, version)`` or
        ``(image, version, disk)`` tuples, or dicts."""
        return Setup(self, self._native.create_setup(name, [_entry(e) for e in entries]))

    # machines
    def machines(self) -> List[Machine]:
        """Every machine."""
        return [Machine(self, m) for m in self._native.list_machines()]

    def machine(self, key: str) -> Machine:
        """A machine by MAC address (any common spelling) or id."""
        return Machine(self, self._native.get_machine(key))

    def register_machine(
        self, mac: str, name: Optional[str] = None, arch: str = "x86_64", pool: Optional[str] = None
    ) -> Machine:
        """Registers a machine, ready for jobs (moderators and admins)."""
        return Machine(self, self._native.register_machine(mac, name, arch, pool))

    # jobs
    def jobs(
        self,
        machine: Optional[Union[Machine, str]] = None,
        owner: Optional[Union[User, str]] = None,
        states: Optional[Sequence[str]] = None,
        limit: Optional[int] = None,
    ) -> List[Job]:
        """Jobs (yours; everyone's for moderators and admins), filtered."""
        return [
            Job(self, j)
            for j in self._native.list_jobs(
                None if machine is None else _id(machine),
                None if owner is None else _id(owner),
                None if states is None else list(states),
                limit,
            )
        ]

    def job(self, id: str) -> Job:
        """A job by id."""
        return Job(self, self._native.get_job(id))


def connect(url: str, token: str) -> Client:
    """Connects to the BAAS server at ``url`` as the user of API token ``token``.

    Raises :class:`Unauthenticated` for a bad token and :class:`Unavailable`
    when the server cannot be reached.
    """
    return Client(_baas.connect(url, token))


def open(
    target: PathLike,
    chunks: Optional[PathLike] = None,
    user: Optional[str] = None,
    token: Optional[str] = None,
) -> Client:
    """Opens BAAS embedded, without a server.

    ``target`` is a data directory (SQLite and chunks, created on first
    use) or a ``postgres://`` URL with ``chunks``, the chunk directory.
    The client acts as ``user`` (a login name), as the user of ``token``,
    or else as the first admin (``admin`` is created in an empty store).
    """
    return Client(_baas.open(target, chunks, user, token))
