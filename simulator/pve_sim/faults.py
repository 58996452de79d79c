"""Fault injection: what a real cluster does to a client on a bad day, on demand.

Two kinds of faults. *Request faults* act before a request reaches the cluster model: added real
latency, or an answer with an arbitrary status and message (e.g. ``596 Connection timed out`` with an
empty body, or ``500 cluster not ready - no quorum?``), for the next N matching requests. *Task
faults* make the next N worker tasks of a type (``vzstart``, ``vzmigrate``, …) fail inside the task,
where PVE's own failures happen; the cluster model consumes them.

The injector is shared by the HTTP threads and the cluster model, so it has its own lock.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from pve_sim.errors import PveApiError


@dataclass
class RequestFault:
    """Answer the next ``remaining`` requests matching method and path with this error."""

    method: str | None
    path_regex: re.Pattern[str]
    status: int
    message: str
    remaining: int
    empty_body: bool

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and bool(self.path_regex.search(path))

    def describe(self) -> dict[str, object]:
        return {
            "method": self.method,
            "path_regex": self.path_regex.pattern,
            "status": self.status,
            "message": self.message,
            "remaining": self.remaining,
            "empty_body": self.empty_body,
        }


@dataclass
class LatencyRule:
    """Delay matching requests by ``seconds`` of real time (None regex = every request)."""

    seconds: float
    path_regex: re.Pattern[str] | None

    def describe(self) -> dict[str, object]:
        return {
            "seconds": self.seconds,
            "path_regex": self.path_regex.pattern if self.path_regex is not None else None,
        }


@dataclass
class TaskFault:
    """The next ``remaining`` tasks of ``task_type`` fail with ``message`` as their reason."""

    task_type: str
    message: str
    remaining: int
    node: str | None = None
    vmid: int | None = None

    def matches(self, task_type: str, node: str | None, vmid: int | None) -> bool:
        return (
            self.task_type == task_type
            and (self.node is None or self.node == node)
            and (self.vmid is None or self.vmid == vmid)
        )

    def describe(self) -> dict[str, object]:
        return {
            "task_type": self.task_type,
            "message": self.message,
            "remaining": self.remaining,
            "node": self.node,
            "vmid": self.vmid,
        }


class FaultInjector:
    """Request faults, latency and task faults, each consumed as it fires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._request_faults: list[RequestFault] = []
        self._latency: list[LatencyRule] = []
        self._task_faults: list[TaskFault] = []

    def add_request_fault(
        self,
        *,
        method: str | None,
        path_regex: str,
        status: int,
        message: str,
        count: int = 1,
        empty_body: bool = False,
    ) -> None:
        """Answer the next ``count`` requests whose API path matches ``path_regex`` with this error."""
        if count < 1:
            raise ValueError("count must be >= 1")
        fault = RequestFault(method, re.compile(path_regex), status, message, count, empty_body)
        with self._lock:
            self._request_faults.append(fault)

    def set_latency(self, seconds: float, path_regex: str | None = None) -> None:
        """Delay matching requests by ``seconds`` (real time); 0 removes the rule for that regex."""
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = [
                rule
                for rule in self._latency
                if (rule.path_regex.pattern if rule.path_regex is not None else None) != path_regex
            ]
            if seconds > 0:
                compiled = re.compile(path_regex) if path_regex is not None else None
                self._latency.append(LatencyRule(seconds, compiled))

    def add_task_failure(
        self, task_type: str, message: str, count: int = 1, *, node: str | None = None, vmid: int | None = None
    ) -> None:
        """Make the next ``count`` tasks of ``task_type`` (optionally only on ``node``/for ``vmid``) fail."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._task_faults.append(TaskFault(task_type, message, count, node, vmid))

    def take_task_failure(self, task_type: str, *, node: str | None = None, vmid: int | None = None) -> str | None:
        """Consume one armed failure matching the task; its message, or None if none is armed."""
        with self._lock:
            for fault in self._task_faults:
                if fault.remaining > 0 and fault.matches(task_type, node, vmid):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._task_faults.remove(fault)
                    return fault.message
        return None

    def clear(self) -> None:
        """Remove every fault and latency rule."""
        with self._lock:
            self._request_faults.clear()
            self._latency.clear()
            self._task_faults.clear()

    def before_request(self, method: str, path: str) -> tuple[float, PveApiError | None]:
        """(real latency to add in seconds, error to answer instead or None); consumes one count.

        ``path`` is the API path without the ``/api2/json`` prefix, e.g. ``/nodes/pve1/lxc``.
        Latency rules add up, so a global delay and a path-specific one both apply.
        """
        with self._lock:
            latency = sum(
                rule.seconds for rule in self._latency if rule.path_regex is None or rule.path_regex.search(path)
            )
            for fault in self._request_faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._request_faults.remove(fault)
                    return latency, PveApiError(fault.status, fault.message, empty_body=fault.empty_body)
        return latency, None

    def describe(self) -> dict[str, object]:
        """JSON-able view for ``state_dump``."""
        with self._lock:
            return {
                "request_faults": [f.describe() for f in self._request_faults],
                "latency": [r.describe() for r in self._latency],
                "task_faults": [f.describe() for f in self._task_faults],
            }
