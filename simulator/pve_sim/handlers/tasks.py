"""Task endpoints (pve-manager ``API2/Tasks.pm``, ``API2/Cluster.pm`` ``tasks``).

A user sees their own tasks (a token only its own, a user also its tokens'), or every task of a node
with ``Sys.Audit`` on ``/nodes/<node>``. Task files are node-local in PVE, so a UPID is only known on
the node named in the URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pve_sim.common import ApiResult
from pve_sim.errors import ParameterError, PveApiError, internal
from pve_sim.formats import split_list
from pve_sim.handlers.registry import route
from pve_sim.tasks import Task, decode_upid, status_type

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster


@route("GET", "/nodes/{node}/tasks", proxy=True)
def node_tasks(cluster: SimCluster, req: Request) -> object:
    """Newest first; ``total`` counts every match (beyond ``start``/``limit`` too)."""
    node = req.node
    authid = req.authid
    start = req.opt_integer("start") or 0
    limit = req.opt_integer("limit")
    limit = 50 if limit is None else limit
    userfilter = req.opt_text("userfilter")
    typefilter = req.opt_text("typefilter")
    vmid = req.opt_integer("vmid")
    errors = req.flag("errors")
    source = req.opt_text("source") or "archive"
    since = req.opt_integer("since")
    until = req.opt_integer("until")
    wanted = {"ok", "warning", "error", "unknown"}
    statusfilter = req.opt_text("statusfilter")
    if statusfilter is not None and not errors:
        wanted = {item.lower() for item in split_list(statusfilter)}
    elif errors:
        wanted.discard("ok")
    auditor = cluster.access.allowed(authid, f"/nodes/{node}", ["Sys.Audit"])

    count = 0
    result: list[dict[str, object]] = []

    def consider(task: Task, status: str | None) -> None:
        nonlocal count, limit
        owner = task.owner_fields()["user"]
        if userfilter and userfilter.lower() not in owner.lower():
            return
        if not (auditor or task.is_owned_by(authid)):
            return
        if typefilter and task.type != typefilter:
            return
        if vmid and task.id != str(vmid):
            return
        if since is not None and task.fields.starttime < since:
            return
        if until is not None and task.fields.starttime > until:
            return
        if status_type(status) not in wanted:
            return
        count += 1
        if count <= start or limit <= 0:
            return
        result.append(task.list_entry())
        limit -= 1

    tasks = cluster.tasks.node_tasks(node)
    if source in ("active", "all"):
        for task in reversed(tasks):
            if task.running:
                consider(task, None)
    if source != "active":
        # The archive is appended to as tasks end, and read backwards: newest *end* first.
        finished = [(task.endtime or 0, order, task) for order, task in enumerate(tasks) if not task.running]
        for _end, _order, task in sorted(finished, key=lambda item: (item[0], item[1]), reverse=True):
            consider(task, task.exitstatus)
    return ApiResult(result, total=count)


_CLUSTER_TASKS_PER_NODE = 50


@route("GET", "/cluster/tasks")
def cluster_tasks(cluster: SimCluster, req: Request) -> object:
    """Recent tasks of every node (the cluster-wide task list), newest first."""
    authid = req.authid
    everything = cluster.access.allowed(authid, "/", ["Sys.Audit"])
    # Each node broadcasts its recent tasks only; keep the newest per node.
    recent: list[Task] = []
    for node in cluster.state.nodes:
        recent.extend(cluster.tasks.node_tasks(node)[-_CLUSTER_TASKS_PER_NODE:])
    tasks = sorted(recent, key=lambda t: (t.fields.starttime, t.upid), reverse=True)
    return [task.list_entry() for task in tasks if everything or task.owner_fields()["user"] == authid]


def _lookup(cluster: SimCluster, req: Request) -> Task:
    """The task named by ``upid`` on the URL's node, with PVE's 400 errors; checks who may read it."""
    upid = req.text("upid")
    fields = decode_upid(upid)
    if fields is None:
        raise ParameterError({"upid": "unable to parse worker upid"})
    task = cluster.tasks.get(upid)
    if task is None or task.node != req.node:
        raise ParameterError({"upid": "no such task"})
    if not task.is_owned_by(req.authid):
        cluster.access.check(req.authid, f"/nodes/{req.node}", ["Sys.Audit"])
    return task


@route("GET", "/nodes/{node}/tasks/{upid}/status", proxy=True)
def read_task_status(cluster: SimCluster, req: Request) -> object:
    return _lookup(cluster, req).status_entry()


@route("GET", "/nodes/{node}/tasks/{upid}/log", proxy=True)
def read_task_log(cluster: SimCluster, req: Request) -> object:
    """``dump_logfile``: lines ``{n, t}`` from ``start``; ``limit`` 0 reads to the end."""
    upid = req.text("upid")
    if decode_upid(upid) is None:
        raise ParameterError({"upid": "unable to parse worker upid"})
    task = cluster.tasks.get(upid)
    if task is None or task.node != req.node:
        # read_task_log does not check existence: opening the file fails.
        return ApiResult([{"n": 1, "t": "unable to open file - No such file or directory"}], total=1)
    if not task.is_owned_by(req.authid):
        cluster.access.check(req.authid, f"/nodes/{req.node}", ["Sys.Audit"])
    if req.flag("download"):
        if req.get("start") is not None or req.get("limit") is not None:
            raise internal("'download' cannot be used together with 'start' or 'limit' parameters")
        raise PveApiError(501, "pve_sim does not implement task log downloads")
    start = req.opt_integer("start") or 0
    limit = req.opt_integer("limit")
    total, lines = task.log_page(start, 50 if limit is None else limit)
    return ApiResult(lines, total=total)
