"""The parameters of every endpoint the simulator serves, declared as PVE 9.1 declares them, and the
validator that checks a request against them with PVE's exact error wording.

Why the simulator declares its own schema instead of loading PVE's ``apidoc``: the package must
run without the reference files, and a declaration in code is reviewable. A conformance test
(``tests/sim/test_conformance.py``) keeps these declarations equal to the official PVE 9.1 schema
(names, types, required-ness, enums, bounds, lengths, defaults, patterns, formats, ``requires``,
``allowtoken``, ``proxyto``), so a drift fails CI instead of misleading a client.

How validation mirrors PVE (``pve-common`` ``JSONSchema.pm`` ``check_object``/``check_prop``/
``check_type``, ``RESTHandler.pm`` ``handle``, ``pve-http-server`` ``decode_urlencoded``):

* Every error is collected, one message per parameter, and raised together as
  :class:`~pve_sim.errors.ParameterError` (HTTP 400 "Parameter verification failed.").
* Form/query values: ``key=`` (empty) means "not given" (Perl sees ``undef``); a repeated key
  becomes an array, which fails every scalar type with ``got ARRAY`` except strings with a
  ``*-list`` format, which PVE joins with ``,`` first.
* Checks per value, in PVE's order, stopping at the first failure: type, format, pattern,
  maxLength, minLength, maximum, minimum, enum.
* Top-level booleans accept only ``0``/``1`` (or JSON ``true``/``false``); booleans inside
  property strings accept ``1|on|yes|true`` / ``0|off|no|false``.
* Named-format messages keep the trailing newline PVE's verifiers die with (see
  :mod:`pve_sim.formats`).

Permission checks, proxying and the HTTP envelope belong to the HTTP layer; note that PVE checks
permissions (403) and proxies to the target node *before* it validates parameters (400).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, get_args

from pve_sim.errors import ParameterError
from pve_sim.formats import FormatError, check_named_format, normalize_tags, parse_boolean
from pve_sim.scenario import OsType

__all__ = [
    "ENDPOINTS",
    "MISSING",
    "PROPERTY_STRING_FORMATS",
    "UNKNOWN",
    "EndpointSpec",
    "ParamSpec",
    "match_endpoint",
    "normalize_tags",
    "parse_property_string",
    "path_exists",
    "validate_params",
]

MISSING: Final = "property is missing and it is not optional"
UNKNOWN: Final = "property is not defined in schema and the schema does not allow additional properties"


# ==================================================================================================
# Declarations


@dataclass(frozen=True)
class ParamSpec:
    """One parameter (or one key of a property string) as PVE's schema declares it.

    ``name`` is the PVE name; indexed options use PVE's documentation form ``net[n]`` and set
    ``index_max`` (``net0`` .. ``net31``), because PVE's real schema declares each of them.
    ``default`` is documentation, as in PVE: the validator never fills it in (handlers apply
    defaults). Boolean defaults are Python bools; PVE's descriptive defaults for numbers (e.g.
    ``cpuunits``: "cgroup v1: 1024, cgroup v2: 100") are kept as the strings PVE publishes.
    ``pattern`` is PVE's regex in Python syntax; it is anchored as PVE anchors it (``^...$``).
    ``format`` is a named PVE format (``pve-vmid``, ``pve-tag-list``...) or the name of a
    property-string schema in :data:`PROPERTY_STRING_FORMATS` (``lxc-net``, ``lxc-rootfs``...).
    ``requires`` names a parameter that must be present when this one is. ``default_key`` marks
    the key a property string assigns to a value given without ``key=`` (``local-lvm:8``).
    """

    name: str
    type: str
    optional: bool = True
    default: object | None = None
    enum: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    format: str | None = None
    requires: str | None = None
    index_max: int | None = None
    default_key: bool = False
    instance_types: tuple[str, ...] | None = None
    """SectionConfig property isolation (``instance-types``): the section types the option belongs
    to; PVE only uses it to make a non-optional option optional for other types."""
    type_property: str | None = None
    """``type-property``: the parameter that names the section type (``type``)."""
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compile once at declaration time: validation runs on every request.
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(f"^{self.pattern}$"))

    @property
    def indexed(self) -> bool:
        """True for ``net[n]``-style options that stand for ``net0`` .. ``net<index_max>``."""
        return self.index_max is not None

    @property
    def base_name(self) -> str:
        """``net`` for ``net[n]``; the name itself otherwise."""
        return self.name[:-3] if self.indexed else self.name


@dataclass(frozen=True)
class EndpointSpec:
    """One method of one PVE API path: its parameters (path parameters included, as PVE's schema
    lists them), whether API tokens may call it (``allowtoken``), whether PVE forwards it to the
    node named in the URL (``proxyto: node``; such calls answer 595 when that node is offline),
    and PVE's handler ``name`` (``create_vm``, ``vm_start``...), handy for routing and logs.
    """

    method: str
    path: str
    params: Mapping[str, ParamSpec] = field(compare=False)
    allow_token: bool = True
    proxy_to_node: bool = False
    name: str = ""
    _plain: Mapping[str, ParamSpec] = field(init=False, repr=False, compare=False)
    _indexed: Mapping[str, ParamSpec] = field(init=False, repr=False, compare=False)
    _required: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = {n: s for n, s in self.params.items() if not s.indexed}
        indexed = {s.base_name: s for s in self.params.values() if s.indexed}
        object.__setattr__(self, "_plain", MappingProxyType(plain))
        object.__setattr__(self, "_indexed", MappingProxyType(indexed))
        object.__setattr__(self, "_required", tuple(n for n, s in plain.items() if not s.optional))

    def __hash__(self) -> int:
        return hash((self.method, self.path))

    @property
    def path_params(self) -> tuple[str, ...]:
        """Names of the ``{...}`` segments of the path template, in order."""
        return tuple(_PATH_PARAM_RE.findall(self.path))

    def lookup(self, key: str) -> ParamSpec | None:
        """The spec for a concrete parameter name (``net3`` finds ``net[n]``), or None if PVE's
        schema has no such property."""
        spec = self._plain.get(key)
        if spec is not None:
            return spec
        if self._indexed:
            match = _INDEXED_KEY_RE.match(key)
            if match is not None:
                spec = self._indexed.get(match.group(1))
                if spec is not None and spec.index_max is not None and int(match.group(2)) <= spec.index_max:
                    return spec
        return None


_PATH_PARAM_RE = re.compile(r"\{([\w-]+)\}")
# "net12" -> ("net", "12"); PVE declares net0..net31, so "net012" is unknown, not net12.
_INDEXED_KEY_RE = re.compile(r"^([A-Za-z_-]+?)(0|[1-9][0-9]*)\Z")


def _params(*specs: ParamSpec) -> Mapping[str, ParamSpec]:
    return MappingProxyType({s.name: s for s in specs})


# --- property-string schemas (pve-container src/PVE/LXC/Config.pm, PVE 9.1) ----------------------

_MOUNT_OPTION = r"(?:(discard|lazytime|noatime|nodev|noexec|nosuid))"

_ROOTFS_KEYS: tuple[ParamSpec, ...] = (
    ParamSpec("volume", "string", optional=False, default_key=True, format="pve-lxc-mp-string"),
    ParamSpec("size", "string", format="disk-size"),
    ParamSpec("acl", "boolean"),
    ParamSpec("mountoptions", "string", pattern=rf"(?:{_MOUNT_OPTION}(;{_MOUNT_OPTION})*)"),
    ParamSpec("ro", "boolean"),
    ParamSpec("quota", "boolean"),
    ParamSpec("replicate", "boolean", default=True),
    ParamSpec("shared", "boolean", default=False),
)

PROPERTY_STRING_FORMATS: Mapping[str, Mapping[str, ParamSpec]] = MappingProxyType(
    {
        # net[n] (PVE registers it as 'pve-lxc-network')
        "lxc-net": _params(
            ParamSpec("name", "string", optional=False, pattern=r"[-_.\w\d]+"),
            ParamSpec("bridge", "string", pattern=r"[-_.\w\d]+"),
            ParamSpec("hwaddr", "string", format="mac-addr"),
            ParamSpec("mtu", "integer", minimum=64, maximum=65535),
            ParamSpec("ip", "string", format="pve-ipv4-config"),
            ParamSpec("gw", "string", format="ipv4"),
            ParamSpec("ip6", "string", format="pve-ipv6-config"),
            ParamSpec("gw6", "string", format="ipv6"),
            ParamSpec("firewall", "boolean"),
            ParamSpec("tag", "integer", minimum=1, maximum=4094),
            ParamSpec("trunks", "string", pattern=r"(?:\d+(?:;\d+)*)"),
            ParamSpec("rate", "number"),
            ParamSpec("link_down", "boolean"),
            ParamSpec("host-managed", "boolean"),
            ParamSpec("type", "string", enum=("veth",)),
        ),
        # rootfs (PVE: standard option 'pve-ct-rootfs')
        "lxc-rootfs": _params(*_ROOTFS_KEYS),
        # mp[n] (PVE registers it as 'pve-ct-mountpoint')
        "lxc-mp": _params(
            *_ROOTFS_KEYS,
            ParamSpec("backup", "boolean"),
            ParamSpec("mp", "string", optional=False, format="pve-lxc-mp-string"),
            ParamSpec("keepattrs", "boolean", default=False),
        ),
        "lxc-features": _params(
            ParamSpec("mount", "string", pattern=r"(?:[a-zA-Z0-9_; ]+)"),
            ParamSpec("nesting", "boolean", default=False),
            ParamSpec("keyctl", "boolean", default=False),
            ParamSpec("fuse", "boolean", default=False),
            ParamSpec("mknod", "boolean", default=False),
            ParamSpec("force_rw_sys", "boolean", default=False),
        ),
        "lxc-dev": _params(
            ParamSpec("path", "string", default_key=True, format="pve-lxc-dev-string"),
            ParamSpec("mode", "string", pattern=r"0[0-7]{3}"),
            ParamSpec("uid", "integer", minimum=0),
            ParamSpec("gid", "integer", minimum=0),
            ParamSpec("deny-write", "boolean", default=False),
        ),
        "lxc-unused": _params(
            ParamSpec("volume", "string", optional=False, default_key=True, format="pve-volume-id"),
        ),
    }
)
"""Property-string schemas by the simulator's name: key -> spec of that key."""

_DEFAULT_KEYS: Mapping[str, str | None] = MappingProxyType(
    {fmt: next((k for k, s in keys.items() if s.default_key), None) for fmt, keys in PROPERTY_STRING_FORMATS.items()}
)


# --- shared parameter declarations -----------------------------------------------------------------

NODE = ParamSpec("node", "string", optional=False, format="pve-node")
VMID = ParamSpec("vmid", "integer", optional=False, format="pve-vmid", minimum=100, maximum=999_999_999)
UPID = ParamSpec("upid", "string", optional=False)
POOLID = ParamSpec("poolid", "string", optional=False, format="pve-poolid")
SKIPLOCK = ParamSpec("skiplock", "boolean")
_CTRL_CHARS = r"[^\x00-\x08\x10-\x1F\x7F]"  # PVE 9.1's class (9.2 lets \x09 tab pass as well)

# Options of the container configuration that both create (POST) and update (PUT) accept.
_LXC_CONFIG_OPTIONS: tuple[ParamSpec, ...] = (
    ParamSpec("arch", "string", default="amd64", enum=("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64")),
    ParamSpec("cmode", "string", default="tty", enum=("shell", "console", "tty")),
    ParamSpec("console", "boolean", default=True),
    ParamSpec("cores", "integer", minimum=1, maximum=8192),
    ParamSpec("cpulimit", "number", default=0, minimum=0, maximum=8192),
    ParamSpec("cpuunits", "integer", default="cgroup v1: 1024, cgroup v2: 100", minimum=0, maximum=500_000),
    ParamSpec("debug", "boolean", default=False),
    ParamSpec("description", "string", max_length=8192),
    ParamSpec("dev[n]", "string", format="lxc-dev", index_max=255),
    ParamSpec("entrypoint", "string", default="/sbin/init", pattern=f"(?:{_CTRL_CHARS}+)"),
    ParamSpec("env", "string", pattern=rf"(?:(?:\w+={_CTRL_CHARS}*)(?:\0\w+={_CTRL_CHARS}*)*)"),
    ParamSpec("features", "string", format="lxc-features"),
    ParamSpec("hookscript", "string", format="pve-volume-id"),
    ParamSpec("hostname", "string", format="dns-name", max_length=255),
    ParamSpec(
        "lock",
        "string",
        enum=(
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
        ),
    ),
    ParamSpec("memory", "integer", default=512, minimum=16),
    ParamSpec("mp[n]", "string", format="lxc-mp", index_max=255),
    ParamSpec("nameserver", "string", format="lxc-ip-with-ll-iface-list"),
    ParamSpec("net[n]", "string", format="lxc-net", index_max=31),
    ParamSpec("onboot", "boolean", default=False),
    ParamSpec("ostype", "string", enum=get_args(OsType)),
    ParamSpec("protection", "boolean", default=False),
    ParamSpec("rootfs", "string", format="lxc-rootfs"),
    ParamSpec("searchdomain", "string", format="dns-name-list"),
    ParamSpec("startup", "string", format="pve-startup-order"),
    ParamSpec("swap", "integer", default=512, minimum=0),
    ParamSpec("tags", "string", format="pve-tag-list"),
    ParamSpec("template", "boolean", default=False),
    ParamSpec("timezone", "string", format="pve-ct-timezone"),
    ParamSpec("tty", "integer", default=2, minimum=0, maximum=6),
    # The schema says 0; since PVE 9.0 create defaults to 1 when it is not given (handler logic).
    ParamSpec("unprivileged", "boolean", default=False),
    ParamSpec("unused[n]", "string", format="lxc-unused", index_max=255),
)

_LXC_CREATE_ONLY: tuple[ParamSpec, ...] = (
    NODE,
    VMID,
    ParamSpec("ostemplate", "string", optional=False, max_length=255),
    ParamSpec("password", "string", min_length=5),
    ParamSpec("storage", "string", default="local", format="pve-storage-id"),
    ParamSpec("force", "boolean"),
    ParamSpec("restore", "boolean"),
    ParamSpec("unique", "boolean", requires="restore"),
    ParamSpec("pool", "string", format="pve-poolid"),
    ParamSpec("ignore-unpack-errors", "boolean"),
    ParamSpec("ssh-public-keys", "string"),
    ParamSpec("bwlimit", "number", default="restore limit from datacenter or storage config", minimum=0),
    ParamSpec("start", "boolean", default=False),
    ParamSpec("ha-managed", "boolean", default=False),
)

_LXC_VOLUME_KEYS_WITH_UNUSED: tuple[str, ...] = (
    "rootfs",
    *(f"mp{i}" for i in range(256)),
    *(f"unused{i}" for i in range(256)),
)
"""pve-container ``PVE::LXC::Config->valid_volume_keys_with_unused`` (``$MAX_MOUNT_POINTS`` and
``$MAX_UNUSED_DISKS`` are 256)."""

_LXC_UPDATE_ONLY: tuple[ParamSpec, ...] = (
    NODE,
    VMID,
    ParamSpec("delete", "string", format="pve-configid-list"),
    ParamSpec("revert", "string", format="pve-configid-list"),
    ParamSpec("digest", "string", max_length=40),
)


# --- HA (pve-ha-manager src/PVE/HA/Resources.pm, src/PVE/HA/Rules.pm and its plugins) -------------

_HA_SID = ParamSpec("sid", "string", optional=False, format="pve-ha-resource-or-vm-id")
_HA_RESOURCE_TYPE = ParamSpec("type", "string", enum=("ct", "vm"))
_HA_RESOURCE_OPTIONS: tuple[ParamSpec, ...] = (
    ParamSpec("comment", "string", max_length=4096),
    ParamSpec("failback", "boolean", default=True),
    ParamSpec("group", "string", format="pve-configid"),
    ParamSpec("max_relocate", "integer", default=1, minimum=0),
    ParamSpec("max_restart", "integer", default=1, minimum=0),
    ParamSpec("state", "string", default="started", enum=("started", "stopped", "enabled", "disabled", "ignored")),
)
_HA_RULE_TYPES = ("node-affinity", "resource-affinity")
_HA_RULE_ID = ParamSpec("rule", "string", optional=False, format="pve-configid")
_HA_RULE_RESOURCES = ParamSpec("resources", "string", format="pve-ha-resource-id-list")
_HA_RULE_OPTIONS: tuple[ParamSpec, ...] = (
    _HA_RULE_ID,
    ParamSpec("type", "string", optional=False, enum=_HA_RULE_TYPES),
    ParamSpec("comment", "string", max_length=4096),
    ParamSpec("disable", "boolean"),
    ParamSpec(
        "affinity",
        "string",
        enum=("positive", "negative"),
        instance_types=("resource-affinity",),
        type_property="type",
    ),
    ParamSpec(
        "nodes",
        "string",
        format="pve-ha-node-list",
        instance_types=("node-affinity",),
        type_property="type",
    ),
    ParamSpec("strict", "boolean", default=False, instance_types=("node-affinity",), type_property="type"),
)


def _ep(
    method: str,
    path: str,
    name: str,
    params: Iterable[ParamSpec] = (),
    *,
    proxy: bool = False,
    allow_token: bool = True,
) -> EndpointSpec:
    return EndpointSpec(
        method=method,
        path=path,
        params=_params(*params),
        allow_token=allow_token,
        proxy_to_node=proxy,
        name=name,
    )


_CT = "/nodes/{node}/lxc/{vmid}"

_ENDPOINT_LIST: tuple[EndpointSpec, ...] = (
    _ep("GET", "/version", "version"),
    _ep(
        "POST",
        "/access/ticket",
        "create_ticket",
        (
            ParamSpec("username", "string", optional=False, max_length=64),
            ParamSpec("password", "string", optional=False),
            ParamSpec("realm", "string", format="pve-realm", max_length=32),
            ParamSpec("otp", "string"),
            ParamSpec("tfa-challenge", "string"),
            ParamSpec("path", "string", max_length=64, requires="privs"),
            ParamSpec("privs", "string", format="pve-priv-list", max_length=64, requires="path"),
            ParamSpec("new-format", "boolean", default=True),
        ),
        allow_token=False,
    ),
    _ep(
        "GET",
        "/access/permissions",
        "permissions",
        (
            ParamSpec("path", "string"),
            ParamSpec(
                "userid",
                "string",
                pattern=(
                    r"(?:^(?:[^\s:/]+)\@(?:[A-Za-z][A-Za-z0-9\.\-_]+)"
                    r"(?:!(?:[A-Za-z][A-Za-z0-9\.\-_]+))?$)"
                ),
            ),
        ),
    ),
    _ep(
        "GET",
        "/access/users",
        "index",
        (ParamSpec("enabled", "boolean"), ParamSpec("full", "boolean", default=False)),
    ),
    _ep("GET", "/cluster/options", "get_options"),
    _ep(
        "GET",
        "/storage",
        "index",
        (
            ParamSpec(
                "type",
                "string",
                enum=(
                    "btrfs",
                    "cephfs",
                    "cifs",
                    "dir",
                    "esxi",
                    "iscsi",
                    "iscsidirect",
                    "lvm",
                    "lvmthin",
                    "nfs",
                    "pbs",
                    "rbd",
                    "zfs",
                    "zfspool",
                ),
            ),
        ),
    ),
    _ep("GET", "/nodes/{node}/dns", "dns", (NODE,), proxy=True),
    _ep(
        "PUT",
        "/nodes/{node}/dns",
        "update_dns",
        (
            NODE,
            ParamSpec("search", "string", optional=False),
            ParamSpec("dns1", "string", format="ip"),
            ParamSpec("dns2", "string", format="ip"),
            ParamSpec("dns3", "string", format="ip"),
        ),
        proxy=True,
    ),
    _ep(
        "GET",
        "/cluster/resources",
        "resources",
        (ParamSpec("type", "string", enum=("vm", "storage", "node", "sdn")),),
    ),
    _ep("GET", "/cluster/nextid", "nextid", (replace(VMID, optional=True),)),
    _ep("GET", "/cluster/status", "get_status"),
    _ep("GET", "/cluster/tasks", "tasks"),
    _ep("GET", "/cluster/ha/status/current", "status"),
    _ep("GET", "/cluster/ha/status/manager_status", "manager_status"),
    _ep(
        "GET",
        "/cluster/ha/rules",
        "index",
        (
            ParamSpec("resource", "string"),
            ParamSpec("type", "string", enum=_HA_RULE_TYPES),
        ),
    ),
    _ep("POST", "/cluster/ha/rules", "create_rule", (*_HA_RULE_OPTIONS, replace(_HA_RULE_RESOURCES, optional=False))),
    _ep("GET", "/cluster/ha/rules/{rule}", "read_rule", (_HA_RULE_ID,)),
    _ep(
        "PUT",
        "/cluster/ha/rules/{rule}",
        "update_rule",
        (
            *_HA_RULE_OPTIONS,
            _HA_RULE_RESOURCES,
            ParamSpec("delete", "string", format="pve-configid-list", max_length=4096),
            ParamSpec("digest", "string", max_length=64),
        ),
    ),
    _ep("DELETE", "/cluster/ha/rules/{rule}", "delete_rule", (_HA_RULE_ID,)),
    _ep("GET", "/cluster/ha/resources", "index", (_HA_RESOURCE_TYPE,)),
    _ep("POST", "/cluster/ha/resources", "create", (_HA_SID, _HA_RESOURCE_TYPE, *_HA_RESOURCE_OPTIONS)),
    _ep("GET", "/cluster/ha/resources/{sid}", "read", (_HA_SID,)),
    _ep(
        "PUT",
        "/cluster/ha/resources/{sid}",
        "update",
        (
            _HA_SID,
            *_HA_RESOURCE_OPTIONS,
            ParamSpec("delete", "string", format="pve-configid-list", max_length=4096),
            ParamSpec("digest", "string", max_length=64),
        ),
    ),
    _ep(
        "DELETE",
        "/cluster/ha/resources/{sid}",
        "delete",
        (_HA_SID, ParamSpec("purge", "boolean", default=True)),
    ),
    _ep("POST", "/cluster/ha/resources/{sid}/migrate", "migrate", (_HA_SID, NODE)),
    _ep("POST", "/cluster/ha/resources/{sid}/relocate", "relocate", (_HA_SID, NODE)),
    _ep("GET", "/nodes", "index"),
    _ep("GET", "/nodes/{node}/status", "status", (NODE,), proxy=True),
    _ep("GET", "/nodes/{node}/version", "version", (NODE,), proxy=True),
    # rrddata reads the cluster-wide RRD cache, so PVE does not proxy it.
    _ep(
        "GET",
        "/nodes/{node}/rrddata",
        "rrddata",
        (
            NODE,
            ParamSpec("timeframe", "string", optional=False, enum=("hour", "day", "week", "month", "year", "decade")),
            ParamSpec("cf", "string", enum=("AVERAGE", "MAX")),
        ),
    ),
    _ep("GET", "/nodes/{node}/qemu", "vmlist", (NODE, ParamSpec("full", "boolean")), proxy=True),
    _ep("GET", "/nodes/{node}/lxc", "vmlist", (NODE,), proxy=True),
    _ep("POST", "/nodes/{node}/lxc", "create_vm", (*_LXC_CREATE_ONLY, *_LXC_CONFIG_OPTIONS), proxy=True),
    _ep("GET", _CT, "vmdiridx", (NODE, VMID), proxy=True),
    _ep(
        "DELETE",
        _CT,
        "destroy_vm",
        (
            NODE,
            VMID,
            ParamSpec("force", "boolean", default=False),
            ParamSpec("purge", "boolean", default=False),
            ParamSpec("destroy-unreferenced-disks", "boolean"),
        ),
        proxy=True,
    ),
    _ep(
        "GET",
        f"{_CT}/config",
        "vm_config",
        (
            NODE,
            VMID,
            ParamSpec("current", "boolean", default=False),
            ParamSpec("snapshot", "string", format="pve-configid", max_length=40),
        ),
        proxy=True,
    ),
    _ep("PUT", f"{_CT}/config", "update_vm", (*_LXC_UPDATE_ONLY, *_LXC_CONFIG_OPTIONS), proxy=True),
    _ep(
        "GET",
        f"{_CT}/rrddata",
        "rrddata",
        (
            NODE,
            VMID,
            ParamSpec("timeframe", "string", optional=False, enum=("hour", "day", "week", "month", "year")),
            ParamSpec("cf", "string", enum=("AVERAGE", "MAX")),
        ),
    ),
    _ep("GET", f"{_CT}/status", "vmcmdidx", (NODE, VMID), proxy=True),
    _ep("GET", f"{_CT}/status/current", "vm_status", (NODE, VMID), proxy=True),
    _ep(
        "POST",
        f"{_CT}/status/start",
        "vm_start",
        (NODE, VMID, SKIPLOCK, ParamSpec("debug", "boolean", default=False)),
        proxy=True,
    ),
    _ep(
        "POST",
        f"{_CT}/status/stop",
        "vm_stop",
        (NODE, VMID, SKIPLOCK, ParamSpec("overrule-shutdown", "boolean", default=False)),
        proxy=True,
    ),
    _ep(
        "POST",
        f"{_CT}/status/shutdown",
        "vm_shutdown",
        (
            NODE,
            VMID,
            ParamSpec("timeout", "integer", default=60, minimum=0),
            ParamSpec("forceStop", "boolean", default=False),
        ),
        proxy=True,
    ),
    _ep(
        "POST",
        f"{_CT}/status/reboot",
        "vm_reboot",
        (NODE, VMID, ParamSpec("timeout", "integer", minimum=0)),
        proxy=True,
    ),
    _ep(
        "POST",
        f"{_CT}/migrate",
        "migrate_vm",
        (
            NODE,
            VMID,
            ParamSpec("target", "string", optional=False, format="pve-node"),
            ParamSpec("online", "boolean"),
            ParamSpec("restart", "boolean"),
            ParamSpec("timeout", "integer", default=180),
            ParamSpec("target-storage", "string", format="storage-pair-list"),
            ParamSpec("bwlimit", "number", default="migrate limit from datacenter or storage config", minimum=0),
        ),
        proxy=True,
    ),
    # pve-container src/PVE/API2/LXC.pm 'template' and 'clone_vm'.
    _ep("POST", f"{_CT}/template", "template", (NODE, VMID), proxy=True),
    _ep(
        "POST",
        f"{_CT}/clone",
        "clone_vm",
        (
            NODE,
            VMID,
            replace(VMID, name="newid"),
            ParamSpec("hostname", "string", format="dns-name"),
            ParamSpec("description", "string"),
            ParamSpec("pool", "string", format="pve-poolid"),
            ParamSpec("snapname", "string", format="pve-configid", max_length=40),
            ParamSpec("storage", "string", format="pve-storage-id"),
            ParamSpec("full", "boolean"),
            ParamSpec("target", "string", format="pve-node"),
            ParamSpec("bwlimit", "number", default="clone limit from datacenter or storage config", minimum=0),
        ),
        proxy=True,
    ),
    # pve-container src/PVE/API2/LXC.pm 'move_volume'.
    _ep(
        "POST",
        f"{_CT}/move_volume",
        "move_volume",
        (
            NODE,
            VMID,
            replace(VMID, name="target-vmid", optional=True),
            ParamSpec("volume", "string", optional=False, enum=_LXC_VOLUME_KEYS_WITH_UNUSED),
            ParamSpec("storage", "string", format="pve-storage-id"),
            ParamSpec("delete", "boolean", default=False),
            ParamSpec("digest", "string", max_length=40),
            ParamSpec("bwlimit", "number", default="clone limit from datacenter or storage config", minimum=0),
            ParamSpec("target-volume", "string", enum=_LXC_VOLUME_KEYS_WITH_UNUSED),
            ParamSpec("target-digest", "string", max_length=40),
        ),
        proxy=True,
    ),
    _ep(
        "GET",
        "/nodes/{node}/tasks",
        "node_tasks",
        (
            NODE,
            ParamSpec("start", "integer", default=0, minimum=0),
            ParamSpec("limit", "integer", default=50, minimum=0),
            replace(VMID, optional=True),
            ParamSpec("typefilter", "string"),
            ParamSpec("userfilter", "string"),
            ParamSpec("statusfilter", "string", format="pve-task-status-type-list"),
            ParamSpec("errors", "boolean", default=False),
            ParamSpec("source", "string", default="archive", enum=("archive", "active", "all")),
            ParamSpec("since", "integer"),
            ParamSpec("until", "integer"),
        ),
        proxy=True,
    ),
    _ep("GET", "/nodes/{node}/tasks/{upid}/status", "read_task_status", (NODE, UPID), proxy=True),
    _ep(
        "GET",
        "/nodes/{node}/tasks/{upid}/log",
        "read_task_log",
        (
            NODE,
            UPID,
            ParamSpec("start", "integer", default=0, minimum=0),
            ParamSpec("limit", "integer", default=50, minimum=0),
            ParamSpec("download", "boolean"),
        ),
        proxy=True,
    ),
    _ep(
        "GET",
        "/nodes/{node}/storage",
        "index",
        (
            NODE,
            ParamSpec("content", "string", format="pve-storage-content-list"),
            ParamSpec("storage", "string", format="pve-storage-id"),
            ParamSpec("target", "string", format="pve-node"),
            ParamSpec("enabled", "boolean", default=False),
            ParamSpec("format", "boolean", default=False),
        ),
        proxy=True,
    ),
    _ep(
        "GET",
        "/nodes/{node}/storage/{storage}/content",
        "index",
        (
            NODE,
            ParamSpec("storage", "string", optional=False, format="pve-storage-id"),
            ParamSpec("content", "string", format="pve-storage-content"),
            ParamSpec("vmid", "integer", format="pve-vmid", minimum=100, maximum=999_999_999),
        ),
        proxy=True,
    ),
    _ep(
        "GET",
        "/pools",
        "index",
        (
            ParamSpec("poolid", "string", format="pve-poolid"),
            ParamSpec("type", "string", enum=("qemu", "lxc", "storage"), requires="poolid"),
        ),
    ),
    _ep("POST", "/pools", "create_pool", (POOLID, ParamSpec("comment", "string"))),
    _ep(
        "GET",
        "/pools/{poolid}",
        "read_pool",
        (POOLID, ParamSpec("type", "string", enum=("qemu", "lxc", "storage"))),
    ),
    _ep("DELETE", "/pools/{poolid}", "delete_pool_deprecated", (POOLID,)),
    # PVE 8.1+: the non-deprecated pool delete takes the poolid as a parameter (go-proxmox's Pool.Delete).
    _ep("DELETE", "/pools", "delete_pool", (POOLID,)),
)

ENDPOINTS: Mapping[tuple[str, str], EndpointSpec] = MappingProxyType(
    {(ep.method, ep.path): ep for ep in _ENDPOINT_LIST}
)
"""Every endpoint the simulator serves, keyed by (method, PVE path template)."""


# ==================================================================================================
# Path matching (PVE's RESTHandler: fixed segments or one "{name}" matching \S+ per level)


@dataclass
class _PathNode:
    fixed: dict[str, _PathNode] = field(default_factory=dict)
    param_name: str | None = None
    param_child: _PathNode | None = None
    methods: dict[str, EndpointSpec] = field(default_factory=dict)


_PARAM_SEGMENT_RE = re.compile(r"^\{([\w-]+)\}$")
_PARAM_VALUE_RE = re.compile(r"^(\S+)$")


def _build_path_tree(endpoints: Iterable[EndpointSpec]) -> _PathNode:
    root = _PathNode()
    for ep in endpoints:
        node = root
        for segment in (s for s in ep.path.split("/") if s):
            param = _PARAM_SEGMENT_RE.match(segment)
            if param is not None:
                if node.fixed or (node.param_name not in (None, param.group(1))):
                    raise ValueError(f"{ep.path}: PVE cannot mix fixed and parameter segments")
                node.param_name = param.group(1)
                node.param_child = node.param_child or _PathNode()
                node = node.param_child
            else:
                if node.param_name is not None:
                    raise ValueError(f"{ep.path}: PVE cannot mix fixed and parameter segments")
                node = node.fixed.setdefault(segment, _PathNode())
        if ep.method in node.methods:
            raise ValueError(f"duplicate endpoint {ep.method} {ep.path}")
        node.methods[ep.method] = ep
    return root


_PATH_TREE: Final = _build_path_tree(_ENDPOINT_LIST)


def _walk(path: str) -> tuple[_PathNode, dict[str, str]] | None:
    node = _PATH_TREE
    params: dict[str, str] = {}
    for segment in (s for s in path.split("/") if s):  # PVE skips empty fragments ("//", trailing /)
        if node.param_child is not None and node.param_name is not None:
            value = _PARAM_VALUE_RE.match(segment)
            if value is None:
                return None
            params[node.param_name] = value.group(1)
            node = node.param_child
        else:
            child = node.fixed.get(segment)
            if child is None:
                return None
            node = child
    return node, params


def match_endpoint(method: str, path: str) -> tuple[EndpointSpec, dict[str, str]] | None:
    """Find the endpoint for a concrete path (URI-unescaped, without ``/api2/json``).

    Returns the spec and the path parameters (``{"node": "pve1", "vmid": "101"}``, unvalidated
    strings), or None when no served endpoint matches (PVE answers 501 then).
    """
    found = _walk(path)
    if found is None:
        return None
    node, params = found
    spec = node.methods.get(method)
    if spec is None:
        return None
    return spec, params


def path_exists(path: str) -> bool:
    """True if some method is served on this concrete path (for a precise 501 message)."""
    found = _walk(path)
    return found is not None and bool(found[0].methods)


# ==================================================================================================
# Validation

# Internal value model, close to what PVE's validator sees after decoding:
#   None          -> undef (not given, "key=" in a form, JSON null)
#   str           -> a Perl scalar (form values; JSON numbers rendered as Perl prints them)
#   list          -> an ARRAY ref (repeated form key, JSON array)
#   _JsonBool     -> a JSON::PP::Boolean (JSON true/false)
#   _JsonHash     -> a HASH ref (JSON object)


@dataclass(frozen=True)
class _JsonBool:
    value: bool


@dataclass(frozen=True)
class _JsonHash:
    value: Mapping[str, object]


_Value = str | list[object] | _JsonBool | _JsonHash | None


class _Invalid:
    """Marker: the value failed a check (the error is already recorded)."""


_INVALID: Final = _Invalid()

_INTEGER_RE = re.compile(r"^[+-]?\d+$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$")
_KV_PART_RE = re.compile(r"^([^=]+)=(.+)$")
_BLANK_RE = re.compile(r"^\s*$")


def _perl_number(value: float) -> str:
    """A number as Perl prints it (``%.15g``): 16 not 16.0, 1e+20 for large floats."""
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.15g}"


def _perl_string(value: object) -> str:
    """How Perl would stringify a decoded JSON value (used to join arrays for ``-list`` formats)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _perl_number(value)
    if isinstance(value, list):
        return "ARRAY(0x0)"
    if isinstance(value, dict):
        return "HASH(0x0)"
    return str(value)


def _from_json(value: object) -> _Value:
    if value is None:
        return None
    if isinstance(value, bool):
        return _JsonBool(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _perl_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return _JsonHash(value)
    return str(value)


def _fold_form_values(values: Iterable[str]) -> _Value:
    """Collapse the values of one form/query key as ``decode_urlencoded`` does: an empty value
    becomes undef (and replaces what came before), a second value turns the scalar into an array."""
    current: _Value = None
    for value in values:
        if value == "":
            current = None
        elif current is None:
            current = value
        elif isinstance(current, list):
            current.append(value)
        else:
            current = [current, value]
    return current


def _add_error(errors: dict[str, str], path: str, message: str) -> None:
    # PVE joins several messages for one parameter with a literal backslash-n ('\n' in Perl
    # single quotes), not a newline.
    path = path or "_root"
    errors[path] = f"{errors[path]}\\n{message}" if path in errors else message


def _type_error(spec_type: str, value: _Value) -> str | None:
    """PVE's ``check_type`` message for ``value`` against ``spec_type``, or None if it passes."""
    if isinstance(value, list):
        if spec_type == "array":
            return None
        if spec_type == "object":
            return "type check ('object') failed"
        return f"type check ('{spec_type}') failed - got ARRAY"
    if isinstance(value, _JsonHash):
        if spec_type == "object":
            return None
        if spec_type == "array":
            return "type check ('array') failed"
        return f"type check ('{spec_type}') failed - got HASH"
    if isinstance(value, _JsonBool):
        if spec_type == "boolean":
            return None
        if spec_type in ("array", "object"):
            return f"type check ('{spec_type}') failed"
        return f"type check ('{spec_type}') failed - got JSON::PP::Boolean"
    assert isinstance(value, str)
    if spec_type in ("array", "object"):
        return f"type check ('{spec_type}') failed"
    ok = (
        (spec_type == "boolean" and value in ("0", "1"))
        or (spec_type == "integer" and _INTEGER_RE.match(value) is not None)
        or (spec_type == "number" and _NUMBER_RE.match(value) is not None)
        or spec_type not in ("boolean", "integer", "number")
    )
    return None if ok else f"type check ('{spec_type}') failed - got '{value}'"


def _check_format(spec: ParamSpec, value: str, path: str) -> None:
    assert spec.format is not None
    if spec.format in PROPERTY_STRING_FORMATS:
        parse_property_string(spec.format, value, path=path)
    else:
        check_named_format(spec.format, value)


def _check_value(spec: ParamSpec, value: _Value, path: str, errors: dict[str, str]) -> object:
    """PVE's ``check_prop`` for one defined value; returns the typed value or :data:`_INVALID`."""
    # RESTHandler's legacy normalisation: arrays for '-list' strings are joined, scalars for
    # array parameters are wrapped (only if the scalar is true in Perl's sense).
    if isinstance(value, list) and spec.type == "string" and spec.format and spec.format.endswith("-list"):
        value = ",".join(_perl_string(v) for v in value)
    elif isinstance(value, str) and spec.type == "array" and value not in ("", "0"):
        value = [value]

    message = _type_error(spec.type, value)
    if message is not None:
        _add_error(errors, path, message)
        return _INVALID
    if isinstance(value, _JsonBool):
        return value.value
    if isinstance(value, list):
        return list(value)
    if isinstance(value, _JsonHash):
        return dict(value.value)
    assert isinstance(value, str)

    if spec.format is not None:
        try:
            _check_format(spec, value, path)
        except FormatError as err:
            _add_error(errors, path, f"invalid format - {err}")
            return _INVALID
    if spec._regex is not None and spec._regex.match(value) is None:
        _add_error(errors, path, "value does not match the regex pattern")
        return _INVALID
    if spec.max_length is not None and len(value) > spec.max_length:
        _add_error(errors, path, f"value may only be {spec.max_length} characters long")
        return _INVALID
    if spec.min_length is not None and len(value) < spec.min_length:
        _add_error(errors, path, f"value must be at least {spec.min_length} characters long")
        return _INVALID
    if (spec.maximum is not None or spec.minimum is not None) and _NUMBER_RE.match(value):
        number = float(value)
        if spec.maximum is not None and number > spec.maximum:
            _add_error(errors, path, f"value must have a maximum value of {_perl_number(spec.maximum)}")
            return _INVALID
        if spec.minimum is not None and number < spec.minimum:
            _add_error(errors, path, f"value must have a minimum value of {_perl_number(spec.minimum)}")
            return _INVALID
    if spec.enum is not None and value not in spec.enum:
        _add_error(errors, path, f"value '{value}' does not have a value in the enumeration '{', '.join(spec.enum)}'")
        return _INVALID

    if spec.type == "boolean":
        return value == "1"
    if spec.type == "integer":
        return int(value)
    if spec.type == "number":
        return float(value)
    return value


def parse_property_string(format_name: str, value: str, *, path: str = "") -> dict[str, object]:
    """Parse a PVE property string (``name=eth0,bridge=vmbr0,ip=dhcp``) against a schema of
    :data:`PROPERTY_STRING_FORMATS` and return its keys with typed values.

    A part without ``key=`` goes to the schema's default key (``local-lvm:8`` ->
    ``{"volume": "local-lvm:8"}``); booleans accept ``1|on|yes|true`` / ``0|off|no|false``.
    Defaults are not filled in. Raises :class:`~pve_sim.formats.FormatError` with PVE's message:
    a plain message for syntax errors ("invalid key in comma-separated list property: foo\\n"),
    or "format error\\n" with ``errors`` keyed ``<path>.<key>`` for invalid values. ``path`` is the
    parameter name (``net0``) PVE prefixes those keys with.
    """
    schema = PROPERTY_STRING_FORMATS.get(format_name)
    if schema is None:
        raise KeyError(f"unknown property-string format: {format_name}")
    parsed: dict[str, str] = {}
    default_key_seen = False
    for part in value.split(","):
        if _BLANK_RE.match(part):
            continue
        key_value = _KV_PART_RE.match(part)
        if key_value is not None:
            key, item = key_value.group(1), key_value.group(2)
            if key in parsed:
                raise FormatError(f"duplicate key in comma-separated list property: {key}\n")
            sub = schema.get(key)
            if sub is None:
                raise FormatError(f"invalid key in comma-separated list property: {key}\n")
            if sub.type == "boolean":
                flag = parse_boolean(item)
                if flag is not None:
                    item = "1" if flag else "0"
            parsed[key] = item
        elif "=" not in part:
            default_key = _DEFAULT_KEYS[format_name]
            if default_key is None:
                raise FormatError("value without key, but schema does not define a default key\n")
            if default_key_seen or parsed.get(default_key, "") not in ("", "0"):
                raise FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            default_key_seen = True
            if schema[default_key].type == "boolean":
                flag = parse_boolean(part)
                if flag is not None:
                    part = "1" if flag else "0"
            parsed[default_key] = part
        else:
            raise FormatError("missing key in comma-separated list property\n")

    errors: dict[str, str] = {}
    result: dict[str, object] = {}
    for key, sub in schema.items():
        sub_path = f"{path}.{key}" if path else key
        item_value = parsed.get(key)
        if item_value is None:
            if not sub.optional:
                _add_error(errors, sub_path, MISSING)
            continue
        typed = _check_value(sub, item_value, sub_path, errors)
        if typed is not _INVALID:
            result[key] = typed
    if errors:
        raise FormatError("format error\n", errors)
    return result


def validate_params(
    endpoint: EndpointSpec,
    raw: Mapping[str, list[str]],
    *,
    json_values: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Validate a request's parameters against ``endpoint`` exactly as PVE would.

    ``raw`` holds the query/form values as strings (a repeated key gives several values; an
    empty string means "given without a value", which PVE treats as not given) plus the path
    parameters. ``json_values`` holds the decoded values of an ``application/json`` body; for a
    key in both, the JSON value is the one validated (so JSON ``true`` is a boolean and not the
    string ``"1"``). The caller applies PVE's precedence beforehand: query parameters replace
    body parameters of the same name, and path parameters may not conflict with either.
    ExtJS's cache-buster ``_dc`` is ignored, as in PVE.

    Returns the given parameters with typed values (int, float, bool, str; property strings stay
    strings). Parameters given empty (``key=``) count as not given and are left out.
    Raises :class:`~pve_sim.errors.ParameterError` with every problem at once.
    """
    values: dict[str, _Value] = {}
    for key, raw_values in raw.items():
        if raw_values:
            values[key] = _fold_form_values(raw_values)
    if json_values:
        for key, json_value in json_values.items():
            values[key] = _from_json(json_value)
    values.pop("_dc", None)

    errors: dict[str, str] = {}
    result: dict[str, object] = {}
    for name in endpoint._required:
        if values.get(name) is None:
            _add_error(errors, name, MISSING)
    for key, value in values.items():
        spec = endpoint.lookup(key)
        if spec is None:
            _add_error(errors, key, UNKNOWN)
            continue
        if value is not None:
            typed = _check_value(spec, value, key, errors)
            if typed is not _INVALID:
                result[key] = typed
        if spec.requires is not None and values.get(spec.requires) is None:
            _add_error(errors, spec.requires, f"missing property required by '{key}'")
    if errors:
        raise ParameterError(errors)
    return result
