"""Typed Proxmox errors: what went wrong, in PVE's own words, without secrets.

Every error keeps PVE's message (``pve_message``) and the request it answered (method and path,
never parameters or headers). Handlers map them to conditions: unreachable → ``Unreachable``,
authentication → ``AuthenticationFailed``, permission → ``PermissionDenied`` naming the privilege.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_PERMISSION_DETAIL = re.compile(r"Permission check failed \((?P<path>[^,)]+)(?:, (?P<privilege>[^)]+))?\)")


class PveError(Exception):
    """Base of every error the adapter raises."""

    def __init__(
        self,
        pve_message: str,
        *,
        status: int | None = None,
        request: str = "",
        errors: Mapping[str, str] | None = None,
    ) -> None:
        self.pve_message = pve_message.strip()
        self.status = status
        self.request = request
        self.errors = dict(errors or {})
        super().__init__(self._render())

    def _render(self) -> str:
        head = f"{self.request}: " if self.request else ""
        code = f"{self.status} " if self.status is not None else ""
        details = "; ".join(f"{k}: {v.strip()}" for k, v in sorted(self.errors.items()))
        return f"{head}{code}{self.pve_message}" + (f" ({details})" if details else "")


class PveUnreachable(PveError):
    """No answer from PVE (connection refused, TLS failure, timeout) or a 59x proxy error."""


class PveNotProxmox(PveError):
    """The server answered, but not as Proxmox VE does (an HTML page, a body that is not PVE's JSON
    envelope): a wrong endpoint, a proxy's or load balancer's page, or another server altogether.
    Told as such rather than as a permission or parameter problem."""


class PveTimeout(PveUnreachable):
    """PVE accepted the connection but did not answer within the read timeout (a hung API). Not
    retried: a second wait would only double the time until the user is told."""


class PveAuthenticationError(PveError):
    """PVE rejected the credentials (401)."""


class PvePermissionError(PveError):
    """PVE answered 403; ``privilege`` and ``path`` are parsed from PVE's detail when present."""

    @property
    def path(self) -> str | None:
        match = _PERMISSION_DETAIL.search(self.pve_message)
        return match.group("path") if match else None

    @property
    def privilege(self) -> str | None:
        match = _PERMISSION_DETAIL.search(self.pve_message)
        return match.group("privilege") if match else None


class PveNotFound(PveError):
    """The object does not exist (PVE reports most of these as 500 with a config-file message)."""


class PveConflict(PveError):
    """The object is busy or in the wrong state: locked, already exists, already running, not running."""

    @property
    def already_running(self) -> bool:
        """A start of a CT that runs (pve-container ``vm_start``: ``CT {vmid} already running``): the
        wanted state, not a failure."""
        return "already running" in self.pve_message


class PveInvalidRequest(PveError):
    """PVE rejected the parameters (400); ``errors`` maps each parameter to PVE's wording."""


class PveTaskFailed(PveError):
    """A task ended with an error; ``exit_status`` is PVE's exitstatus, ``log_tail`` its last lines."""

    def __init__(self, upid: str, exit_status: str, log_tail: Iterable[str] = ()) -> None:
        self.upid = upid
        self.exit_status = exit_status
        self.log_tail = list(log_tail)
        super().__init__(f"task {upid} failed: {exit_status}", request="task")

    def _render(self) -> str:
        tail = " | ".join(line for line in self.log_tail[-3:] if line)
        return self.pve_message + (f" [log: {tail}]" if tail else "")


class PveTaskTimeout(PveError):
    """A task did not finish before its deadline; it may still be running in PVE."""

    def __init__(self, upid: str, waited_seconds: float) -> None:
        self.upid = upid
        self.waited_seconds = waited_seconds
        super().__init__(f"task {upid} still running after {waited_seconds:.0f} s", request="task")


_NOT_FOUND = (
    re.compile(r"Configuration file '.*' does not exist"),
    re.compile(r"^no such "),
    re.compile(r"does not exist$"),
    re.compile(r"hostname lookup '.*' failed"),
)
_CONFLICT = (
    re.compile(r"CT is locked"),
    re.compile(r"already exists"),
    re.compile(r"already running"),
    re.compile(r"not running"),
    re.compile(r"can't lock file"),
    re.compile(r"container is running"),
)


#: PVE's answer when a task holds the CT's config lock (``PVE::Tools::lock_file_full``): a config write
#: waits up to 10 s for the flock every start/stop/shutdown/create/migrate/destroy task holds for its
#: whole run (pve-container ``API2/LXC/Config.pm`` ``lock_config``), then fails with 500
#: ``can't lock file '/run/lock/lxc/pve-config-N.lock' - got timeout``.
CONFIG_LOCK_TIMEOUT = re.compile(r"can't lock file '[^']*' - got timeout")


def is_config_lock_timeout(error: BaseException) -> bool:
    """Whether ``error`` is PVE's config-lock timeout: the CT is busy with a task, not broken."""
    return isinstance(error, PveError) and bool(CONFIG_LOCK_TIMEOUT.search(error.pve_message))


def classify(status: int, pve_message: str, *, request: str, errors: Mapping[str, str] | None = None) -> PveError:
    """The typed error for an HTTP answer from PVE."""
    kind: type[PveError]
    if status == 401:
        kind, pve_message = PveAuthenticationError, pve_message or "authentication failed"
    elif status == 403:
        kind, pve_message = PvePermissionError, pve_message or "Permission check failed"
    elif status == 400:
        kind, pve_message = PveInvalidRequest, pve_message or "Parameter verification failed."
    elif status >= 595 or status in (502, 503, 504):
        kind, pve_message = PveUnreachable, pve_message or "no route to the node"
    elif any(p.search(pve_message) for p in _NOT_FOUND):
        kind = PveNotFound
    elif any(p.search(pve_message) for p in _CONFLICT):
        kind = PveConflict
    else:
        kind, pve_message = PveError, pve_message or f"HTTP {status}"
    return kind(pve_message, status=status, request=request, errors=errors)
