"""What the cluster lets the operator's Proxmox VE user do beyond its ACL roles: tags and bridges.

Two PVE rules make every create (and every offload) fail with 403 although the user has all the
privileges `docs/proxmox-setup.md` lists. Both are checked when a pool is sampled, so the pool says
what is wrong and how to fix it instead of its policies failing one CT at a time.

**Tags** (pve-guest-common ``src/PVE/GuestHelpers.pm``, ``get_allowed_tags`` and
``assert_tag_permissions``): adding or removing a tag needs ``Sys.Modify`` on ``/`` unless the tag is
allowed for ordinary users by ``datacenter.cfg``:

* ``user-tag-access: user-allow=<free|existing|list|none>,user-allow-list=<a;b>`` (default ``free``):
  ``free`` allows any tag, ``existing`` the tags already on guests the user may audit plus the list,
  ``list`` only the list, ``none`` nothing;
* ``registered-tags: <a;b>``: these need ``Sys.Modify`` on ``/`` whatever ``user-tag-access`` says.

PVE's refusal reads ``Permission check failed (/, Sys.Modify for modifying tag 'x')``.

**Bridges** (``GuestHelpers.pm`` ``check_vnet_access``): a NIC on bridge ``B`` needs ``SDN.Use`` on
``/sdn/zones/localnetwork/B``, or with a VLAN tag ``T`` on ``/sdn/zones/localnetwork/B/T`` (a bridge
that is an SDN VNet is checked in its own zone instead; the operator checks ``localnetwork``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pve_operator.api.v1alpha1 import ConditionReason, Features
from pve_operator.planning.model import ClusterSnapshot
from pve_operator.planning.ownership import MANAGED_TAG, OFFLOADED_TAG, policy_tag

#: What PVE says when a tag needs ``Sys.Modify`` on ``/`` (``assert_tag_permissions``).
TAG_REFUSAL = re.compile(r"Sys\.Modify for modifying tag '(?P<tag>[^']*)'")


class UserTagAccess(StrEnum):
    """``user-tag-access``'s ``user-allow`` (pve-cluster ``PVE/DataCenterConfig.pm``)."""

    FREE = "free"
    EXISTING = "existing"
    LIST = "list"
    NONE = "none"


def _tag_list(value: object) -> frozenset[str]:
    """A tag list as PVE returns it: a JSON list, or a ``;``/``,``/space-separated string."""
    if value is None:
        return frozenset()
    items = value if isinstance(value, list | tuple) else re.split(r"[;, ]+", str(value))
    return frozenset(str(t).strip().lower() for t in items if str(t).strip())


def property_string(value: object) -> dict[str, object]:
    """``key=value,key=value`` (or the already parsed object PVE's API returns for format options)."""
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    result: dict[str, object] = {}
    for part in str(value or "").split(","):
        key, sep, item = part.partition("=")
        if sep:
            result[key.strip()] = item.strip()
    return result


def volume_of(value: object) -> str:
    """The volume of a ``rootfs``/``mpN`` property string: ``local-lvm:vm-100-disk-1`` from
    ``local-lvm:vm-100-disk-1,mp=/srv,size=8G`` (or from ``volume=...``); a bind mount's host path as is."""
    return str(value or "").split(",", 1)[0].removeprefix("volume=")


@dataclass(frozen=True)
class TagRules:
    """The cluster's tag settings, as ``GET /cluster/options`` reports them."""

    user_allow: UserTagAccess = UserTagAccess.FREE
    allow_list: frozenset[str] = frozenset()
    registered: frozenset[str] = frozenset()

    @classmethod
    def from_cluster_options(cls, options: Mapping[str, object]) -> TagRules:
        access = property_string(options.get("user-tag-access"))
        mode = str(access.get("user-allow") or UserTagAccess.FREE.value)
        return cls(
            user_allow=UserTagAccess(mode) if mode in UserTagAccess._value2member_map_ else UserTagAccess.FREE,
            allow_list=_tag_list(access.get("user-allow-list")),
            registered=_tag_list(options.get("registered-tags")),
        )

    def refused(self, wanted: Iterable[str], *, privileged: bool, existing: Iterable[str]) -> frozenset[str]:
        """The tags of ``wanted`` the user may not set: none when ``privileged`` (``Sys.Modify`` on
        ``/``); ``existing``: the tags on guests the user can see (they count for ``existing``)."""
        if privileged:
            return frozenset()
        allowed: set[str] = set()
        if self.user_allow is not UserTagAccess.NONE:
            allowed |= self.allow_list
        if self.user_allow in (UserTagAccess.FREE, UserTagAccess.EXISTING):
            allowed |= {t.lower() for t in existing}
        free = self.user_allow is UserTagAccess.FREE
        wanted_tags = {t.lower() for t in wanted}
        return frozenset(t for t in wanted_tags if t in self.registered or (not free and t not in allowed))

    def explain(self, refused: Iterable[str]) -> str:
        """Which setting refuses the tags and how to fix it (for the condition's message)."""
        tags = sorted(refused)
        registered = [t for t in tags if t in self.registered]
        others = [t for t in tags if t not in self.registered]
        parts = []
        if others:
            listed = ";".join(sorted(self.allow_list | set(others)))
            parts.append(
                f"datacenter.cfg user-tag-access is user-allow={self.user_allow.value}, which does not allow "
                f"tag(s) {', '.join(others)}: add them to user-allow-list (Datacenter → Options → User Tag "
                f"Access, or `pvesh set /cluster/options --user-tag-access user-allow={self.user_allow.value},"
                f"user-allow-list={listed}`)"
            )
        if registered:
            parts.append(
                f"tag(s) {', '.join(registered)} are in datacenter.cfg registered-tags, which only users with "
                "Sys.Modify on / may set: remove them from registered-tags"
            )
        return "; ".join(parts) + "; or grant the operator's user and token Sys.Modify on /"


def refused_tag_in(message: str) -> str | None:
    """The tag PVE refused in a 403 message (``assert_tag_permissions``), or None."""
    match = TAG_REFUSAL.search(message)
    return match.group("tag") if match else None


def sdn_use_path(bridge: str, vlan: int | None) -> str:
    """The ACL path PVE checks ``SDN.Use`` on for a NIC on ``bridge`` (with VLAN tag ``vlan``)."""
    return f"/sdn/zones/localnetwork/{bridge}" + (f"/{vlan}" if vlan else "")


def missing_sdn_use(paths: Iterable[str], permissions: Mapping[str, Mapping[str, Mapping[str, int]]]) -> list[str]:
    """Paths without ``SDN.Use``; ``permissions``: ``GET /access/permissions?path=P`` answers by P."""
    return sorted(p for p in set(paths) if not permissions.get(p, {}).get(p, {}).get("SDN.Use"))


@dataclass(frozen=True)
class TagAccess:
    """What a pool's sample learnt about the tags its user may set."""

    #: None without ``Sys.Audit`` on ``/`` (PVE's ``GET /cluster/options`` then leaves the tag settings
    #: out): the rules are unknown and a refusal is recognised in PVE's answer to a create instead.
    rules: TagRules | None
    #: ``Sys.Modify`` on ``/``: every tag is allowed.
    privileged: bool

    def refused(self, wanted: Iterable[str], snapshot: ClusterSnapshot) -> frozenset[str]:
        """The tags of ``wanted`` the rules refuse, ``existing`` ones being those on the snapshot's CTs;
        nothing when the rules are unknown."""
        if self.rules is None:
            return frozenset()
        existing = {t for ct in snapshot.containers.values() for t in ct.tags}
        return self.rules.refused(wanted, privileged=self.privileged, existing=existing)


@dataclass(frozen=True)
class PolicyNeeds:
    """What one ContainerPolicy's creations need from these rules."""

    name: str
    uid: str
    #: (bridge, VLAN tag or None) of each NIC.
    bridges: frozenset[tuple[str, int | None]]
    #: The policy's own ``template.tags`` (the operator adds its ownership tags).
    tags: frozenset[str]

    def sdn_paths(self) -> frozenset[str]:
        return frozenset(sdn_use_path(bridge, vlan) for bridge, vlan in self.bridges)

    def wanted_tags(self) -> frozenset[str]:
        return frozenset({policy_tag(self.uid)}) | self.tags


@dataclass(frozen=True)
class AccessProblems:
    """A pool's verdict: ``blocking`` (reason, message) makes it not Ready; ``warning`` is a Degraded
    message for policies whose own tags are refused (their creations fail, the pool's safety net not)."""

    blocking: tuple[ConditionReason, str] | None = None
    warning: str = ""


def access_problems(
    access: TagAccess,
    snapshot: ClusterSnapshot,
    policies: Sequence[PolicyNeeds],
    sdn_permissions: Mapping[str, Mapping[str, Mapping[str, int]]],
) -> AccessProblems:
    """What PVE's bridge and tag rules do to the pool's work, worst first."""
    missing = missing_sdn_use(frozenset().union(*(p.sdn_paths() for p in policies)), sdn_permissions)
    if missing:
        users = sorted(p.name for p in policies if p.sdn_paths() & set(missing))
        return AccessProblems(
            blocking=(
                ConditionReason.PERMISSION_DENIED,
                f"the operator's Proxmox VE user lacks SDN.Use on {', '.join(missing)} (the bridges of "
                f"ContainerPolicy {', '.join(users)}): every create there would fail with 403; grant the "
                "CTOperatorSDN role on /sdn/zones/localnetwork (docs/proxmox-setup.md)",
            )
        )
    if access.rules is None:
        return AccessProblems()
    pool_wide = access.refused({MANAGED_TAG, OFFLOADED_TAG}, snapshot)
    if pool_wide:
        return AccessProblems(
            blocking=(
                ConditionReason.TAGS_NOT_ALLOWED,
                f"Proxmox VE refuses the operator's tag(s) {', '.join(sorted(pool_wide))} (creates and offloads "
                f"would fail with 403): {access.rules.explain(pool_wide)}",
            )
        )
    refused_by_policy = {p.name: refused for p in policies if (refused := access.refused(p.wanted_tags(), snapshot))}
    if not refused_by_policy:
        return AccessProblems()
    every = frozenset().union(*refused_by_policy.values())
    listed = "; ".join(f"{name}: {', '.join(sorted(tags))}" for name, tags in sorted(refused_by_policy.items()))
    return AccessProblems(
        warning=f"Proxmox VE refuses the tags of ContainerPolicy {listed}: {access.rules.explain(every)}"
    )


#: pve-container ``check_ct_modify_config_perm``: what a user other than root@pam may not set.
FEATURES_NEED_ROOT = (
    "Proxmox VE lets only root@pam (with its password, not an API token) set features other than nesting, "
    "and any feature of a privileged CT (pve-container check_ct_modify_config_perm): remove them, or connect "
    "the pool as root@pam"
)


def features_refusal(features: Features, *, unprivileged: bool, authid: str) -> str | None:
    """Why Proxmox VE would refuse to create a CT with ``features`` as ``authid``, or None.

    Only root@pam itself (not a token of it) may set a feature other than nesting, or any feature of a
    privileged CT. Told before creating, not learnt from 403s."""
    if authid == "root@pam":
        return None
    if not unprivileged and features.enabled:
        return (
            f"spec.template.features ({', '.join(features.enabled)}) on a privileged CT: the pool authenticates "
            f"as {authid}, and {FEATURES_NEED_ROOT}"
        )
    if features.root_only:
        return (
            f"spec.template.features ({', '.join(features.root_only)}): the pool authenticates as {authid}, and "
            f"{FEATURES_NEED_ROOT}"
        )
    return None
