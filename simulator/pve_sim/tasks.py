"""Worker tasks: UPIDs, task logs and status, and the event heap that moves simulated time.

PVE runs every long operation in a forked worker (``fork_worker``): the API call returns the UPID at
once, the worker writes a log that ends in ``TASK OK`` / ``TASK ERROR: <msg>``, and the task list
and ``…/tasks/{upid}/status`` report it. The simulator has no threads for this. A worker is a Python
generator that yields how many simulated seconds its next step takes; the :class:`Scheduler` keeps
an event heap and resumes workers (and applies scenario events) lazily, in time order, whenever the
cluster is touched and the clock has passed their due time. With a manual clock (time scale 0)
workers run to completion inside the call that started them, which is what "instant tasks" means.

Everything here is deterministic: UPIDs, pids and pstarts come from per-node counters, never from
randomness or wall-clock time.
"""

from __future__ import annotations

import heapq
import itertools
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

from pve_sim.access import split_authid
from pve_sim.errors import PveApiError

USER_HZ = 100
"""Clock ticks per second; PVE's ``pstart`` is the worker's start time in ticks since boot."""

_UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


@dataclass(frozen=True)
class UpidFields:
    """The decoded parts of a UPID (pve-common ``PVE::UPID::decode``)."""

    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str


def encode_upid(fields: UpidFields) -> str:
    """``UPID:node:PID:PSTART:STARTTIME:type:id:user:`` with upper-case hex, trailing colon included."""
    return (
        f"UPID:{fields.node}:{fields.pid:08X}:{fields.pstart:08X}:{fields.starttime:08X}:"
        f"{fields.type}:{fields.id}:{fields.user}:"
    )


def decode_upid(upid: str) -> UpidFields | None:
    """Parse a UPID exactly as PVE does; None when PVE would say ``unable to parse worker upid``."""
    match = _UPID_RE.match(upid)
    if match is None:
        return None
    return UpidFields(
        node=match.group(1),
        pid=int(match.group(3), 16),
        pstart=int(match.group(4), 16),
        starttime=int(match.group(5), 16),
        type=match.group(6),
        id=match.group(7),
        user=match.group(8),
    )


def status_type(status: str | None) -> str:
    """``PVE::UPID::normalize_status_type``: ok | warning | error | unknown (for ``statusfilter``)."""
    if not status:
        return "unknown"
    if status == "OK":
        return "ok"
    if re.match(r"^WARNINGS: \d+$", status):
        return "warning"
    if status == "unexpected status":
        return "unknown"
    return "error"


def format_log_time(epoch: float) -> str:
    """The ``YYYY-MM-DD HH:MM:SS`` prefix migration logs use (UTC here, the node's local time in PVE)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def format_duration(seconds: float) -> str:
    """``HH:MM:SS`` as AbstractMigrate prints a migration's duration."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


class TaskError(Exception):
    """Raised inside a worker: the task ends with ``TASK ERROR: <message>``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Worker = Generator[float, None, None]
"""A task body: yields the simulated seconds until its next step; returns when done."""


@dataclass
class Task:
    """One worker task: its UPID fields, its log, and (once finished) end time and exit status."""

    upid: str
    fields: UpidFields
    lines: list[str] = field(default_factory=list)
    endtime: int | None = None
    exitstatus: str | None = None
    warnings: int = 0

    @property
    def node(self) -> str:
        return self.fields.node

    @property
    def type(self) -> str:
        return self.fields.type

    @property
    def id(self) -> str:
        return self.fields.id

    @property
    def user(self) -> str:
        return self.fields.user

    @property
    def running(self) -> bool:
        return self.endtime is None

    def log(self, text: str) -> None:
        """Append output; multi-line text becomes several log lines, as the task log file would."""
        self.lines.extend(text.rstrip("\n").split("\n"))

    def warn(self, text: str) -> None:
        """``warn`` inside a worker: logged, and counted for ``TASK WARNINGS: N``."""
        self.warnings += 1
        self.log(text)

    def owner_fields(self) -> dict[str, str]:
        """``user`` and (for token tasks) ``tokenid``, split like pve-manager's ``$convert_token_task``."""
        userid, tokenid = split_authid(self.user)
        result = {"user": userid}
        if tokenid is not None:
            result["tokenid"] = tokenid
        return result

    def is_owned_by(self, authid: str) -> bool:
        """``$check_task_user``: a token sees its own tasks, a user its own and its tokens' tasks."""
        userid, tokenid = split_authid(self.user)
        if tokenid is not None:
            return authid in (self.user, userid)
        return authid == self.user

    def status_entry(self) -> dict[str, object]:
        """GET …/tasks/{upid}/status."""
        entry: dict[str, object] = {
            "upid": self.upid,
            "node": self.fields.node,
            "pid": self.fields.pid,
            "pstart": self.fields.pstart,
            "starttime": self.fields.starttime,
            "type": self.fields.type,
            "id": self.fields.id,
            **self.owner_fields(),
            "status": "running" if self.running else "stopped",
        }
        if not self.running:
            entry["exitstatus"] = self.exitstatus
        return entry

    def list_entry(self) -> dict[str, object]:
        """An entry of /nodes/{node}/tasks and /cluster/tasks (``status`` = exit text or RUNNING)."""
        entry: dict[str, object] = {
            "upid": self.upid,
            "node": self.fields.node,
            "pid": self.fields.pid,
            "pstart": self.fields.pstart,
            "starttime": self.fields.starttime,
            "type": self.fields.type,
            "id": self.fields.id,
            **self.owner_fields(),
        }
        if self.running:
            entry["status"] = "RUNNING"
        else:
            entry["endtime"] = self.endtime
            entry["status"] = self.exitstatus
        return entry

    def log_page(self, start: int, limit: int) -> tuple[int, list[dict[str, object]]]:
        """``dump_logfile``: (total, [{n, t}]) for lines from ``start``; limit 0 = to the end."""
        lines = [{"n": i + 1, "t": text} for i, text in enumerate(self.lines)]
        page = lines[start:] if limit == 0 else lines[start : start + limit]
        if not lines:
            return 1, [{"n": 1, "t": "no content"}]
        return len(lines), page


@dataclass(order=True)
class _Event:
    due_epoch: float
    seq: int
    action: Callable[[], None] = field(compare=False)


class Scheduler:
    """The event heap. ``now()`` is the due time of the event being processed, else the clock."""

    def __init__(self, clock_now: Callable[[], float]) -> None:
        self._clock_now = clock_now
        self._heap: list[_Event] = []
        self._seq = itertools.count()
        self._processing_at: float | None = None
        self._frozen_at: float | None = None

    def now(self) -> float:
        if self._processing_at is not None:
            return self._processing_at
        if self._frozen_at is not None:
            return self._frozen_at
        return self._clock_now()

    def at(self, due_epoch: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, _Event(due_epoch, next(self._seq), action))

    def pending(self) -> int:
        return len(self._heap)

    def next_due(self) -> float | None:
        return self._heap[0].due_epoch if self._heap else None

    def run_due(self, until_epoch: float) -> None:
        """Run every event due at or before ``until_epoch`` in (time, insertion) order.

        Events may schedule further events; those due in the window run too. Afterwards ``now()``
        reads exactly ``until_epoch`` for the rest of the call, so one request sees one instant.
        """
        while self._heap and self._heap[0].due_epoch <= until_epoch:
            event = heapq.heappop(self._heap)
            self._processing_at = event.due_epoch
            try:
                event.action()
            finally:
                self._processing_at = None
        self._frozen_at = until_epoch

    def release(self) -> None:
        """End of a call: ``now()`` follows the clock again."""
        self._frozen_at = None


class TaskManager:
    """Creates tasks with PVE-shaped UPIDs and drives their workers on the scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        instant: Callable[[], bool],
        node_boot_epoch: Callable[[str], float],
        on_internal_error: Callable[[Task, BaseException], None] | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._instant = instant
        self._node_boot_epoch = node_boot_epoch
        self._on_internal_error = on_internal_error
        self._tasks: dict[str, Task] = {}
        self._by_node: dict[str, list[Task]] = {}
        self._next_pid: dict[str, int] = {}

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, upid: str) -> Task | None:
        return self._tasks.get(upid)

    def node_tasks(self, node: str) -> list[Task]:
        """Tasks of one node, oldest first."""
        return list(self._by_node.get(node, ()))

    def _allocate_pid(self, node: str) -> int:
        # Plausible Linux pids, distinct per node; wrapping is irrelevant at simulator scale.
        pid = self._next_pid.get(node)
        if pid is None:
            pid = 0x1000 + (sum(node.encode()) * 97) % 0x8000
        self._next_pid[node] = pid + 1 + (pid % 7)
        return pid

    def start(self, node: str, task_type: str, task_id: str, user: str, body: Callable[[Task], Worker]) -> Task:
        """``fork_worker``: create the task, run its first step now, schedule the rest."""
        now = self._scheduler.now()
        pid = self._allocate_pid(node)
        pstart = int(max(0.0, now - self._node_boot_epoch(node)) * USER_HZ) + 1
        fields = UpidFields(node, pid, pstart, int(now), task_type, task_id, user)
        upid = encode_upid(fields)
        task = Task(upid=upid, fields=fields)
        self._tasks[upid] = task
        self._by_node.setdefault(node, []).append(task)
        self._step(task, body(task))
        return task

    def abort(self, task: Task, message: str) -> None:
        """Kill a running task (``abort_guest_tasks``): it ends now with ``message``; its worker stops."""
        if task.running:
            self._finish(task, message)

    def _step(self, task: Task, worker: Worker) -> None:
        """Advance the worker; on a delay, resume it later (or at once with instant tasks)."""
        while True:
            if not task.running:  # aborted while waiting
                worker.close()
                return
            try:
                delay = next(worker)
            except StopIteration:
                self._finish(task, None)
                return
            except TaskError as err:
                self._finish(task, err.message)
                return
            except PveApiError as err:  # a check inside the worker died with PVE's message
                self._finish(task, err.message)
                return
            except Exception as err:  # a simulator bug must not take the request down with it
                if self._on_internal_error is not None:
                    self._on_internal_error(task, err)
                self._finish(task, f"internal simulator error: {err}")
                return
            if self._instant() or delay <= 0:
                continue
            due = self._scheduler.now() + delay
            self._scheduler.at(due, lambda: self._step(task, worker))
            return

    def _finish(self, task: Task, error: str | None) -> None:
        task.endtime = int(self._scheduler.now())
        if error is not None:
            message = " ".join(error.strip().split("\n"))
            task.exitstatus = message
            task.lines.append(f"TASK ERROR: {message}")
        elif task.warnings:
            task.exitstatus = f"WARNINGS: {task.warnings}"
            task.lines.append(f"TASK WARNINGS: {task.warnings}")
        else:
            task.exitstatus = "OK"
            task.lines.append("TASK OK")
