"""PVE tasks: UPID parsing and waiting on a task by UPID with a deadline and backoff.

A mutating PVE call returns a UPID at once and does its work in a worker; the result is the task's
``exitstatus`` (``OK``, ``WARNINGS: n`` or the error text). Waiting polls the task status with an
exponential backoff (no busy loop), and a task still running at the deadline raises
:class:`PveTaskTimeout` instead of returning ``None`` as proxmoxer's helper does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pve_operator.pve.errors import PveError, PveTaskFailed, PveTaskTimeout

# pve-common src/PVE/UPID.pm decode regex.
_UPID = re.compile(
    r"^UPID:(?P<node>[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):(?P<pid>[0-9A-Fa-f]{8}):"
    r"(?P<pstart>[0-9A-Fa-f]{8,9}):(?P<starttime>[0-9A-Fa-f]{8}):(?P<type>[^:\s/]+):"
    r"(?P<id>[^:\s/]*):(?P<user>[^:\s/]+):$"
)


@dataclass(frozen=True)
class Upid:
    """A decoded UPID: which node runs the task, what it does, for whom."""

    raw: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    @classmethod
    def parse(cls, raw: str) -> Upid:
        match = _UPID.match(raw)
        if match is None:
            raise PveError(f"not a PVE task id: {raw!r}")
        return cls(
            raw=raw,
            node=match["node"],
            pid=int(match["pid"], 16),
            pstart=int(match["pstart"], 16),
            starttime=int(match["starttime"], 16),
            type=match["type"],
            id=match["id"],
            user=match["user"],
        )


@dataclass(frozen=True)
class TaskResult:
    """A finished task. ``ok`` is true for ``OK`` and ``WARNINGS: n``."""

    upid: Upid
    exit_status: str
    waited_seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == "OK" or self.exit_status.startswith("WARNINGS")


@dataclass(frozen=True)
class Backoff:
    """Poll delays: ``initial_seconds`` doubling up to ``max_seconds``."""

    initial_seconds: float = 0.25
    max_seconds: float = 5.0
    factor: float = 2.0

    def delays(self) -> Callable[[], float]:
        delay = self.initial_seconds

        def next_delay() -> float:
            nonlocal delay
            current = delay
            delay = min(delay * self.factor, self.max_seconds)
            return current

        return next_delay


def check_task(
    upid: str,
    *,
    read_status: Callable[[Upid], Mapping[str, Any]],
    read_log_tail: Callable[[Upid], list[str]],
) -> TaskResult | None:
    """Look at the task once: its result when it ended OK, None while it runs; raises :class:`PveTaskFailed`
    when it ended otherwise (the same as :func:`wait_for_task`, without waiting)."""
    parsed = Upid.parse(upid)
    status = read_status(parsed)
    if status.get("status") != "stopped":
        return None
    result = TaskResult(parsed, str(status.get("exitstatus", "unexpected status")), 0.0)
    if not result.ok:
        raise PveTaskFailed(upid, result.exit_status, read_log_tail(parsed))
    return result


def wait_for_task(
    upid: str,
    *,
    read_status: Callable[[Upid], Mapping[str, Any]],
    read_log_tail: Callable[[Upid], list[str]],
    timeout_seconds: float,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> TaskResult:
    """Poll until the task stops; raise :class:`PveTaskFailed` or :class:`PveTaskTimeout`.

    ``read_status`` is one ``GET /nodes/{node}/tasks/{upid}/status``. Status reads are safe to
    repeat, so a transport error while polling propagates to the caller, who decides (the task
    itself is unaffected and can be waited on again by the same UPID).
    """
    parsed = Upid.parse(upid)
    started = monotonic()
    next_delay = backoff.delays()
    while True:
        status = read_status(parsed)
        waited = monotonic() - started
        if status.get("status") == "stopped":
            exit_status = str(status.get("exitstatus", "unexpected status"))
            result = TaskResult(parsed, exit_status, waited)
            if not result.ok:
                raise PveTaskFailed(upid, exit_status, read_log_tail(parsed))
            return result
        if waited >= timeout_seconds:
            raise PveTaskTimeout(upid, waited)
        sleep(min(next_delay(), max(0.0, timeout_seconds - waited)))
