"""Access endpoints the simulator answers from its user config (pve-access-control ``API2/AccessControl.pm``).

Login (``POST /access/ticket``) is handled by the HTTP layer, which owns the ticket crypto.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pve_sim.access import split_authid
from pve_sim.handlers.registry import route

if TYPE_CHECKING:
    from pve_sim.cluster import Request, SimCluster


@route("GET", "/access/permissions")
def permissions(cluster: SimCluster, req: Request) -> object:
    """Effective permissions of the caller, of a token it owns, or (with Sys.Audit on /access) anyone."""
    authid = req.authid
    userid = req.opt_text("userid") or authid
    owner, _token = split_authid(userid)
    if userid != authid and owner != authid:
        cluster.access.check(authid, "/access", ["Sys.Audit"])
    path = req.opt_text("path")
    if path:
        privs = cluster.access.permissions(userid, path)
        return {path: {p: int(v) for p, v in sorted(privs.items())}} if privs is not None else {}
    return cluster.access.effective_permissions(userid)
