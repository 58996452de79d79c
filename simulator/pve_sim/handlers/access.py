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


@route("GET", "/access/users")
def users_index(cluster: SimCluster, req: Request) -> object:
    """pve-access-control ``PVE/API2/User.pm`` ``index``: the users the caller may see.

    ``user => 'all'``: every user when the caller holds User.Modify or Sys.Audit on
    ``/access/groups``; else the members of groups it holds one of them on
    (``/access/groups/<group>``, ``filter_groups`` + ``group_member_join``), plus the caller
    itself -- compared with the auth id, so an API token does not see its own user for free.
    Entries as ``$extract_user_data``: ``enable`` and ``expire`` always (user.cfg parsing fills
    them), ``comment`` when set; with ``full``, ``groups`` (comma-separated) and ``tokens``
    (``tokenid``, ``privsep``, ``expire``, ``comment``; null without tokens). ``realm-type`` for
    the built-in ``pam`` and ``pve`` realms (domains.cfg). ``enabled`` filters by ``enable``.
    """
    access = cluster.access
    authid = req.authid
    privs = ["User.Modify", "Sys.Audit"]
    can_user_mod = req.is_root or access.allowed(authid, "/access/groups", privs, any_of=True)
    visible: set[str] = set()
    if not can_user_mod:
        for group, members in access.groups.items():
            if access.allowed(authid, f"/access/groups/{group}", privs, any_of=True):
                visible.update(members)
    enabled_filter = req.get("enabled")
    full = req.flag("full")
    result: list[dict[str, object]] = []
    for userid in sorted(access.users):
        if not (can_user_mod or userid == authid or userid in visible):
            continue
        user = access.users[userid]
        entry: dict[str, object] = {"enable": 1 if user.enabled else 0, "expire": user.expire}
        if user.comment:
            entry["comment"] = user.comment
        if enabled_filter is not None and bool(entry["enable"]) != bool(enabled_filter):
            continue
        if full:
            entry["groups"] = ",".join(sorted(g for g, members in access.groups.items() if userid in members))
            entry["tokens"] = (
                [
                    {
                        "tokenid": token.tokenid,
                        "privsep": 1 if token.privsep else 0,
                        "expire": token.expire,
                        **({"comment": token.comment} if token.comment else {}),
                    }
                    for _, token in sorted(user.tokens.items())
                ]
                if user.tokens
                else None
            )
        realm = userid.rsplit("@", 1)[-1]
        if realm in ("pam", "pve"):
            entry["realm-type"] = realm
        entry["userid"] = userid
        result.append(entry)
    return result
