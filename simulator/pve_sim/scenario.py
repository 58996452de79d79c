"""Scenarios: the YAML files that describe a simulated Proxmox VE cluster and what happens to it.

A scenario declares the cluster (nodes, storages, templates, pools, users, tokens, roles, ACLs), the
CTs that exist when the simulator starts, how busy CTs and nodes are over time (usage profiles from
``pve_sim.load``), HA resources, and timed events (usage changes, nodes going offline, failing
tasks). ``examples/scenarios/two-nodes.yaml`` is the reference example; every field is documented on
the models below (attribute docstrings) and spelled in YAML as camelCase with binary units
capitalised (``memory_gib`` -> ``memoryGiB``).

This module only parses and validates. The simulator core turns a ``Scenario`` into live state; it
never has to re-check what is checked here: names are unique, every reference resolves (a CT's node,
storage and pool; an ACL's role, user, token or group; an event's CT or node), storages can hold
what they are used for, and usage values are fractions.

Large clusters are written compactly with ``generate`` (node groups and CT groups expanded at load
time, see ``GenerateSection``). After loading, generated objects sit in ``Scenario.nodes`` and
``Scenario.containers`` after the literal ones, and ``Scenario.generate`` is ``None``, so a dumped
scenario loads back to the same thing.

A bad scenario raises one ``ScenarioError`` naming the file, the field path as written in the YAML
(``containers[0].rootfs.storage``), the rule, and the line when known.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeAlias

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from .load import (
    MetricProfiles,
    SpecModel,
    TimeSeconds,
    UsageProfile,
)

# --------------------------------------------------------------------------------------------------
# PVE's identifier formats (pve-common JSONSchema.pm, pve-access-control Auth/Plugin.pm,
# AccessControl.pm check_path, pve-storage). Checked here so a scenario cannot create objects that
# a real PVE would refuse.

NODE_NAME_PATTERN: Final = r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$"
STORAGE_ID_PATTERN: Final = r"^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$"
USERID_PATTERN: Final = r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$"
TOKEN_ID_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9.\-_]+$"
ROLE_ID_PATTERN: Final = r"^[A-Za-z0-9.\-_]+$"
GROUP_ID_PATTERN: Final = r"^[A-Za-z0-9.\-_]+$"
POOL_ID_PATTERN: Final = r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$"
TAG_PATTERN: Final = r"^[a-zA-Z0-9_][a-zA-Z0-9_\-+.]*$"
DNS_NAME_PATTERN: Final = (
    r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$"
)
CLUSTER_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9\-_]{0,14}$"
VZTEMPLATE_VOLID_RE: Final = re.compile(
    r"^(?P<storage>[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]):vztmpl/(?P<file>[^/]+\.tar\.(gz|xz|zst|bz2))$"
)
ACL_PATH_RE: Final = re.compile(
    r"""^(
        /
        |/access|/access/groups|/access/groups/[\w.\-]+|/access/realm|/access/realm/[\w.\-]+
        |/nodes|/nodes/[\w.\-]+
        |/pool|/pool/[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}
        |/sdn|/sdn/controllers|/sdn/controllers/[\w\-]+|/sdn/dns|/sdn/dns/[^\W_]+
        |/sdn/fabrics|/sdn/fabrics/[^\W_]+|/sdn/ipams|/sdn/ipams/[^\W_]+
        |/sdn/prefix-lists|/sdn/prefix-lists/[^\W_]+|/sdn/route-maps|/sdn/route-maps/[^\W_]+
        |/sdn/zones|/sdn/zones/[\w.\-]+|/sdn/zones/[\w.\-]+/[\w.\-]+|/sdn/zones/[\w.\-]+/[\w.\-]+/[1-9][0-9]{0,3}
        |/storage|/storage/[\w.\-]+
        |/vms|/vms/[1-9][0-9]{2,}
        |/mapping|/mapping/[\w.\-]+|/mapping/[\w.\-]+/[\w.\-]+
    )$""",
    re.VERBOSE | re.ASCII,
)
"""ACL paths PVE accepts (pve-access-control ``AccessControl.pm`` ``check_path``)."""

VMID_MIN: Final = 100
VMID_MAX: Final = 999_999_999

NodeName: TypeAlias = Annotated[str, StringConstraints(pattern=NODE_NAME_PATTERN, max_length=63)]
StorageId: TypeAlias = Annotated[str, StringConstraints(pattern=STORAGE_ID_PATTERN)]
UserId: TypeAlias = Annotated[str, StringConstraints(pattern=USERID_PATTERN, max_length=64)]
PoolId: TypeAlias = Annotated[str, StringConstraints(pattern=POOL_ID_PATTERN)]
GroupId: TypeAlias = Annotated[str, StringConstraints(pattern=GROUP_ID_PATTERN)]
RoleId: TypeAlias = Annotated[str, StringConstraints(pattern=ROLE_ID_PATTERN)]
Tag: TypeAlias = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
Hostname: TypeAlias = Annotated[str, StringConstraints(pattern=DNS_NAME_PATTERN, max_length=255)]
Vmid: TypeAlias = Annotated[int, Field(ge=VMID_MIN, le=VMID_MAX)]

OsType: TypeAlias = Literal[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
]
"""``ostype`` values of pve-container (``LXC/Config.pm``)."""

StorageType: TypeAlias = Literal[
    "dir",
    "btrfs",
    "nfs",
    "cifs",
    "cephfs",
    "lvm",
    "lvmthin",
    "zfspool",
    "zfs",
    "rbd",
    "iscsi",
    "iscsidirect",
    "pbs",
    "esxi",
]
"""Storage plugin types of pve-storage 9 (``src/PVE/Storage/*Plugin.pm``)."""

ContentType: TypeAlias = Literal["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"]
"""Storage content types; ``rootdir`` holds CT volumes, ``vztmpl`` CT templates."""

STORAGE_CONTENT_BY_TYPE: Final[Mapping[str, frozenset[str]]] = {
    "dir": frozenset({"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}),
    "btrfs": frozenset({"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}),
    "nfs": frozenset({"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}),
    "cifs": frozenset({"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}),
    "cephfs": frozenset({"vztmpl", "iso", "backup", "snippets", "import"}),
    "lvm": frozenset({"images", "rootdir"}),
    "lvmthin": frozenset({"images", "rootdir"}),
    "zfspool": frozenset({"images", "rootdir"}),
    "zfs": frozenset({"images"}),
    "rbd": frozenset({"images", "rootdir"}),
    "iscsi": frozenset({"images"}),
    "iscsidirect": frozenset({"images"}),
    "pbs": frozenset({"backup"}),
    "esxi": frozenset({"import"}),
}
"""Content each storage type can hold (the plugins' ``plugindata`` ``content``)."""

TEMPLATE_STORAGE_TYPES: Final[frozenset[str]] = frozenset(
    {"dir", "btrfs", "nfs", "cifs", "cephfs", "lvmthin", "zfspool", "zfs", "rbd"}
)
"""Storage types whose CT volumes have the ``template`` feature (``volume_has_feature``, ``template =>
{current => ...}``: pve-storage ``Plugin.pm`` for raw/subvol files, ``LvmThinPlugin.pm``,
``ZFSPoolPlugin.pm``, ``RBDPlugin.pm``, ``BTRFSPlugin.pm``); thick ``lvm`` has it commented out."""

LockName: TypeAlias = Literal[
    "backup",
    "create",
    "destroyed",
    "disk",
    "fstrim",
    "migrate",
    "mounted",
    "rollback",
    "snapshot",
    "snapshot-delete",
]
"""CT config locks (pve-container ``LXC/Config.pm``)."""

TaskType: TypeAlias = Literal[
    "vzcreate",
    "vzrestore",
    "vzstart",
    "vzstop",
    "vzshutdown",
    "vzreboot",
    "vzsuspend",
    "vzresume",
    "vzdestroy",
    "vzmigrate",
    "vzsnapshot",
    "vzdelsnapshot",
    "vzrollback",
    "vztemplate",
    "vzclone",
    "resize",
    "move_volume",
    "vzdump",
    "hastart",
    "hastop",
    "hamigrate",
]
"""UPID task types of LXC operations (see the API contract, section 4.4)."""


# --------------------------------------------------------------------------------------------------
# Built-in roles, computed exactly as pve-access-control 9.1.1 (5ccd07d9) ``AccessControl.pm``
# ``create_roles`` does from ``$privgroups``.

_PRIVILEGE_GROUPS: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "VM": {
        "root": (),
        "admin": (
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Allocate",
            "VM.Clone",
            "VM.GuestAgent.Unrestricted",
            "VM.Migrate",
            "VM.Replicate",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ),
        "user": (
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.Backup",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ),
        "audit": ("VM.Audit", "VM.GuestAgent.Audit"),
    },
    "Sys": {
        "root": ("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"),
        "admin": ("Sys.Console", "Sys.Syslog"),
        "user": (),
        "audit": ("Sys.Audit",),
    },
    "Datastore": {
        "root": (),
        "admin": ("Datastore.Allocate", "Datastore.AllocateTemplate"),
        "user": ("Datastore.AllocateSpace",),
        "audit": ("Datastore.Audit",),
    },
    "SDN": {
        "root": (),
        "admin": ("SDN.Allocate", "SDN.Audit"),
        "user": ("SDN.Use",),
        "audit": ("SDN.Audit",),
    },
    "User": {
        "root": ("Realm.Allocate",),
        "admin": ("User.Modify", "Group.Allocate", "Realm.AllocateUser"),
        "user": (),
        "audit": (),
    },
    "Pool": {
        "root": (),
        "admin": ("Pool.Allocate",),
        "user": ("Pool.Audit",),
        "audit": ("Pool.Audit",),
    },
    "Mapping": {
        "root": (),
        "admin": ("Mapping.Modify",),
        "user": ("Mapping.Use",),
        "audit": ("Mapping.Audit",),
    },
}


def _compute_builtin_roles() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    valid = {"Permissions.Modify"}  # the one privilege outside the groups
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for category, groups in _PRIVILEGE_GROUPS.items():
        valid.update(groups["root"], groups["admin"], groups["user"], groups["audit"])
        admin = {*groups["admin"], *groups["user"], *groups["audit"]}
        roles[f"PVE{category}Admin"] = admin
        roles["PVEAdmin"] |= admin
        if groups["user"]:
            roles[f"PVE{category}User"] = {*groups["user"], *groups["audit"]}
        roles["PVEAuditor"].update(groups["audit"])
    # Only Administrator, root@pam and PVEMappingAdmin may modify mappings.
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = set(valid)
    return frozenset(valid), {name: frozenset(privs) for name, privs in sorted(roles.items())}


VALID_PRIVILEGES: frozenset[str]
"""Every privilege name PVE knows; a role with any other privilege is rejected."""
BUILTIN_ROLES: dict[str, frozenset[str]]
"""PVE's built-in roles (Administrator, PVEAdmin, PVEVMAdmin, PVEVMUser, PVEAuditor, ...) and their
privileges; usable in ``acl`` without declaring them, and never redefinable."""
VALID_PRIVILEGES, BUILTIN_ROLES = _compute_builtin_roles()


# --------------------------------------------------------------------------------------------------
# Errors


class ScenarioError(ValueError):
    """A scenario that cannot be loaded: one problem, with where it is and which rule it breaks.

    ``str(error)`` is ``"<source>: <path>: <rule>"`` plus ``" (line N)"`` when the line is known
    (``" (line N, column M)"`` for YAML syntax errors); ``path`` is empty for problems with the whole
    file (YAML syntax, not a mapping). Lines and columns are 1-based.
    """

    def __init__(
        self, source: str, path: str, rule: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.source = source
        self.path = path
        self.rule = rule
        self.line = line
        self.column = column
        where = f"{source}: {path}: " if path else f"{source}: "
        position = ""
        if line is not None:
            position = f" (line {line}, column {column})" if column is not None else f" (line {line})"
        super().__init__(where + rule + position)


Loc: TypeAlias = tuple[str | int, ...]


class _RuleViolation(ValueError):
    """Raised inside the scenario validator with a path of YAML names, so the error points there."""

    def __init__(self, loc: Loc, rule: str) -> None:
        super().__init__(rule)
        self.loc = loc
        self.rule = rule


# --------------------------------------------------------------------------------------------------
# Sections


class _Spec(SpecModel):
    """Base of the scenario sections."""


class UserTagAccessSpec(_Spec):
    """datacenter.cfg ``user-tag-access`` (pve-cluster ``PVE/DataCenterConfig.pm``): which tags
    users without Sys.Modify on ``/`` may set (pve-guest-common ``PVE::GuestHelpers``)."""

    user_allow: Literal["none", "list", "existing", "free"] = "free"
    """``user-allow``: ``none`` (no tag changes), ``list`` (only ``userAllowList``), ``existing``
    (the list plus tags already on guests the user may audit), ``free`` (any tag; PVE's default)."""
    user_allow_list: tuple[Tag, ...] = ()
    """``user-allow-list``: tags every user may set (unless ``userAllow`` is ``none``)."""


class CrsSpec(_Spec):
    """datacenter.cfg ``crs`` (cluster resource scheduling; reported by ``GET /cluster/options``)."""

    ha: Literal["basic", "static", "dynamic"] = "basic"
    """``ha``: how the HA manager picks a node."""
    ha_rebalance_on_start: bool = False
    """``ha-rebalance-on-start``."""
    ha_auto_rebalance: bool = False
    """``ha-auto-rebalance`` (PVE 9.2, pve-ha-manager 5.2.0): the HA manager migrates HA resources
    away from the most loaded nodes when the node imbalance stays above the threshold; only with
    ``ha: static`` or ``ha: dynamic``."""
    ha_auto_rebalance_threshold: float | None = Field(default=None, ge=0.0, le=100.0)
    """``ha-auto-rebalance-threshold``: node imbalance (coefficient of variation of the node loads)
    in percent that triggers rebalancing; unset = 30."""
    ha_auto_rebalance_method: Literal["bruteforce", "topsis"] | None = None
    """``ha-auto-rebalance-method``; unset = ``bruteforce`` (the simulator scores ``topsis`` alike)."""
    ha_auto_rebalance_hold_duration: float | None = Field(default=None, ge=0.0)
    """``ha-auto-rebalance-hold-duration``: HA rounds (10 s each) the imbalance must stay above the
    threshold before a move; unset = 3."""
    ha_auto_rebalance_margin: float | None = Field(default=None, ge=0.0, le=100.0)
    """``ha-auto-rebalance-margin``: minimum relative improvement of the imbalance, in percent, for
    a move; unset = 10."""


class DatacenterOptionsSpec(_Spec):
    """datacenter.cfg options (``GET /cluster/options``); unset = PVE's default."""

    user_tag_access: UserTagAccessSpec | None = None
    """``user-tag-access``; unset = every user may set any tag that is not registered."""
    registered_tags: tuple[Tag, ...] = ()
    """``registered-tags``: tags only users with Sys.Modify on ``/`` may add or remove."""
    crs: CrsSpec | None = None
    """``crs``; unset = ``ha=basic``."""


class ClusterSpec(_Spec):
    """Cluster-wide identity and behaviour."""

    name: Annotated[str, StringConstraints(pattern=CLUSTER_NAME_PATTERN)] = "pve-sim"
    """Cluster name (``/cluster/status``, ticket answers)."""
    pve_version: Annotated[str, StringConstraints(pattern=r"^\d+\.\d+(\.\d+)?$")] = "9.1.2"
    """The pve-manager version ``/version`` and ``pveversion`` report; also picks PVE 8 or 9 behaviour
    where they differ (RRD layout, create defaults)."""
    stats_expire_seconds: float = Field(default=300.0, ge=0.0)
    """How long ``/cluster/resources`` keeps an offline node's last CT status and stats before they
    turn ``unknown`` (pmxcfs drops status entries older than 5 minutes: pve-cluster ``status.c``)."""
    stats_lag_seconds: float = Field(default=10.0, ge=0.0)
    """How far ``/cluster/resources`` lags behind live state, like pvestatd's 10 s broadcast (0 = live)."""
    start_epoch: int | None = Field(default=None, ge=0)
    """Simulated wall-clock time (epoch seconds) at start; default: the real time when the simulator
    starts. Fixing it makes UPIDs and RRD timestamps reproducible."""
    options: DatacenterOptionsSpec = Field(default_factory=DatacenterOptionsSpec)
    """datacenter.cfg options: ``userTagAccess``, ``registeredTags``, ``crs``."""


class TimingSpec(_Spec):
    """How long tasks take, in simulated seconds (scaled by the clock's time scale; 0 = instant)."""

    create_seconds: float = Field(default=6.0, ge=0.0)
    """``vzcreate``: unpacking the template."""
    start_seconds: float = Field(default=2.0, ge=0.0)
    """``vzstart``."""
    stop_seconds: float = Field(default=1.0, ge=0.0)
    """``vzstop`` (hard stop)."""
    shutdown_seconds: float = Field(default=4.0, ge=0.0)
    """``vzshutdown`` of a CT that shuts down cleanly (before its timeout)."""
    reboot_seconds: float = Field(default=6.0, ge=0.0)
    """``vzreboot``."""
    destroy_seconds: float = Field(default=2.0, ge=0.0)
    """``vzdestroy``."""
    migrate_base_seconds: float = Field(default=4.0, ge=0.0)
    """``vzmigrate``: fixed part (config move, checks); the volume copy is added on top."""
    migrate_mib_per_second: float = Field(default=400.0, gt=0.0)
    """``vzmigrate``: copy rate of volumes on local (non-shared) storage."""
    template_seconds: float = Field(default=1.0, ge=0.0)
    """``vztemplate``: converting a stopped CT into a template (renaming its volumes to ``base-``)."""
    clone_seconds: float = Field(default=1.0, ge=0.0)
    """``vzclone``: fixed part; a linked clone of a template takes only this."""
    clone_mib_per_second: float = Field(default=400.0, gt=0.0)
    """``vzclone``: copy rate of a full clone, over the size of the source's volumes."""
    ha_crm_round_seconds: float = Field(default=10.0, gt=0.0)
    """The HA manager's (CRM) round: fencing, recovery, placement under HA rules and CRS
    auto-rebalance are decided once per round."""
    ha_fence_delay_seconds: float = Field(default=60.0, ge=0.0)
    """How long a node must be gone before its HA resources go to ``fence`` (PVE: 60 s)."""
    ha_fence_seconds: float = Field(default=120.0, ge=0.0)
    """When, after the node left, fencing is acknowledged and its HA resources are recovered on
    other nodes (PVE: about 2 minutes, the pmxcfs lock lifetime). Shorten both to test failover fast."""
    snapshot_seconds: float = Field(default=2.0, ge=0.0)
    """``vzsnapshot`` and ``vzdelsnapshot``."""
    rollback_seconds: float = Field(default=3.0, ge=0.0)
    """``vzrollback``."""
    resize_seconds: float = Field(default=1.0, ge=0.0)
    """``resize`` of a volume."""


class _NodeProperties(_Spec):
    cores: int = Field(ge=1, le=8192)
    """Logical CPUs (``maxcpu``)."""
    memory_gib: float = Field(gt=0.0)
    """RAM in GiB (``maxmem``)."""
    rootfs_gib: float = Field(gt=0.0)
    """Size of the node's root filesystem in GiB (``maxdisk``, ``rootfs.total``)."""
    swap_gib: float = Field(default=0.0, ge=0.0)
    """Swap in GiB."""
    base_load: MetricProfiles = Field(default_factory=MetricProfiles)
    """Load of the node itself (host processes, page cache, ...) as fractions of its capacity; CT
    usage adds to it."""
    online: bool = True
    """Whether the node is up at start (``nodeOffline``/``nodeOnline`` events change it)."""
    cpu_model: str | None = None
    """``cpuinfo.model`` in ``/nodes/{node}/status``; default: a generic model name."""


class NodeSpec(_NodeProperties):
    """One cluster node."""

    name: NodeName
    """Node name (``/nodes/{node}``)."""


class StorageSpec(_Spec):
    """One storage (``storage.cfg`` entry)."""

    name: StorageId
    """Storage ID (``local``, ``local-lvm``)."""
    type: StorageType
    """Plugin type; decides which content it can hold."""
    content: tuple[ContentType, ...] = ()
    """Content types enabled on it (``rootdir`` for CT volumes, ``vztmpl`` for templates)."""
    shared: bool = False
    """Same storage on every node it is available on: migrations do not copy its volumes."""
    capacity_gib: float = Field(gt=0.0)
    """Size in GiB (per node for a local storage)."""
    used_gib: float = Field(default=0.0, ge=0.0)
    """Space in GiB used by things the simulator does not model (ISOs, backups)."""
    nodes: tuple[NodeName, ...] | None = None
    """Nodes it is available on; default: all nodes."""
    enabled: bool = True
    """``false`` = disabled in storage.cfg (listed, not usable)."""

    def available_on(self, node: str) -> bool:
        """Whether ``node`` can use this storage (ignores ``enabled``)."""
        return self.nodes is None or node in self.nodes


class TemplateSpec(_Spec):
    """A CT template (``vztmpl`` volume) present on its storage."""

    volid: Annotated[str, StringConstraints(pattern=VZTEMPLATE_VOLID_RE.pattern)]
    """Volume ID ``<storage>:vztmpl/<file>.tar.<gz|xz|zst|bz2>``."""
    ostype: OsType = "debian"
    """Distribution the template contains (the created CT's ``ostype``)."""
    size_mib: float = Field(default=120.0, gt=0.0)
    """File size in MiB."""

    @property
    def storage(self) -> str:
        """The storage part of ``volid``."""
        return self.volid.split(":", 1)[0]


class PoolSpec(_Spec):
    """A resource pool."""

    poolid: PoolId
    """Pool ID (up to three levels, ``a/b/c``)."""
    comment: str = ""
    """Free text."""


class GroupSpec(_Spec):
    """A user group (ACL target)."""

    groupid: GroupId
    """Group ID."""
    comment: str = ""
    """Free text."""


class TokenSpec(_Spec):
    """An API token of a user (``Authorization: PVEAPIToken=<userid>!<id>=<secret>``)."""

    id: Annotated[str, StringConstraints(pattern=TOKEN_ID_PATTERN)]
    """Token ID (the part after ``!``)."""
    secret: str = Field(min_length=1)
    """Token value; PVE generates UUIDs, any non-empty string works here."""
    privsep: bool = True
    """Privilege separation: the token's own ACLs apply, bounded by the user's."""
    expire: int = Field(default=0, ge=0)
    """Expiry as epoch seconds; 0 = never."""
    comment: str = ""
    """Free text."""


class UserSpec(_Spec):
    """A user (``user@realm``)."""

    userid: UserId
    """``name@realm``; ``root@pam`` bypasses every permission check, as in PVE."""
    password: str | None = None
    """Password for ``/access/ticket``; unset = no password login (tokens only)."""
    enabled: bool = True
    """Disabled users cannot log in and their tokens fail."""
    expire: int = Field(default=0, ge=0)
    """Account expiry as epoch seconds; 0 = never."""
    groups: tuple[GroupId, ...] = ()
    """Groups the user belongs to (declared in ``groups``)."""
    tokens: tuple[TokenSpec, ...] = ()
    """The user's API tokens."""
    comment: str = ""
    """Free text."""


class RoleSpec(_Spec):
    """A custom role; the built-in roles (``BUILTIN_ROLES``) need no declaration."""

    id: RoleId
    """Role name."""
    privileges: tuple[str, ...] = ()
    """Privilege names (``VM.Allocate``, ``Datastore.AllocateSpace``, ...)."""


class AclSpec(_Spec):
    """One ACL entry: ``role`` on ``path`` for exactly one of ``user``, ``token`` or ``group``."""

    path: str
    """Object path (``/``, ``/vms/101``, ``/storage/local-lvm``, ``/pool/lab``, ...)."""
    role: RoleId
    """A built-in or declared role."""
    user: UserId | None = None
    """Grantee: a declared user."""
    token: str | None = None
    """Grantee: a declared token, ``user@realm!tokenid``."""
    group: GroupId | None = None
    """Grantee: a declared group."""
    propagate: bool = True
    """Whether the entry also applies below ``path``."""

    @model_validator(mode="after")
    def _exactly_one_grantee(self) -> AclSpec:
        if sum(x is not None for x in (self.user, self.token, self.group)) != 1:
            raise ValueError("an ACL entry needs exactly one of user, token or group")
        return self


class UsageMatch(_Spec):
    """Which CTs a usage rule or event applies to; every given criterion must match."""

    hostname: str | None = None
    """Shell-style glob on the hostname (``ct-*``), case-sensitive."""
    tag: Tag | None = None
    """A tag the CT carries."""
    node: NodeName | None = None
    """The node the CT is on (at creation for rules, at the event's time for events)."""

    @model_validator(mode="after")
    def _some_criterion(self) -> UsageMatch:
        if self.hostname is None and self.tag is None and self.node is None:
            raise ValueError("a match needs hostname, tag or node")
        return self

    def matches(self, hostname: str | None, tags: Iterable[str], node: str) -> bool:
        """Whether a CT with these properties matches."""
        if self.hostname is not None and not fnmatch.fnmatchcase(hostname or "", self.hostname):
            return False
        if self.tag is not None and self.tag not in tags:
            return False
        return self.node is None or self.node == node


class UsageRule(_Spec):
    """Profiles for the CTs that ``match``; metrics left out come from ``usage.default``."""

    match: UsageMatch
    """Which CTs the rule is for."""
    memory: UsageProfile | None = None
    """Memory profile (fraction of the CT's memory)."""
    cpu: UsageProfile | None = None
    """CPU profile (fraction of the CT's cores)."""
    disk: UsageProfile | None = None
    """Disk profile (fraction of the rootfs size)."""


class UsageSection(_Spec):
    """Usage of CTs without profiles of their own: those created through the API and literal or
    generated CTs without ``usage``. The first matching rule wins; otherwise ``default``."""

    rules: tuple[UsageRule, ...] = ()
    """Rules in priority order."""
    default: MetricProfiles = Field(default_factory=MetricProfiles)
    """Profiles for CTs no rule matches (and for metrics a matching rule leaves out)."""

    @cached_property
    def _resolved(self) -> tuple[tuple[UsageMatch, MetricProfiles], ...]:
        return tuple(
            (rule.match, self.default.replaced(memory=rule.memory, cpu=rule.cpu, disk=rule.disk))
            for rule in self.rules
        )

    def profiles_for(self, hostname: str | None, tags: Iterable[str], node: str) -> MetricProfiles:
        """The profiles a new CT with these properties gets."""
        tag_set = frozenset(tags)
        for match, profiles in self._resolved:
            if match.matches(hostname, tag_set, node):
                return profiles
        return self.default


class RootfsSpec(_Spec):
    """A CT's root volume."""

    storage: StorageId
    """Storage holding it: must have ``rootdir`` content and be available on the CT's node."""
    size_gib: float = Field(gt=0.0)
    """Size in GiB (``maxdisk``)."""


class NetSpec(_Spec):
    """One network interface (``net0``, ``net1``, ... in list order)."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_.\-]{1,15}$")] = "eth0"
    """Interface name inside the CT."""
    bridge: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_.\-]{1,15}$")] = "vmbr0"
    """Host bridge."""
    ip: str | None = None
    """IPv4: ``dhcp``, ``manual`` or CIDR (``192.0.2.10/24``)."""
    gw: str | None = None
    """IPv4 gateway."""
    ip6: str | None = None
    """IPv6: ``auto``, ``dhcp``, ``manual`` or CIDR."""
    gw6: str | None = None
    """IPv6 gateway."""
    hwaddr: Annotated[str, StringConstraints(pattern=r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")] | None = None
    """MAC address; default: generated."""
    tag: int | None = Field(default=None, ge=1, le=4094)
    """VLAN tag."""
    firewall: bool = False
    """Whether the PVE firewall filters this interface."""


class _ContainerProperties(_Spec):
    status: Literal["running", "stopped"] = "stopped"
    """Power state at start."""
    memory_mib: int = Field(default=512, ge=16)
    """Memory limit in MiB (``maxmem``)."""
    swap_mib: int = Field(default=512, ge=0)
    """Swap limit in MiB."""
    cores: int | None = Field(default=None, ge=1, le=8192)
    """CPU cores; unset = all of the node's cores (as in PVE)."""
    cpulimit: float = Field(default=0.0, ge=0.0, le=8192.0)
    """CPU time limit in cores; 0 = unlimited."""
    rootfs: RootfsSpec
    """Root volume."""
    net: tuple[NetSpec, ...] = ()
    """Network interfaces."""
    ostype: OsType = "debian"
    """Distribution."""
    unprivileged: bool = True
    """Unprivileged CT (user namespaces)."""
    onboot: bool = False
    """Start at node boot (after ``nodeOnline``)."""
    tags: tuple[Tag, ...] = ()
    """Tags."""
    description: str = ""
    """Config ``description`` (notes)."""
    pool: PoolId | None = None
    """Pool the CT is a member of (declared in ``pools``)."""
    lock: LockName | None = None
    """Config lock at start (a stuck migration, a backup in progress)."""
    template: bool = False
    """A template CT (``template: 1``, always stopped; clone it with ``POST …/clone``). Its rootfs is
    a base volume, as ``POST …/template`` leaves it: ``base-<vmid>-disk-0`` (``basevol-`` on ZFS),
    on a storage with PVE's ``template`` feature (not thick ``lvm``)."""
    created_at_seconds: float | None = Field(default=None, alias="createdAt")
    """When the CT was created, in simulated seconds since start (negative = before the simulator
    started); unset = at start."""
    usage: MetricProfiles | None = None
    """Usage profiles; unset = chosen by ``usage`` rules like for CTs created through the API."""
    ignores_shutdown: bool = False
    """The CT's init ignores a clean shutdown: ``shutdown`` without ``forceStop`` and PVE's restart
    migration (which never force-stops, pve-container ``LXC/Migrate.pm``) fail with ``container did
    not stop``; only a stop or a forced shutdown ends it."""


class ContainerSpec(_ContainerProperties):
    """A CT that exists when the simulator starts."""

    vmid: Vmid
    """CT ID."""
    node: NodeName
    """Node the CT is on."""
    hostname: Hostname | None = None
    """Hostname (the CT's ``name``); unset = ``CT<vmid>``."""


class HaGroupSpec(_Spec):
    """An HA group (PVE 8 style; PVE 9 migrates these to node-affinity rules)."""

    group: GroupId
    """Group name."""
    nodes: tuple[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9\-]+(:\d+)?$")], ...] = Field(
        min_length=1
    )
    """Member nodes, each ``node`` or ``node:priority``."""
    restricted: bool = False
    """Resources may run only on member nodes."""
    nofailback: bool = False
    """Do not move resources back when a higher-priority node returns."""
    comment: str = ""
    """Free text."""


class HaResourceSpec(_Spec):
    """A CT managed by HA (drives ``/cluster/ha/*`` and ``hastate`` in ``/cluster/resources``)."""

    sid: Annotated[str, StringConstraints(pattern=r"^(ct:)?[1-9][0-9]{2,8}$")]
    """Service ID ``ct:<vmid>`` (a bare vmid is accepted, as in PVE)."""
    state: Literal["started", "stopped", "enabled", "disabled", "ignored"] = "started"
    """Requested HA state."""
    group: GroupId | None = None
    """HA group (declared in ``ha.groups``)."""
    max_restart: int = Field(default=1, ge=0, le=10)
    """Restart attempts on the same node."""
    max_relocate: int = Field(default=1, ge=0, le=10)
    """Relocation attempts to other nodes."""
    failback: bool = True
    """Move back to the preferred node when it returns (PVE 9)."""
    comment: str = ""
    """Free text."""

    @property
    def vmid(self) -> int:
        """The CT the resource manages."""
        return int(self.sid.removeprefix("ct:"))


class HaRuleSpec(_Spec):
    """A PVE 9 HA rule (ha/rules.cfg, pve-ha-manager ``src/PVE/HA/Rules.pm``).

    ``node-affinity`` keeps its resources on ``nodes`` (``strict``: only there); ``resource-affinity``
    keeps them together (``affinity: positive``) or apart (``negative``). Rules PVE would reject as
    infeasible load, are listed with their ``errors`` and are ignored by the HA manager, as in PVE.
    """

    rule: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_\-]+$")]
    """Rule ID (``pve-configid``)."""
    type: Literal["node-affinity", "resource-affinity"]
    """Rule type."""
    resources: tuple[Annotated[str, StringConstraints(pattern=r"^(ct:)?[1-9][0-9]{2,8}$")], ...] = Field(
        min_length=1
    )
    """HA resources (``ct:<vmid>`` or ``<vmid>``), each declared in ``ha.resources``."""
    nodes: tuple[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9\-]+(:\d+)?$")], ...] = ()
    """``node-affinity``: nodes, each ``node`` or ``node:priority`` (higher = preferred)."""
    strict: bool = False
    """``node-affinity``: the resources may run on ``nodes`` only."""
    affinity: Literal["positive", "negative"] | None = None
    """``resource-affinity``: together (``positive``) or apart (``negative``)."""
    disable: bool = False
    """The rule is disabled."""
    comment: str = ""
    """Free text."""

    @model_validator(mode="after")
    def _type_options(self) -> HaRuleSpec:
        if self.type == "node-affinity":
            if not self.nodes:
                raise ValueError("a node-affinity rule needs nodes")
            if self.affinity is not None:
                raise ValueError("affinity belongs to resource-affinity rules")
        else:
            if self.affinity is None:
                raise ValueError("a resource-affinity rule needs affinity (positive or negative)")
            if self.nodes or self.strict:
                raise ValueError("nodes and strict belong to node-affinity rules")
        return self


class HaSection(_Spec):
    """High availability configuration."""

    groups: tuple[HaGroupSpec, ...] = ()
    """HA groups (PVE 8 style; with groups present PVE 9 refuses to create rules through the API)."""
    resources: tuple[HaResourceSpec, ...] = ()
    """HA-managed CTs."""
    rules: tuple[HaRuleSpec, ...] = ()
    """HA rules (PVE 9): node affinity and resource affinity."""


# --------------------------------------------------------------------------------------------------
# Events


class _EventBase(_Spec):
    at_seconds: TimeSeconds = Field(alias="at")
    """When the event happens, in simulated seconds since start."""


class SetContainerUsageEvent(_EventBase):
    """Replace some usage profiles of one CT (``vmid``) or of every CT that ``match``es at that time.

    The new profiles use the same time base as all profiles (seconds since start), so a step at
    ``at: 300`` inside an event at ``at: 60`` takes effect at 300.
    """

    action: Literal["setContainerUsage"] = "setContainerUsage"
    """Event kind (the YAML discriminator)."""
    vmid: Vmid | None = None
    """The CT (declared in ``containers``); or use ``match``."""
    match: UsageMatch | None = None
    """Every CT matching at event time, including CTs created through the API."""
    memory: UsageProfile | None = None
    """New memory profile; unset = unchanged."""
    cpu: UsageProfile | None = None
    """New CPU profile; unset = unchanged."""
    disk: UsageProfile | None = None
    """New disk profile; unset = unchanged."""

    @model_validator(mode="after")
    def _target_and_change(self) -> SetContainerUsageEvent:
        if (self.vmid is None) == (self.match is None):
            raise ValueError("setContainerUsage needs exactly one of vmid or match")
        if self.memory is None and self.cpu is None and self.disk is None:
            raise ValueError("setContainerUsage needs at least one of memory, cpu or disk")
        return self


class SetNodeLoadEvent(_EventBase):
    """Replace some of a node's base-load profiles."""

    action: Literal["setNodeLoad"] = "setNodeLoad"
    """Event kind (the YAML discriminator)."""
    node: NodeName
    """The node."""
    memory: UsageProfile | None = None
    """New memory profile; unset = unchanged."""
    cpu: UsageProfile | None = None
    """New CPU profile; unset = unchanged."""
    disk: UsageProfile | None = None
    """New disk profile; unset = unchanged."""

    @model_validator(mode="after")
    def _some_change(self) -> SetNodeLoadEvent:
        if self.memory is None and self.cpu is None and self.disk is None:
            raise ValueError("setNodeLoad needs at least one of memory, cpu or disk")
        return self


class NodeOfflineEvent(_EventBase):
    """The node drops out of the cluster: its CTs become unknown, calls proxied to it fail (595)."""

    action: Literal["nodeOffline"] = "nodeOffline"
    """Event kind (the YAML discriminator)."""
    node: NodeName
    """The node."""


class NodeOnlineEvent(_EventBase):
    """The node comes back (CTs with ``onboot`` start)."""

    action: Literal["nodeOnline"] = "nodeOnline"
    """Event kind (the YAML discriminator)."""
    node: NodeName
    """The node."""


class FailTasksEvent(_EventBase):
    """From ``at`` on, the next ``count`` tasks of ``taskType`` (optionally only on ``node`` or for
    ``vmid``) end with ``TASK ERROR: <message>``."""

    action: Literal["failTasks"] = "failTasks"
    """Event kind (the YAML discriminator)."""
    task_type: TaskType
    """UPID task type to fail (``vzstart``, ``vzmigrate``, ...)."""
    message: str = Field(min_length=1)
    """The error text, as PVE would log it."""
    count: int = Field(default=1, ge=1)
    """How many tasks fail."""
    node: NodeName | None = None
    """Only tasks on this node."""
    vmid: Vmid | None = None
    """Only tasks for this CT."""


ScenarioEvent: TypeAlias = Annotated[
    SetContainerUsageEvent | SetNodeLoadEvent | NodeOfflineEvent | NodeOnlineEvent | FailTasksEvent,
    Field(discriminator="action"),
]
"""A timed event, discriminated on ``action``."""


# --------------------------------------------------------------------------------------------------
# Generators


def _check_pattern(pattern: str, fields: Mapping[str, int]) -> str:
    """A name pattern may use only the given ``{field}``/``{field:spec}`` placeholders."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise ValueError(f"invalid pattern {pattern!r}: {exc}") from None
    for _, field_name, _, conversion in parsed:
        if field_name is not None and (field_name not in fields or conversion is not None):
            allowed = ", ".join("{" + name + "}" for name in fields)
            raise ValueError(f"pattern {pattern!r} may only use {allowed}")
    try:
        pattern.format(**fields)
    except ValueError as exc:
        raise ValueError(f"invalid pattern {pattern!r}: {exc}") from None
    return pattern


class NodeGroupSpec(_NodeProperties):
    """``count`` identical nodes named by ``namePattern``."""

    count: int = Field(ge=1, le=10_000)
    """How many nodes."""
    name_pattern: str = "node{index:02d}"
    """Node name; ``{index}`` (with an optional format spec) is the node's number."""
    start_index: int = Field(default=1, ge=0)
    """``{index}`` of the first node."""

    @field_validator("name_pattern")
    @classmethod
    def _valid_pattern(cls, pattern: str) -> str:
        return _check_pattern(pattern, {"index": 1})


class ContainerGroupSpec(_ContainerProperties):
    """``count`` identical CTs with consecutive vmids, spread over ``nodes``."""

    count: int = Field(ge=1, le=1_000_000)
    """How many CTs."""
    vmid_start: Vmid
    """vmid of the first CT; the others follow consecutively."""
    hostname_pattern: str = "ct-{vmid}"
    """Hostname; ``{vmid}`` and ``{index}`` (0-based within the group) with optional format specs."""
    nodes: tuple[NodeName, ...] | None = None
    """Nodes to place the CTs on, in order; default: every node (literal and generated)."""
    spread: Literal["round-robin", "block"] = "round-robin"
    """``round-robin``: CT i goes to node i mod n; ``block``: consecutive CTs fill nodes in turn."""

    @field_validator("hostname_pattern")
    @classmethod
    def _valid_pattern(cls, pattern: str) -> str:
        return _check_pattern(pattern, {"vmid": VMID_MIN, "index": 0})


def _one_or_many(value: Any) -> Any:
    """``generate.nodes: {...}`` is shorthand for a one-group list."""
    return [value] if isinstance(value, Mapping) else value


class GenerateSection(_Spec):
    """Compact form for large clusters, expanded when the scenario loads.

    ``nodes`` and ``containers`` each take one group (a mapping) or a list of groups. Generated nodes
    follow the literal ``nodes``; generated CTs follow the literal ``containers``. Example: 50 nodes
    ``node01..node50`` and 5,000 running CTs with vmids 10000..14999 spread round-robin::

        generate:
          nodes: {count: 50, cores: 64, memoryGiB: 512, rootfsGiB: 200}
          containers: {count: 5000, vmidStart: 10000, status: running, memoryMiB: 1024,
                       rootfs: {storage: local-lvm, sizeGiB: 8}}
    """

    nodes: Annotated[tuple[NodeGroupSpec, ...], BeforeValidator(_one_or_many)] = ()
    """Node groups."""
    containers: Annotated[tuple[ContainerGroupSpec, ...], BeforeValidator(_one_or_many)] = ()
    """CT groups."""


# --------------------------------------------------------------------------------------------------
# The scenario


class Scenario(_Spec):
    """A simulated PVE cluster, its initial CTs, their load, and timed events."""

    # Not frozen: loading expands `generate` into nodes/containers in place. Treat it as read-only.
    model_config = ConfigDict(frozen=False)

    api_version: Literal["pve-sim/v1"] = "pve-sim/v1"
    """Format version."""
    kind: Literal["Scenario"] = "Scenario"
    """Document kind."""
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    """Cluster identity and behaviour."""
    timing: TimingSpec = Field(default_factory=TimingSpec)
    """Task durations."""
    nodes: tuple[NodeSpec, ...] = ()
    """Cluster nodes (at least one, here or in ``generate.nodes``)."""
    storages: tuple[StorageSpec, ...] = ()
    """Storages."""
    templates: tuple[TemplateSpec, ...] = ()
    """CT templates on the storages."""
    pools: tuple[PoolSpec, ...] = ()
    """Resource pools."""
    groups: tuple[GroupSpec, ...] = ()
    """User groups."""
    users: tuple[UserSpec, ...] = ()
    """Users and their API tokens."""
    roles: tuple[RoleSpec, ...] = ()
    """Custom roles (built-in ones need no declaration)."""
    acl: tuple[AclSpec, ...] = ()
    """ACL entries."""
    usage: UsageSection = Field(default_factory=UsageSection)
    """Usage profiles of CTs without their own."""
    containers: tuple[ContainerSpec, ...] = ()
    """CTs that exist at start."""
    ha: HaSection = Field(default_factory=HaSection)
    """HA groups and resources."""
    events: tuple[ScenarioEvent, ...] = ()
    """Timed events (any order; ``timeline()`` sorts them)."""
    generate: GenerateSection | None = None
    """Generated nodes and CTs; ``None`` after loading (they are expanded into nodes/containers)."""

    @model_validator(mode="after")
    def _expand_and_check(self) -> Scenario:
        node_origins: list[Loc] = [("nodes", i) for i in range(len(self.nodes))]
        container_origins: list[Loc] = [("containers", i) for i in range(len(self.containers))]
        if self.generate is not None:
            nodes, generated_node_origins = _generate_nodes(self.generate)
            self.nodes = (*self.nodes, *nodes)
            node_origins += generated_node_origins
            containers, generated_ct_origins = _generate_containers(self.generate, self.nodes)
            self.containers = (*self.containers, *containers)
            container_origins += generated_ct_origins
            self.generate = None
        _check_references(self, node_origins, container_origins)
        return self

    def timeline(self) -> list[ScenarioEvent]:
        """Events in the order they happen (stable for equal times)."""
        return sorted(self.events, key=lambda event: event.at_seconds)

    def storage(self, name: str) -> StorageSpec | None:
        """The storage called ``name``, if declared."""
        return next((s for s in self.storages if s.name == name), None)


def _generate_nodes(generate: GenerateSection) -> tuple[list[NodeSpec], list[Loc]]:
    nodes: list[NodeSpec] = []
    origins: list[Loc] = []
    for group_index, group in enumerate(generate.nodes):
        properties = {name: getattr(group, name) for name in _NodeProperties.model_fields}
        for offset in range(group.count):
            name = group.name_pattern.format(index=group.start_index + offset)
            # Validated construction: a pattern may yield an invalid node name (`{index}` is free).
            try:
                nodes.append(NodeSpec(name=name, **properties))
            except ValidationError:
                raise _RuleViolation(
                    ("generate", "nodes", group_index, "namePattern"),
                    f"generates the invalid node name {name!r}",
                ) from None
            origins.append(("generate", "nodes", group_index))
    return nodes, origins


def _generate_containers(
    generate: GenerateSection, nodes: Sequence[NodeSpec]
) -> tuple[list[ContainerSpec], list[Loc]]:
    containers: list[ContainerSpec] = []
    origins: list[Loc] = []
    hostname_re = re.compile(DNS_NAME_PATTERN)
    node_names = {node.name for node in nodes}
    for group_index, group in enumerate(generate.containers):
        origin: Loc = ("generate", "containers", group_index)
        targets = list(group.nodes) if group.nodes is not None else [node.name for node in nodes]
        for j, name in enumerate(group.nodes or ()):
            if name not in node_names:
                raise _RuleViolation((*origin, "nodes", j), f"node {name!r} is not declared in nodes")
        if not targets:
            raise _RuleViolation(origin, "no nodes to place the generated CTs on")
        last_vmid = group.vmid_start + group.count - 1
        if last_vmid > VMID_MAX:
            raise _RuleViolation((*origin, "count"), f"vmids would run past {VMID_MAX} (to {last_vmid})")
        properties = {name: getattr(group, name) for name in _ContainerProperties.model_fields}
        for index in range(group.count):
            vmid = group.vmid_start + index
            hostname = group.hostname_pattern.format(vmid=vmid, index=index)
            if not hostname_re.match(hostname) or len(hostname) > 255:
                raise _RuleViolation(
                    (*origin, "hostnamePattern"), f"generates the invalid hostname {hostname!r}"
                )
            if group.spread == "round-robin":
                node = targets[index % len(targets)]
            else:
                node = targets[index * len(targets) // group.count]
            # The group's properties are validated already; constructing 5,000 CTs unvalidated
            # keeps loading large scenarios fast.
            containers.append(
                ContainerSpec.model_construct(vmid=vmid, node=node, hostname=hostname, **properties)
            )
            origins.append(origin)
    return containers, origins


# --------------------------------------------------------------------------------------------------
# Cross-field rules


def _duplicates(items: Iterable[tuple[Loc, str | int]]) -> Iterator[tuple[Loc, str | int, Loc]]:
    """(loc, key, first loc) for every key seen before."""
    first: dict[str | int, Loc] = {}
    for loc, key in items:
        if key in first:
            yield loc, key, first[key]
        else:
            first[key] = loc


def _check_references(
    scenario: Scenario, node_origins: Sequence[Loc], container_origins: Sequence[Loc]
) -> None:
    """Every rule that spans fields. Raises ``_RuleViolation`` at the first broken one."""
    fail = _RuleViolation

    # Nodes.
    if not scenario.nodes:
        raise fail(("nodes",), "a scenario needs at least one node (in nodes or generate.nodes)")
    for loc, name, first in _duplicates(
        ((*origin, "name"), node.name) for origin, node in zip(node_origins, scenario.nodes, strict=True)
    ):
        raise fail(loc, f"duplicate node name {name!r} (first at {_format_loc(first)})")
    node_names = {node.name for node in scenario.nodes}

    def need_node(loc: Loc, name: str) -> None:
        if name not in node_names:
            raise fail(loc, f"node {name!r} is not declared in nodes")

    # Storages.
    storages: dict[str, StorageSpec] = {}
    for i, storage in enumerate(scenario.storages):
        if storage.name in storages:
            raise fail(("storages", i, "name"), f"duplicate storage name {storage.name!r}")
        storages[storage.name] = storage
        allowed = STORAGE_CONTENT_BY_TYPE[storage.type]
        for j, content in enumerate(storage.content):
            if content not in allowed:
                raise fail(
                    ("storages", i, "content", j),
                    f"storage type {storage.type!r} cannot hold {content!r} content "
                    f"(allowed: {', '.join(sorted(allowed))})",
                )
        if len(set(storage.content)) != len(storage.content):
            raise fail(("storages", i, "content"), "content types must not repeat")
        for j, node_name in enumerate(storage.nodes or ()):
            need_node(("storages", i, "nodes", j), node_name)
        if storage.used_gib > storage.capacity_gib:
            raise fail(("storages", i, "usedGiB"), "more space used than the storage's capacityGiB")

    def need_storage(loc: Loc, name: str, content: str, node: str | None = None) -> None:
        storage = storages.get(name)
        if storage is None:
            raise fail(loc, f"storage {name!r} is not declared in storages")
        if content not in storage.content:
            raise fail(loc, f"storage {name!r} does not have {content!r} in its content")
        if node is not None and not storage.available_on(node):
            raise fail(loc, f"storage {name!r} is not available on node {node!r}")

    # Templates.
    for loc, volid, _ in _duplicates((("templates", i, "volid"), t.volid) for i, t in enumerate(scenario.templates)):
        raise fail(loc, f"duplicate template {volid!r}")
    for i, template in enumerate(scenario.templates):
        need_storage(("templates", i, "volid"), template.storage, "vztmpl")

    # Pools, groups, users, tokens.
    for loc, poolid, _ in _duplicates((("pools", i, "poolid"), p.poolid) for i, p in enumerate(scenario.pools)):
        raise fail(loc, f"duplicate pool {poolid!r}")
    pool_ids = {pool.poolid for pool in scenario.pools}
    for loc, groupid, _ in _duplicates(
        (("groups", i, "groupid"), g.groupid) for i, g in enumerate(scenario.groups)
    ):
        raise fail(loc, f"duplicate group {groupid!r}")
    group_ids = {group.groupid for group in scenario.groups}
    for loc, userid, _ in _duplicates((("users", i, "userid"), u.userid) for i, u in enumerate(scenario.users)):
        raise fail(loc, f"duplicate user {userid!r}")
    users = {user.userid: user for user in scenario.users}
    for i, user in enumerate(scenario.users):
        for j, groupid in enumerate(user.groups):
            if groupid not in group_ids:
                raise fail(("users", i, "groups", j), f"group {groupid!r} is not declared in groups")
        for loc, token_id, _ in _duplicates(
            (("users", i, "tokens", j, "id"), t.id) for j, t in enumerate(user.tokens)
        ):
            raise fail(loc, f"duplicate token {token_id!r} for user {user.userid!r}")

    # Roles.
    roles: dict[str, frozenset[str]] = dict(BUILTIN_ROLES)
    for i, role in enumerate(scenario.roles):
        if role.id in BUILTIN_ROLES:
            raise fail(("roles", i, "id"), f"{role.id!r} is a built-in role and cannot be redefined")
        if role.id in roles:
            raise fail(("roles", i, "id"), f"duplicate role {role.id!r}")
        for j, privilege in enumerate(role.privileges):
            if privilege not in VALID_PRIVILEGES:
                hint = difflib.get_close_matches(privilege, VALID_PRIVILEGES, n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise fail(("roles", i, "privileges", j), f"invalid privilege {privilege!r}{suffix}")
        roles[role.id] = frozenset(role.privileges)

    # ACL.
    for i, entry in enumerate(scenario.acl):
        if not ACL_PATH_RE.match(entry.path):
            raise fail(("acl", i, "path"), f"invalid ACL path {entry.path!r}")
        if entry.role not in roles:
            raise fail(("acl", i, "role"), f"role {entry.role!r} is neither built in nor declared in roles")
        if entry.user is not None and entry.user not in users:
            raise fail(("acl", i, "user"), f"user {entry.user!r} is not declared in users")
        if entry.group is not None and entry.group not in group_ids:
            raise fail(("acl", i, "group"), f"group {entry.group!r} is not declared in groups")
        if entry.token is not None:
            userid, bang, token_id = entry.token.partition("!")
            if not bang or not re.match(USERID_PATTERN, userid) or not re.match(TOKEN_ID_PATTERN, token_id):
                raise fail(("acl", i, "token"), f"{entry.token!r} is not a token id (user@realm!tokenid)")
            token_user = users.get(userid)
            if token_user is None:
                raise fail(("acl", i, "token"), f"user {userid!r} of token {entry.token!r} is not declared")
            if all(token.id != token_id for token in token_user.tokens):
                raise fail(("acl", i, "token"), f"user {userid!r} has no token {token_id!r}")

    # Usage rules.
    for i, rule in enumerate(scenario.usage.rules):
        if rule.match.node is not None:
            need_node(("usage", "rules", i, "match", "node"), rule.match.node)

    # Containers.
    vmids: dict[int, Loc] = {}
    for origin, ct in zip(container_origins, scenario.containers, strict=True):
        generated = origin[0] == "generate"
        vmid_loc: Loc = (*origin, "vmidStart") if generated else (*origin, "vmid")
        if ct.vmid in vmids:
            raise fail(vmid_loc, f"duplicate vmid {ct.vmid} (first at {_format_loc(vmids[ct.vmid])})")
        vmids[ct.vmid] = vmid_loc
        if not generated:  # generated CTs are placed on checked nodes
            need_node((*origin, "node"), ct.node)
        need_storage((*origin, "rootfs", "storage"), ct.rootfs.storage, "rootdir", ct.node)
        if ct.pool is not None and ct.pool not in pool_ids:
            raise fail((*origin, "pool"), f"pool {ct.pool!r} is not declared in pools")
        if ct.template and ct.status == "running":
            raise fail((*origin, "status"), "a template CT cannot be running")
        if ct.template:
            rootfs_type = next((s.type for s in scenario.storages if s.name == ct.rootfs.storage), None)
            if rootfs_type is not None and rootfs_type not in TEMPLATE_STORAGE_TYPES:
                raise fail(
                    (*origin, "rootfs", "storage"),
                    f"a template CT needs a storage with the 'template' feature, not {rootfs_type!r}",
                )

    # HA.
    ha_groups: set[str] = set()
    for i, group in enumerate(scenario.ha.groups):
        if group.group in ha_groups:
            raise fail(("ha", "groups", i, "group"), f"duplicate HA group {group.group!r}")
        ha_groups.add(group.group)
        for j, member in enumerate(group.nodes):
            need_node(("ha", "groups", i, "nodes", j), member.split(":", 1)[0])
    for loc, sid, _ in _duplicates(
        (("ha", "resources", i, "sid"), r.vmid) for i, r in enumerate(scenario.ha.resources)
    ):
        raise fail(loc, f"duplicate HA resource for CT {sid}")
    for i, resource in enumerate(scenario.ha.resources):
        if resource.vmid not in vmids:
            raise fail(("ha", "resources", i, "sid"), f"CT {resource.vmid} is not declared in containers")
        if resource.group is not None and resource.group not in ha_groups:
            raise fail(("ha", "resources", i, "group"), f"HA group {resource.group!r} is not declared")
    ha_vmids = {r.vmid for r in scenario.ha.resources}
    rule_ids = ((("ha", "rules", i, "rule"), r.rule) for i, r in enumerate(scenario.ha.rules))
    for loc, rule_id, _ in _duplicates(rule_ids):
        raise fail(loc, f"duplicate HA rule {rule_id!r}")
    for i, ha_rule in enumerate(scenario.ha.rules):
        for j, sid in enumerate(ha_rule.resources):
            if int(sid.removeprefix("ct:")) not in ha_vmids:
                raise fail(("ha", "rules", i, "resources", j), f"{sid} is not declared in ha.resources")
        for j, member in enumerate(ha_rule.nodes):
            need_node(("ha", "rules", i, "nodes", j), member.split(":", 1)[0])

    # Events.
    for i, event in enumerate(scenario.events):
        event_loc: Loc = ("events", i)
        if isinstance(event, SetContainerUsageEvent):
            if event.vmid is not None and event.vmid not in vmids:
                raise fail((*event_loc, "vmid"), f"CT {event.vmid} is not declared in containers")
            if event.match is not None and event.match.node is not None:
                need_node((*event_loc, "match", "node"), event.match.node)
        elif isinstance(event, FailTasksEvent):
            if event.node is not None:
                need_node((*event_loc, "node"), event.node)
        else:
            need_node((*event_loc, "node"), event.node)


# --------------------------------------------------------------------------------------------------
# Loading and error reporting


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _resolve_loc(loc: Loc, data: object) -> tuple[Loc, Loc]:
    """Map a pydantic location onto the YAML as written: (display loc, loc of the deepest node that
    exists in the data). Drops union tags (``periodic``), list indices pydantic adds for a single
    mapping given as a list, and anything below a scalar (a bare number turned into a constant)."""
    shown: list[str | int] = []
    present: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping):
            if part in node:
                shown.append(part)
                present.append(part)
                node = node[part]
                continue
            if isinstance(part, int) or part in (node.get("type"), node.get("action")):
                continue
            shown.append(part)  # a missing or unknown key: name it, nothing below it exists
            break
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            shown.append(part)
            present.append(part)
            node = node[part]
            continue
        if isinstance(node, list):
            shown.append(part)
        break
    return tuple(shown), tuple(present)


@functools.cache
def _known_field_names() -> frozenset[str]:
    """Every YAML field name of the format (for "did you mean" hints)."""
    names: set[str] = set()
    pending: list[type[BaseModel]] = [Scenario]
    seen: set[type[BaseModel]] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
        pending.extend(model.__subclasses__())
        for field in model.model_fields.values():
            pending.extend(_models_in(field.annotation))
    return frozenset(names)


def _models_in(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        yield from _models_in(origin)


_PATTERN_MEANINGS: Final[Mapping[str, str]] = {
    NODE_NAME_PATTERN: "a valid node name (letters, digits and inner hyphens)",
    STORAGE_ID_PATTERN: "a valid storage ID (letters, digits, - _ . ; starting with a letter, 2+ characters)",
    USERID_PATTERN: "a valid user ID (name@realm)",
    TOKEN_ID_PATTERN: "a valid token ID (a letter, then letters, digits, - _ .)",
    ROLE_ID_PATTERN: "a valid ID (letters, digits, - _ .)",
    POOL_ID_PATTERN: "a valid pool ID (letters, digits, - _ . ; up to three levels a/b/c)",
    TAG_PATTERN: "a valid tag (letters, digits, _ - + . ; not starting with - + .)",
    DNS_NAME_PATTERN: "a valid DNS name",
    CLUSTER_NAME_PATTERN: "a valid cluster name (up to 15 letters, digits, - _)",
    VZTEMPLATE_VOLID_RE.pattern: "a template volume ID (<storage>:vztmpl/<file>.tar.<gz|xz|zst|bz2>)",
}
"""Plain words for the identifier patterns, so errors do not print regular expressions."""


def _pick_error(errors: Sequence[ErrorDetails]) -> ErrorDetails:
    """The first error, except that a misspelt field beats the "missing" error it causes."""
    first = errors[0]
    if first["type"] == "missing":
        parent = first["loc"][:-1]
        for error in errors[1:]:
            if error["type"] == "extra_forbidden" and error["loc"][:-1] == parent:
                return error
    return first


def _rule_text(error: ErrorDetails, shown: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        name = shown[-1] if shown else ""
        hint = difflib.get_close_matches(str(name), sorted(_known_field_names()), n=1)
        return "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if kind == "union_tag_not_found":
        return f"missing the {ctx.get('discriminator', 'type')} field that says which kind this is"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_MEANINGS:
        return f"{error.get('input')!r} is not {_PATTERN_MEANINGS[ctx['pattern']]}"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = error.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool) and "got" not in message:
        message += f" (got {value!r})"
    return message


def _to_scenario_error(
    exc: ValidationError, data: Mapping[str, Any], source: str, lines: Mapping[Loc, int]
) -> ScenarioError:
    error = _pick_error(exc.errors(include_url=False))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _RuleViolation):
        shown, present = _resolve_loc(cause.loc, data)
        rule = cause.rule
    else:
        shown, present = _resolve_loc(tuple(error["loc"]), data)
        rule = _rule_text(error, shown)
    line = None
    for depth in range(len(present), 0, -1):
        line = lines.get(present[:depth])
        if line is not None:
            break
    return ScenarioError(source, _format_loc(shown), rule, line)


def parse_scenario(
    data: Mapping[str, Any], source: str, *, _lines: Mapping[Loc, int] | None = None
) -> Scenario:
    """Validate a scenario already read into Python objects. ``source`` names it in errors.

    Raises ``ScenarioError`` with the first problem.
    """
    if not isinstance(data, Mapping):
        raise ScenarioError(source, "", "a scenario is a mapping (apiVersion, kind, cluster, nodes, ...)")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise _to_scenario_error(exc, data, source, _lines or {}) from None


class _ScenarioLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line_map(root: yaml.Node | None) -> dict[Loc, int]:
    """1-based line of every mapping key and list item, by path."""
    lines: dict[Loc, int] = {}
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())] if root is not None else []
    visited: set[int] = set()
    while stack:
        node, loc = stack.pop()
        if id(node) in visited:  # an alias: its anchor was walked already
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    child = (*loc, key_node.value)
                    lines[child] = key_node.start_mark.line + 1
                    stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*loc, index)
                lines[child] = item.start_mark.line + 1
                stack.append((item, child))
    return lines


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ``ScenarioError`` naming the file (and line)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(source, "", f"cannot read the scenario: {exc}") from None
    loader = _ScenarioLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ScenarioError(source, "", f"invalid YAML: {exc.problem or exc}", line, column) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(source, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        raise ScenarioError(source, "", "the scenario is empty")
    return parse_scenario(data, source, _lines=_line_map(root))
