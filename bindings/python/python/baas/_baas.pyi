"""The native half of ``baas`` (PyO3). Use the ``baas`` package instead."""

from os import PathLike
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, Union, final

__all__ = [
    "Client",
    "TransferProgress",
    "connect",
    "open",
    "parse_size",
    "BaasError",
    "NotFound",
    "Conflict",
    "InvalidInput",
    "TooLarge",
    "Unauthenticated",
    "PermissionDenied",
    "Unavailable",
    "JobFailed",
]

_Dict = Dict[str, Any]
_File = Union[str, PathLike[str], IO[bytes]]

class BaasError(Exception):
    """Every BAAS failure."""

    field: Optional[str]
    code: str

class NotFound(BaasError):
    """The thing does not exist, or you may not know it does."""

class Conflict(BaasError):
    """The request clashes with the current state."""

class InvalidInput(BaasError):
    """The request is malformed or out of range."""

class TooLarge(InvalidInput):
    """The request is larger than a limit or quota allows."""

class Unauthenticated(BaasError):
    """No credential, or a bad or expired one."""

class PermissionDenied(BaasError):
    """A known caller who may not do this."""

class Unavailable(BaasError):
    """The server or a dependency is down or overloaded."""

class JobFailed(BaasError):
    """A job that was waited for failed or was cancelled."""

    job: _Dict

@final
class TransferProgress:
    """How far an upload or download is."""

    @property
    def phase(self) -> str:
        """``hash``, ``send`` or ``receive``."""
    @property
    def done(self) -> int:
        """Bytes of this phase done."""
    @property
    def total(self) -> int:
        """Bytes of this phase in all."""

_Progress = Optional[Callable[[TransferProgress], Any]]

@final
class Client:
    """A native client, remote or embedded."""

    @property
    def kind(self) -> str: ...
    def me(self) -> _Dict: ...
    def list_users(self) -> List[_Dict]: ...
    def create_user(self, name: str, role: str = "user", display_name: str = "", email: str = "") -> _Dict: ...
    def get_user(self, id: str) -> _Dict: ...
    def update_user(
        self, id: str, display_name: Optional[str] = None, email: Optional[str] = None, role: Optional[str] = None
    ) -> _Dict: ...
    def delete_user(self, id: str) -> None: ...
    def list_tokens(self, user: str) -> List[_Dict]: ...
    def create_token(self, user: str, name: str, ttl_seconds: Optional[int] = None) -> Tuple[_Dict, str]: ...
    def revoke_token(self, id: str) -> None: ...
    def list_images(self, owner: Optional[str] = None) -> List[_Dict]: ...
    def create_image(
        self,
        name: str,
        size: Union[int, str],
        disk: str = "first",
        metadata: Optional[Dict[str, str]] = None,
        visibility: str = "private",
        owner: Optional[str] = None,
    ) -> Tuple[_Dict, _Dict]: ...
    def get_image(self, id: str) -> _Dict: ...
    def update_image(
        self,
        id: str,
        name: Optional[str] = None,
        disk: Optional[str] = None,
        metadata: Optional[Dict[str, str]] = None,
        visibility: Optional[str] = None,
        shared_with: Optional[List[str]] = None,
    ) -> _Dict: ...
    def delete_image(self, id: str) -> None: ...
    def list_versions(self, image: str) -> List[_Dict]: ...
    def get_version(self, image: str, version: Union[int, str]) -> _Dict: ...
    def delete_version(self, image: str, number: int) -> None: ...
    def upload(self, image: str, source: _File, note: Optional[str] = None, progress: _Progress = None) -> _Dict: ...
    def download(self, image: str, version: Union[int, str], dest: _File, progress: _Progress = None) -> _Dict: ...
    def list_setups(self, owner: Optional[str] = None) -> List[_Dict]: ...
    def create_setup(self, name: str, entries: List[_Dict]) -> _Dict: ...
    def get_setup(self, id: str) -> _Dict: ...
    def update_setup(self, id: str, name: str, entries: List[_Dict]) -> _Dict: ...
    def delete_setup(self, id: str) -> None: ...
    def list_machines(self) -> List[_Dict]: ...
    def register_machine(
        self, mac: str, name: Optional[str] = None, arch: str = "x86_64", pool: Optional[str] = None
    ) -> _Dict: ...
    def get_machine(self, key: str) -> _Dict: ...
    def update_machine(
        self,
        id: str,
        name: Optional[str] = None,
        arch: Optional[str] = None,
        pool: Optional[str] = None,
        clear_pool: bool = False,
        state: Optional[str] = None,
    ) -> _Dict: ...
    def machine_queue(self, id: str) -> List[_Dict]: ...
    def enqueue_job(
        self,
        machine: str,
        setup: Optional[str] = None,
        image: Optional[str] = None,
        version: Union[int, str, None] = None,
        disk: Optional[str] = None,
        capture: bool = False,
    ) -> _Dict: ...
    def list_jobs(
        self,
        machine: Optional[str] = None,
        owner: Optional[str] = None,
        states: Optional[List[str]] = None,
        limit: Optional[int] = None,
    ) -> List[_Dict]: ...
    def get_job(self, id: str) -> _Dict: ...
    def job_events(self, id: str) -> List[_Dict]: ...
    def cancel_job(self, id: str) -> _Dict: ...
    def wait_job(self, id: str, timeout: Optional[float] = None, poll: float = 1.0) -> _Dict: ...

def connect(url: str, token: str) -> Client:
    """Connects to a server."""

def open(
    target: Union[str, PathLike[str]],
    chunks: Union[str, PathLike[str], None] = None,
    user: Optional[str] = None,
    token: Optional[str] = None,
) -> Client:
    """Opens BAAS embedded."""

def parse_size(size: Union[int, str]) -> int:
    """Parses a size like ``8GiB`` into bytes."""
