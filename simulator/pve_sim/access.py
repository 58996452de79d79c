"""Users, API tokens, roles, ACLs and pools: PVE's permission model (pve-access-control).

This module answers one question the way ``PVE::RPCEnvironment::permissions`` does: which
privileges does an auth id (``user@realm`` or ``user@realm!token``) hold on an ACL path? It follows
PVE's rules exactly:

* ``root@pam`` (the user, not its tokens) holds every privilege;
* ACL entries are looked up along the path; a deeper entry for the same subject replaces what was
  inherited, and an entry applies below its own path only when it propagates;
* token entries beat user entries, which beat group entries, at each level;
* ``NoAccess`` wins over everything set at the same level;
* guests and storages in a pool also get the roles granted on ``/pool/<pool>`` (never propagated,
  never overriding a role the regular ACL already set; a pool ``NoAccess`` wins);
* a privilege-separated token holds the *intersection* of its own privileges and its user's;
  a token without privsep holds exactly its user's privileges.

Pools live here because in PVE they are part of ``user.cfg`` and feed the permission calculation.
Results are cached per (auth id, path) and the cache is dropped on every change, so list endpoints
that check thousands of ``/vms/<vmid>`` paths stay cheap.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pve_sim.errors import PveApiError, permission_denied
from pve_sim.scenario import BUILTIN_ROLES as _SCENARIO_BUILTIN_ROLES
from pve_sim.scenario import VALID_PRIVILEGES as _SCENARIO_VALID_PRIVILEGES
from pve_sim.scenario import DatacenterOptionsSpec

# Built-in roles (PVEAdmin, PVEVMAdmin, ...) are computed once, from pve-access-control's
# $privgroups, next to the scenario format that lets scenarios reference them.
BUILTIN_ROLES: Mapping[str, frozenset[str]] = _SCENARIO_BUILTIN_ROLES
"""Role id -> privileges of PVE's built-in roles."""

VALID_PRIVILEGES: frozenset[str] = _SCENARIO_VALID_PRIVILEGES
"""Every privilege name PVE knows."""

TOKEN_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
USERID_RE = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$")


def split_authid(authid: str) -> tuple[str, str | None]:
    """``user@realm!tok`` -> (``user@realm``, ``tok``); a plain user id -> (id, None)."""
    if "!" in authid:
        userid, tokenid = authid.split("!", 1)
        return userid, tokenid
    return authid, None


@dataclass
class ApiToken:
    """An API token of a user. ``expire`` is epoch seconds, 0 = never (or the user's expiry)."""

    tokenid: str
    secret: str
    privsep: bool = True
    expire: int = 0
    comment: str = ""


@dataclass
class User:
    """A PVE user. ``expire`` is epoch seconds, 0 = never."""

    userid: str
    password: str | None = None
    enabled: bool = True
    expire: int = 0
    comment: str = ""
    tokens: dict[str, ApiToken] = field(default_factory=dict)


@dataclass
class Pool:
    """A resource pool: guests and storages grouped for permissions and for the GUI."""

    poolid: str
    comment: str | None = None
    vms: set[int] = field(default_factory=set)
    storage: set[str] = field(default_factory=set)


@dataclass
class _AclNode:
    """One path segment of the ACL tree. Maps subject -> role -> propagate."""

    children: dict[str, _AclNode] = field(default_factory=dict)
    users: dict[str, dict[str, bool]] = field(default_factory=dict)
    tokens: dict[str, dict[str, bool]] = field(default_factory=dict)
    groups: dict[str, dict[str, bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class AclEntry:
    """One ACL line as PVE lists it: ``ugid`` is a user id, token id or group name."""

    path: str
    roleid: str
    ugid: str
    type: str  # "user" | "token" | "group"
    propagate: bool


Privileges = Mapping[str, bool]
"""Privilege name -> propagate flag (informational, as in PVE's ``permissions``)."""

_ROOT = "root@pam"


class AccessControl:
    """The user configuration (users, tokens, groups, roles, ACL, pools) and permission checks."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.groups: dict[str, set[str]] = {}
        self.roles: dict[str, frozenset[str]] = dict(BUILTIN_ROLES)
        self.pools: dict[str, Pool] = {}
        self.vm_pool: dict[int, str] = {}
        self._acl_root = _AclNode()
        self._acl_entries: list[AclEntry] = []
        self._cache: dict[tuple[str, str], dict[str, bool]] = {}
        self._pool_roles_cache: dict[str, dict[str, set[str]]] = {}
        self.datacenter: DatacenterOptions = DatacenterOptions()
        """datacenter.cfg options that permission checks consult (tags); see :class:`DatacenterOptions`."""

    # ------------------------------------------------------------------ configuration

    def _changed(self) -> None:
        self._cache.clear()
        self._pool_roles_cache.clear()

    def add_user(
        self,
        userid: str,
        password: str | None = None,
        *,
        enabled: bool = True,
        expire: int = 0,
        comment: str = "",
    ) -> User:
        user = User(userid=userid, password=password, enabled=enabled, expire=expire, comment=comment)
        self.users[userid] = user
        self._changed()
        return user

    def add_token(
        self,
        userid: str,
        tokenid: str,
        secret: str,
        *,
        privsep: bool = True,
        expire: int = 0,
        comment: str = "",
    ) -> ApiToken:
        user = self.users[userid]
        token = ApiToken(tokenid=tokenid, secret=secret, privsep=privsep, expire=expire, comment=comment)
        user.tokens[tokenid] = token
        self._changed()
        return token

    def add_group(self, groupid: str, members: Iterable[str] = ()) -> None:
        self.groups.setdefault(groupid, set()).update(members)
        self._changed()

    def add_role(self, roleid: str, privileges: Iterable[str]) -> None:
        privs = frozenset(privileges)
        unknown = sorted(privs - VALID_PRIVILEGES)
        if unknown:
            raise ValueError(f"role '{roleid}': invalid privilege(s) {', '.join(unknown)}")
        self.roles[roleid] = privs
        self._changed()

    def add_acl(
        self,
        path: str,
        roleid: str,
        *,
        user: str | None = None,
        token: str | None = None,
        group: str | None = None,
        propagate: bool = True,
    ) -> None:
        """Grant ``roleid`` on ``path`` to exactly one of a user, a token (``user@realm!tok``) or a group."""
        if sum(x is not None for x in (user, token, group)) != 1:
            raise ValueError("an ACL entry names exactly one user, token or group")
        if roleid not in self.roles:
            raise ValueError(f"role '{roleid}' does not exist")
        node = self._acl_root
        for part in _split_path(path):
            node = node.children.setdefault(part, _AclNode())
        if user is not None:
            node.users.setdefault(user, {})[roleid] = propagate
            self._acl_entries.append(AclEntry(path, roleid, user, "user", propagate))
        elif token is not None:
            node.tokens.setdefault(token, {})[roleid] = propagate
            self._acl_entries.append(AclEntry(path, roleid, token, "token", propagate))
        else:
            assert group is not None
            node.groups.setdefault(group, {})[roleid] = propagate
            self._acl_entries.append(AclEntry(path, roleid, group, "group", propagate))
        self._changed()

    @property
    def acl_entries(self) -> list[AclEntry]:
        return list(self._acl_entries)

    def acl_paths(self) -> list[str]:
        """Every path that has an ACL node (PVE's ``iterate_acl_tree``)."""
        paths: list[str] = []

        def walk(node: _AclNode, prefix: str) -> None:
            paths.append(prefix or "/")
            for name, child in sorted(node.children.items()):
                walk(child, f"{prefix}/{name}")

        walk(self._acl_root, "")
        return paths

    def remove_vm_access(self, vmid: int) -> None:
        """What destroying a guest does to user.cfg: drop its ACL node and its pool membership."""
        vms = self._acl_root.children.get("vms")
        if vms is not None and str(vmid) in vms.children:
            del vms.children[str(vmid)]
            self._acl_entries = [e for e in self._acl_entries if e.path != f"/vms/{vmid}"]
        poolid = self.vm_pool.pop(vmid, None)
        if poolid is not None and poolid in self.pools:
            self.pools[poolid].vms.discard(vmid)
        self._changed()

    # ------------------------------------------------------------------ pools

    def create_pool(self, poolid: str, comment: str | None = None) -> None:
        """POST /pools rules (pve-manager API2/Pool.pm), errors wrapped like ``lock_user_config``."""
        if poolid in self.pools:
            raise PveApiError(500, f"create pool failed: pool '{poolid}' already exists")
        if "/" in poolid:
            parent, leaf = poolid.rsplit("/", 1)
            if parent not in self.pools:
                raise PveApiError(500, f"create pool failed: parent '{parent}' of pool '{poolid}' does not exist")
        else:
            leaf = poolid
        if not re.match(r"^[A-Za-z]", leaf):
            raise PveApiError(500, "create pool failed: pool name must start with a letter")
        self.pools[poolid] = Pool(poolid=poolid, comment=comment or None)
        self._changed()

    def delete_pool(self, poolid: str, existing_vmids: Iterable[int], existing_storages: Iterable[str]) -> None:
        """DELETE /pools/{poolid}: refused while the pool still holds existing guests or storages."""
        pool = self.pools.get(poolid)
        if pool is None:
            raise PveApiError(500, f"delete pool failed: pool '{poolid}' does not exist")
        for sub in sorted(p for p in self.pools if p.startswith(poolid + "/")):
            raise PveApiError(500, f"delete pool failed: pool '{poolid}' is not empty (contains pool '{sub}')")
        live_vms = set(existing_vmids)
        for vmid in sorted(pool.vms, key=str):
            if vmid in live_vms:
                raise PveApiError(500, f"delete pool failed: pool '{poolid}' is not empty (contains VM {vmid})")
        live_storages = set(existing_storages)
        for sid in sorted(pool.storage):
            if sid in live_storages:
                raise PveApiError(500, f"delete pool failed: pool '{poolid}' is not empty (contains storage '{sid}')")
        for vmid in pool.vms:
            if self.vm_pool.get(vmid) == poolid:
                del self.vm_pool[vmid]
        del self.pools[poolid]
        pool_node = self._acl_root.children.get("pool")
        if pool_node is not None:
            pool_node.children.pop(poolid, None)
        self._acl_entries = [e for e in self._acl_entries if e.path != f"/pool/{poolid}"]
        self._changed()

    def add_vm_to_pool(self, vmid: int, poolid: str) -> None:
        """``PVE::AccessControl::add_vm_to_pool`` (used by create): the guest joins the pool."""
        pool = self.pools.get(poolid)
        if pool is None:
            raise PveApiError(500, f"pool '{poolid}' does not exist")
        old = self.vm_pool.get(vmid)
        if old is not None and old in self.pools:
            self.pools[old].vms.discard(vmid)
        pool.vms.add(vmid)
        self.vm_pool[vmid] = poolid
        self._changed()

    def add_storage_to_pool(self, sid: str, poolid: str) -> None:
        self.pools[poolid].storage.add(sid)
        self._changed()

    # ------------------------------------------------------------------ authentication

    def check_password(self, userid: str, password: str, now_epoch: float) -> bool:
        """A login succeeds for an enabled, unexpired user whose password matches."""
        user = self.users.get(userid)
        if user is None or user.password is None or not self.user_enabled(userid, now_epoch):
            return False
        return hmac.compare_digest(user.password.encode(), password.encode())

    def check_token(self, userid: str, tokenid: str, secret: str, now_epoch: float) -> bool:
        """``verify_token``: the token exists, is not expired, its user is enabled, the secret matches."""
        user = self.users.get(userid)
        if user is None or not self.user_enabled(userid, now_epoch):
            return False
        token = user.tokens.get(tokenid)
        if token is None:
            return False
        if token.expire and token.expire < now_epoch:
            return False
        return hmac.compare_digest(token.secret.encode(), secret.encode())

    def user_enabled(self, userid: str, now_epoch: float) -> bool:
        """``check_user_enabled``: the user exists, is enabled and its account has not expired."""
        user = self.users.get(userid)
        if user is None or not user.enabled:
            return False
        return not (user.expire and user.expire < now_epoch)

    # ------------------------------------------------------------------ permissions

    def permissions(self, authid: str, path: str) -> Privileges:
        """Privileges ``authid`` holds on ``path`` (privilege -> propagate), as PVE computes them."""
        key = (authid, path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if path.startswith("/vms/") and self._is_plain_leaf(path):
            # Every guest without its own ACL node or pool resolves identically: share one entry.
            generic = (authid, "/vms/\0")
            result = self._cache.get(generic)
            if result is None:
                result = self._compute(authid, path)
                self._cache[generic] = result
        else:
            result = self._compute(authid, path)
        self._cache[key] = result
        return result

    def _is_plain_leaf(self, path: str) -> bool:
        leaf = path[5:]
        if "/" in leaf:
            return False
        vms = self._acl_root.children.get("vms")
        if vms is not None and leaf in vms.children:
            return False
        try:
            return int(leaf) not in self.vm_pool
        except ValueError:
            return True

    def _compute(self, authid: str, path: str) -> dict[str, bool]:
        if authid == _ROOT:
            return dict.fromkeys(self.roles["Administrator"], True)
        userid, tokenid = split_authid(authid)
        if tokenid is not None:
            user = self.users.get(userid)
            token = user.tokens.get(tokenid) if user is not None else None
            if token is None:
                return {}
            user_privs = self.permissions(userid, path)
            if not token.privsep:
                return dict(user_privs)
        elif userid not in self.users:
            return {}
        roles = self._roles(authid, path)
        pool_roles = self._pool_roles(authid).get(path)
        if pool_roles and "NoAccess" not in roles:
            if "NoAccess" in pool_roles:
                roles = {"NoAccess": False}
            else:
                for role in pool_roles:
                    roles.setdefault(role, False)
        privs: dict[str, bool] = {}
        for role, propagate in roles.items():
            for priv in self.roles.get(role, ()):
                privs[priv] = privs.get(priv, False) or propagate
        if tokenid is not None and userid != _ROOT:
            privs = {p: user_privs[p] and prop for p, prop in privs.items() if p in user_privs}
        return privs

    def _roles(self, authid: str, path: str) -> dict[str, bool]:
        """``PVE::AccessControl::roles`` without pools: roles along the path, deepest match wins."""
        userid, tokenid = split_authid(authid)
        parts = _split_path(path)
        roles: dict[str, bool] = {}
        node: _AclNode | None = self._acl_root
        levels = [node]
        for part in parts:
            node = node.children.get(part) if node is not None else None
            levels.append(node)
        last = len(levels) - 1
        for depth, level in enumerate(levels):
            if level is None:
                break
            final = depth == last
            if tokenid is not None:
                new = _applicable(level.tokens.get(authid), final)
                if new is not None:
                    roles = new
                    continue
                # Tokens are not group members and have no user entries of their own.
                continue
            new = _applicable(level.users.get(userid), final)
            if new is not None:
                roles = new
                continue
            group_roles: dict[str, bool] | None = None
            for group, assigned in level.groups.items():
                if userid not in self.groups.get(group, ()):
                    continue
                applied = _applicable(assigned, final)
                if applied is not None:
                    group_roles = {**(group_roles or {}), **applied}
            if group_roles is not None:
                roles = group_roles
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _pool_roles(self, authid: str) -> dict[str, set[str]]:
        cached = self._pool_roles_cache.get(authid)
        if cached is not None:
            return cached
        result: dict[str, set[str]] = {}
        for poolid, pool in self.pools.items():
            roles = self._roles(authid, f"/pool/{poolid}")
            if not roles:
                continue
            for vmid in pool.vms:
                result.setdefault(f"/vms/{vmid}", set()).update(roles)
            for sid in pool.storage:
                result.setdefault(f"/storage/{sid}", set()).update(roles)
        self._pool_roles_cache[authid] = result
        return result

    def allowed(self, authid: str, path: str, privileges: Iterable[str], *, any_of: bool = False) -> bool:
        """``$rpcenv->check(..., $noerr=1)`` / ``check_any``: True when the privileges are held."""
        held = self.permissions(authid, path)
        if any_of:
            return any(p in held for p in privileges)
        return all(p in held for p in privileges)

    def check(self, authid: str, path: str, privileges: Iterable[str], *, any_of: bool = False) -> None:
        """``$rpcenv->check``/``check_any``: raise PVE's 403 ``Permission check failed (<path>, <priv>)``."""
        privs = list(privileges)
        held = self.permissions(authid, path)
        if any_of:
            if not any(p in held for p in privs):
                raise permission_denied(path, "|".join(privs))
            return
        for priv in privs:
            if priv not in held:
                raise permission_denied(path, priv)

    def check_vm_perm(
        self, authid: str, vmid: int, pool: str | None, privileges: Iterable[str], *, any_of: bool = False
    ) -> None:
        """``check_vm_perm``: the pool grants it, or else ``/vms/<vmid>`` must (its error is raised)."""
        privs = list(privileges)
        if pool and self.allowed(authid, f"/pool/{pool}", privs, any_of=any_of):
            return
        self.check(authid, f"/vms/{vmid}", privs, any_of=any_of)

    def api_capabilities(self, authid: str) -> dict[str, dict[str, int]]:
        """``compute_api_permission``: the ``cap`` map of a login answer, privileges by GUI section."""
        sections = {
            "vms": re.compile(r"VM\.|Permissions\.Modify"),
            "access": re.compile(r"(User|Group)\.|Permissions\.Modify"),
            "storage": re.compile(r"Datastore\.|Permissions\.Modify"),
            "nodes": re.compile(r"Sys\.|Permissions\.Modify"),
            "sdn": re.compile(r"SDN\.|Permissions\.Modify"),
            "dc": re.compile(r"Sys\.Audit|Sys\.Modify|SDN\."),
            "mapping": re.compile(r"Mapping\.|Permissions.Modify"),
        }
        result: dict[str, dict[str, int]] = {name: {} for name in sections}
        paths = ["/", "/nodes", "/access/groups", "/vms", "/storage", "/sdn", "/mapping", *self.acl_paths()]
        for path in dict.fromkeys(paths):
            privs = self.permissions(authid, path)
            match = re.match(r"^/(\w+)", path)
            toplevel = match.group(1) if match else "dc"
            if toplevel == "pool":
                for priv in privs:
                    if priv.startswith("VM."):
                        result["vms"][priv] = 1
                    elif priv.startswith("Datastore."):
                        result["storage"][priv] = 1
                    elif priv == "Permissions.Modify":
                        result["vms"][priv] = 1
                        result["storage"][priv] = 1
                continue
            pattern = sections.get(toplevel)
            if pattern is None:
                continue
            for priv in privs:
                if pattern.match(priv):
                    result[toplevel][priv] = 1
        return result

    def effective_permissions(self, authid: str) -> dict[str, dict[str, int]]:
        """``get_effective_permissions`` for GET /access/permissions: path -> privilege -> propagate."""
        paths = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
        paths.update(self.acl_paths())
        for pool in self.pools.values():
            paths.update(f"/vms/{vmid}" for vmid in pool.vms)
            paths.update(f"/storage/{sid}" for sid in pool.storage)
        result: dict[str, dict[str, int]] = {}
        for path in sorted(paths):
            privs = self.permissions(authid, path)
            if privs:
                result[path] = {p: int(v) for p, v in sorted(privs.items())}
        return result


def _split_path(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _applicable(assigned: dict[str, bool] | None, final: bool) -> dict[str, bool] | None:
    """The roles of one ACL entry that apply at this level: all at the final path, else propagating."""
    if not assigned:
        return None
    applied = {role: prop for role, prop in assigned.items() if final or prop}
    return applied or None


# ====================================================================================== datacenter.cfg
# The datacenter.cfg options that change permission checks. They live next to the user config
# because PVE consults them in the same checks (pve-guest-common ``PVE::GuestHelpers``).

USER_ALLOW_MODES: tuple[str, ...] = ("none", "list", "existing", "free")
"""``user-tag-access``'s ``user-allow`` values (pve-cluster ``PVE::DataCenterConfig``)."""


@dataclass
class DatacenterOptions:
    """The datacenter.cfg options the simulator models, as ``parse_datacenter_config`` holds them.

    pve-cluster ``src/PVE/DataCenterConfig.pm`` ``parse_datacenter_config``: ``user-tag-access``
    is parsed into ``{"user-allow": ..., "user-allow-list": [tags]}``, ``registered-tags`` into a
    list, ``crs`` into a hash; an unset option is absent (PVE's default applies: ``user-allow``
    ``free``, no registered tags, ``crs`` ``ha=basic``). ``description`` is always there (the
    file's ``#`` comment lines, empty when there are none) and ``mac_prefix`` defaults to
    Proxmox's OUI ``BC:24:11``.
    """

    user_allow: str | None = None
    user_allow_list: tuple[str, ...] | None = None
    registered_tags: tuple[str, ...] = ()
    crs: dict[str, object] = field(default_factory=dict)
    description: str = ""
    mac_prefix: str = "BC:24:11"

    @classmethod
    def from_spec(cls, spec: DatacenterOptionsSpec) -> DatacenterOptions:
        """The options a scenario's ``cluster.options`` sets. Tag lists are sorted as pve-cluster
        ``write_datacenter_config`` writes them (Perl ``sort``), their case kept: PVE compares tags
        case-sensitively in ``assert_tag_permissions`` (the request's tags are not lower-cased
        before the check)."""
        options = cls(registered_tags=tuple(sorted(set(spec.registered_tags))))
        if spec.user_tag_access is not None:
            options.user_allow = spec.user_tag_access.user_allow
            options.user_allow_list = tuple(sorted(set(spec.user_tag_access.user_allow_list)))
        if spec.crs is not None:
            options.crs = {"ha": spec.crs.ha}
            if spec.crs.ha_rebalance_on_start:
                options.crs["ha-rebalance-on-start"] = 1
            if spec.crs.ha_auto_rebalance:
                options.crs["ha-auto-rebalance"] = 1
            # pve-cluster src/PVE/DataCenterConfig.pm (9.1.6): threshold and margin in percent.
            for key, value in (
                ("ha-auto-rebalance-threshold", spec.crs.ha_auto_rebalance_threshold),
                ("ha-auto-rebalance-method", spec.crs.ha_auto_rebalance_method),
                ("ha-auto-rebalance-hold-duration", spec.crs.ha_auto_rebalance_hold_duration),
                ("ha-auto-rebalance-margin", spec.crs.ha_auto_rebalance_margin),
            ):
                if value is not None:
                    options.crs[key] = value
        return options

    def as_config(self) -> dict[str, object]:
        """datacenter.cfg as ``cfs_read_file('datacenter.cfg')`` returns it (GET /cluster/options)."""
        config: dict[str, object] = {"description": self.description, "mac_prefix": self.mac_prefix}
        if self.crs:
            config["crs"] = dict(self.crs)
        if self.registered_tags:
            config["registered-tags"] = list(self.registered_tags)
        if self.user_allow is not None or self.user_allow_list is not None:
            access: dict[str, object] = {}
            if self.user_allow is not None:
                access["user-allow"] = self.user_allow
            if self.user_allow_list:
                access["user-allow-list"] = list(self.user_allow_list)
            config["user-tag-access"] = access
        return config


def allowed_tags(
    access: AccessControl,
    options: DatacenterOptions,
    authid: str,
    guest_tags: Mapping[int, str | None],
    privileged: bool | None = None,
) -> tuple[set[str], set[str], bool]:
    """pve-guest-common ``PVE::GuestHelpers::get_allowed_tags``: (allowed, registered, freeform).

    ``privileged`` is Sys.Modify on ``/``. Allowed are the ``user-allow-list`` tags (unless
    ``user-allow`` is ``none``), with ``free``/``existing`` also every tag of a guest the caller may
    audit (``VM.Audit``, pool ignored as PVE's ``check_vm_perm(..., undef, ...)``); registered
    tags are added for a privileged caller and removed for everybody else. ``guest_tags`` maps
    every guest of the cluster to its ``tags`` option (``get_guest_config_properties(['tags'])``).
    """
    if privileged is None:
        privileged = access.allowed(authid, "/", ["Sys.Modify"])
    registered = set(options.registered_tags)
    user_allow = options.user_allow or "free"
    allowed: set[str] = set()
    if user_allow != "none" or privileged:
        allowed.update(options.user_allow_list or ())
    if user_allow in ("free", "existing") or privileged:
        for vmid, tags in guest_tags.items():
            if not privileged and not access.allowed(authid, f"/vms/{vmid}", ["VM.Audit"]):
                continue
            allowed.update(_split_tags(tags or ""))
    if privileged:
        allowed |= registered
    else:
        allowed -= registered
    return allowed, registered, user_allow == "free"


def assert_tag_permissions(
    access: AccessControl,
    options: DatacenterOptions,
    authid: str,
    vmid: int,
    old_tags: object,
    new_tags: object,
    guest_tags: Mapping[int, str | None],
) -> None:
    """pve-guest-common ``PVE::GuestHelpers::assert_tag_permissions``, for create and config update.

    VM.Config.Options on ``/vms/<vmid>`` (pool not consulted) is needed in any case. Without
    Sys.Modify on ``/``, every tag that is added or removed (counted per occurrence) must be
    allowed by ``user-tag-access`` and must not be a registered tag; else PVE raises
    ``raise_perm_exc("/, Sys.Modify for modifying tag '<tag>'")``: 403 ``Permission check failed
    (/, Sys.Modify for modifying tag '<tag>')``. PVE walks a Perl hash, so which of several
    offending tags it names is arbitrary; the simulator names the first in sorted order.
    """
    access.check_vm_perm(authid, vmid, None, ["VM.Config.Options"])
    if authid == _ROOT or access.allowed(authid, "/", ["Sys.Modify"]):
        return
    old_count: dict[str, int] = {}
    new_count: dict[str, int] = {}
    for tag in _split_tags("" if old_tags is None else str(old_tags)):
        old_count[tag] = old_count.get(tag, 0) + 1
    for tag in _split_tags("" if new_tags is None else str(new_tags)):
        new_count[tag] = new_count.get(tag, 0) + 1
    changed = sorted(tag for tag in set(old_count) | set(new_count) if old_count.get(tag) != new_count.get(tag))
    if not changed:
        return
    allowed, registered, freeform = allowed_tags(access, options, authid, guest_tags, privileged=False)
    for tag in changed:
        if (tag not in allowed and not freeform) or tag in registered:
            raise permission_denied(f"/, Sys.Modify for modifying tag '{tag}'")


def check_vnet_access(access: AccessControl, authid: str, bridge: str, tag: object, trunks: object) -> None:
    """pve-guest-common ``PVE::GuestHelpers::check_vnet_access`` for a bridge of zone ``localnetwork``.

    (pve-container ``PVE::LXC::check_bridge_access`` calls it for every ``netN`` a create or
    config update sets or replaces; root@pam skips it.) With a VLAN ``tag``: SDN.Use on
    ``/sdn/zones/localnetwork/<bridge>/<tag>``; with ``trunks`` (``10;20-22``, ranges expanded by
    ``get_tags_from_trunk``): SDN.Use on each VLAN's path, in Perl's string order (``sort keys``);
    with neither: SDN.Use on ``/sdn/zones/localnetwork/<bridge>``. A path check inherits from a
    propagating ACL on the bridge or above. Failures are ``$rpcenv->check``'s 403
    ``Permission check failed (<path>, SDN.Use)``. The simulator has no SDN vnets, so the zone is
    always ``localnetwork`` (PVE's zone for plain Linux bridges).
    """
    if authid == _ROOT:
        return
    base = f"/sdn/zones/localnetwork/{bridge}"
    tag_text = "" if tag is None else str(tag)
    if tag_text and tag_text != "0":
        access.check(authid, f"{base}/{tag_text}", ["SDN.Use"])
    trunk_text = "" if trunks is None else str(trunks)
    if trunk_text:
        vlans: set[str] = set()
        for trunk in trunk_text.split(";"):
            start, _, end = trunk.partition("-")
            if end and start.isdigit() and end.isdigit() and int(end) > int(start):
                vlans.update(str(v) for v in range(int(start), int(end) + 1))
            else:
                vlans.add(start)
        for vlan in sorted(vlans):
            access.check(authid, f"{base}/{vlan}", ["SDN.Use"])
    if not (tag_text and tag_text != "0") and not trunk_text:
        access.check(authid, base, ["SDN.Use"])


def _split_tags(text: str) -> list[str]:
    """pve-common ``PVE::Tools::split_list`` (NUL-separated, else ``,``/``;``/whitespace)."""
    if "\0" in text:
        return [part for part in text.split("\0") if part]
    return re.sub(r"[,;]", " ", text).split()
