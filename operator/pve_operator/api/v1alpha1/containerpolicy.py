"""``ContainerPolicy``: a set of LXC containers (CTs) the operator keeps on a ProxmoxServerPool.

The spec says how many CTs (a fixed ``replicas``, or ``fill``: keep adding while the pool has room),
what each CT looks like (``template``), which VMIDs and host names they get, how they are spread
over the pool's nodes, and what happens when the policy is deleted. CT number ``index`` (0-based)
has VMID ``vmidRange.start + index`` and host name ``hostnamePattern.format(index=index)``.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address
from typing import Annotated, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from .common import (
    CONDITIONS_SCHEMA,
    CONFIG_KEY,
    DNS1123_SUBDOMAIN,
    MAX_RECENT_ACTIONS,
    MAX_VMID,
    MIN_VMID,
    ActionKind,
    ApiModel,
    CelRule,
    Condition,
    CustomResource,
    LabelKey,
    LocalObjectReference,
    Percent,
    PrinterColumn,
    PveNodeName,
    RecordedAction,
    ScaleSubresource,
    StatusModel,
    Timestamp,
    full_match,
    immutable,
    kube_schema,
)
from .serverpool import ProxmoxServerPoolSpec

MAX_REPLICAS = 1000
"""Most CTs one policy may hold (bounds status size and the CEL cost of the rules)."""

HOSTNAME_PATTERN = "^([a-zA-Z0-9][-.a-zA-Z0-9]*)?[{]index(:(0[1-9])?d)?[}]([-.a-zA-Z0-9]*[a-zA-Z0-9])?$"
"""Syntax of ``hostnamePattern``: letters, digits, '-' and '.' around one ``{index}`` field."""

PVE_DNS_NAME = "^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?[.])*[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$"
"""A host name as Proxmox VE accepts it for a CT (format ``dns-name``, pve-common
``PVE/JSONSchema.pm`` ``pve_verify_dns_name``): labels of letters (either case), digits and '-', not
starting or ending with '-', joined by '.'; the ``hostname`` parameter allows 255 characters."""

PVE_HOSTNAME_MAX_LENGTH = 255
"""``maxLength`` of the ``hostname`` parameter of ``POST /nodes/{node}/lxc`` (pve-container)."""

_HOSTNAME_PATTERN_SYNTAX = CelRule(
    rule=f"self.matches('{HOSTNAME_PATTERN}')",
    message="hostnamePattern must contain exactly one {index} field (optionally zero-padded, like "
    "{index:02d}) and otherwise only letters, digits, '-' and '.', not '-' or '.' at the start or end",
)

_IPV4_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_ADDRESS = f"^{_IPV4_OCTET}([.]{_IPV4_OCTET}){{3}}$"
"""A dotted-quad IPv4 address: ``192.168.1.1``."""

IP_CONFIG = f"^(dhcp|manual|{_IPV4_OCTET}([.]{_IPV4_OCTET}){{3}}/([0-9]|[12][0-9]|3[0-2]))$"
"""An interface's IPv4 configuration as Proxmox VE takes it: ``dhcp``, ``manual`` or ``address/prefix``."""

_IP_CONFIG_SYNTAX = CelRule(
    rule=f"self.matches('{IP_CONFIG}')",
    message="ip must be dhcp, manual, or an IPv4 address with prefix length like 192.168.1.10/24",
)
_GATEWAY_SYNTAX = CelRule(
    rule=f"self.matches('{IPV4_ADDRESS}')",
    message="gateway must be an IPv4 address like 192.168.1.1",
)
_GATEWAY_NEEDS_STATIC_IP = CelRule(
    rule="!has(self.gateway) || self.ip != 'dhcp'",
    message="gateway is only allowed with a static ip: with ip dhcp the gateway comes from DHCP",
    field_path=".gateway",
)
_GATEWAY_NOT_OWN_OR_NETWORK_ADDRESS = CelRule(
    # Only with a well-formed static ip and gateway: their syntax rules report the others (once).
    # Kubernetes' CEL IP and CIDR libraries (1.30+); /31 and /32 have no network address to exclude.
    # `!(a == b)`, not `a != b`: the cost estimator prices `==` of two IPs at 1 but has no such case for
    # `!=`, and its unbounded estimate makes the API server refuse the whole CRD.
    rule="!has(self.gateway) || !isCIDR(self.ip) || !isIP(self.gateway)"
    " || !(ip(self.gateway) == cidr(self.ip).ip()"
    " || (cidr(self.ip).prefixLength() < 31 && ip(self.gateway) == cidr(self.ip).masked().ip()))",
    message="gateway must not be the interface's own address (ip) or the network address of its subnet",
    field_path=".gateway",
)

_TEMPLATE_FILE = "[-_a-zA-Z0-9]+([.][-_a-zA-Z0-9]+)*[.]tar[.](gz|xz|zst|bz2)"
"""A template file name: what Proxmox VE's ``parse_volname`` takes for a ``vztmpl/`` volume (``[^/]+`` ending
in ``.tar.gz``, ``.tar.xz``, ``.tar.zst`` or ``.tar.bz2``), narrowed to the characters its upload API keeps in
a file name (``normalize_content_filename``: letters, digits, ``-``, ``_``, ``.``) and to single dots: no
``/``, no ``..``, no ``%`` escapes, nothing a path could be built from."""

OSTEMPLATE = f"^[a-z][-a-z0-9_.]*[a-z0-9]:vztmpl/{_TEMPLATE_FILE}$"
"""A container template volume ID: ``<storage>:vztmpl/<file>.tar.<gz|xz|zst|bz2>``."""

_OSTEMPLATE_SYNTAX = CelRule(
    rule=f"self.matches('{OSTEMPLATE}')",
    message="ostemplate must be a template volume ID <storage>:vztmpl/<file>, where <file> ends in .tar.gz, "
    ".tar.xz, .tar.zst or .tar.bz2 and has only letters, digits, '-', '_' and single dots (no '/', '..' or "
    "%-escapes), e.g. local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
)

STORAGE_ID = "^[a-z][-a-z0-9_.]*[a-z0-9]$"
"""A Proxmox VE storage ID (``pve-storage-id``): ``local-lvm``."""

INTERFACE_NAME = "^[-_.a-zA-Z0-9]+$"
"""A Linux network interface or bridge name: ``eth0``, ``vmbr0``."""

TAG = "^[a-z0-9_][-a-z0-9_+.]*$"
"""A Proxmox VE tag (``pve-tag``), lowercase: ``web``, ``team_a``."""

SSH_PUBLIC_KEY = (
    "^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh[.]com)"
    " [A-Za-z0-9+/]+={0,3}( [^\\r\\n]*)?$"
)
"""One OpenSSH public key line, as ``authorized_keys`` holds it: ``<type> <base64> [comment]`` (the types
OpenSSH 9 accepts for a key, no options prefix, no line breaks)."""

TIMEZONE = "^(host|[A-Za-z][-A-Za-z0-9_+]*(/[-A-Za-z0-9_+]+)*)$"
"""A CT time zone as pve-container takes it (``pve-ct-timezone``): ``host`` or an IANA zone name such as
``Europe/Berlin`` (Proxmox VE checks the name against the node's zoneinfo)."""

FS_TYPE = "^[a-z0-9_]+$"
"""A file system type the CT may mount (the ``mount`` feature): ``nfs``, ``cifs``."""

_NAMESERVER_SYNTAX = CelRule(
    rule="isIP(self)",
    message="each nameserver must be an IPv4 or IPv6 address, like 192.168.1.1 or 2001:db8::53",
)
_IP6_CONFIG_SYNTAX = CelRule(
    rule="self in ['dhcp', 'auto', 'manual'] || (isCIDR(self) && cidr(self).ip().family() == 6)",
    message="ip6 must be dhcp, auto (SLAAC), manual, or an IPv6 address with prefix length like 2001:db8::10/64",
)
_GATEWAY6_SYNTAX = CelRule(
    rule="isIP(self) && ip(self).family() == 6",
    message="gateway6 must be an IPv6 address like 2001:db8::1",
)
_GATEWAY6_NEEDS_STATIC_IP6 = CelRule(
    rule="!has(self.gateway6) || (has(self.ip6) && !(self.ip6 in ['dhcp', 'auto', 'manual']))",
    message="gateway6 is only allowed with a static ip6: with dhcp or auto the gateway comes from the network",
    field_path=".gateway6",
)
_KEYCTL_NEEDS_UNPRIVILEGED = CelRule(
    rule="!has(self.features) || !has(self.features.keyctl) || !self.features.keyctl"
    " || !has(self.unprivileged) || self.unprivileged",
    message="features.keyctl is for unprivileged CTs only (Proxmox VE: keyctl needs unprivileged: true)",
    field_path=".features.keyctl",
)
_DESCRIPTION_HAS_NO_RECORD = CelRule(
    rule="!self.matches('(?m)^pve-operator:')",
    message="description must not contain a line starting with 'pve-operator:': that line is the operator's "
    "ownership record, which it writes itself",
)

_VMID_RANGE_ORDERED = CelRule(
    rule="self.start <= self.end",
    message="vmidRange.start must be less than or equal to vmidRange.end",
)
_EXACTLY_ONE_SIZE = CelRule(
    rule="has(self.replicas) != has(self.fill)",
    message="exactly one of replicas and fill must be set",
)
_RANGE_HOLDS_REPLICAS = CelRule(
    rule="!has(self.replicas) || self.vmidRange.end - self.vmidRange.start + 1 >= self.replicas",
    message="replicas must not exceed the number of VMIDs in vmidRange (end - start + 1)",
    field_path=".replicas",
)
_RANGE_HOLDS_SURGE = CelRule(
    rule=(
        "!has(self.replicas) || !has(self.updateStrategy) || !has(self.updateStrategy.maxSurge) || "
        "self.vmidRange.end - self.vmidRange.start + 1 >= self.replicas + self.updateStrategy.maxSurge"
    ),
    message=(
        "replicas + updateStrategy.maxSurge must not exceed the number of VMIDs in vmidRange (end - start + 1): "
        "surge CTs need VMIDs of their own"
    ),
    field_path=".updateStrategy.maxSurge",
)
_SURGE_NEEDS_REPLICAS = CelRule(
    rule="!has(self.fill) || !has(self.updateStrategy) || !has(self.updateStrategy.maxSurge) || "
    "self.updateStrategy.maxSurge == 0",
    message="updateStrategy.maxSurge needs replicas: in fill mode every extra CT counts as growth (use maxUnavailable)",
    field_path=".updateStrategy.maxSurge",
)
_KEPT_VOLUMES_NEED_HANDOVER = CelRule(
    rule=(
        "!has(self.template.mountPoints) || "
        "!self.template.mountPoints.exists(m, has(m.keepOnRecreate) && m.keepOnRecreate) || "
        "(has(self.updateStrategy) && (!has(self.updateStrategy.type) || self.updateStrategy.type == 'RollingUpdate') "
        "&& has(self.updateStrategy.maxSurge) && self.updateStrategy.maxSurge >= 1 "
        "&& (!has(self.updateStrategy.maxUnavailable) || self.updateStrategy.maxUnavailable >= 1))"
    ),
    message=(
        "a mount point with keepOnRecreate needs updateStrategy RollingUpdate with maxSurge >= 1 (the replacement "
        "must exist to receive the volume) and maxUnavailable >= 1 (the volume is attached to one CT at a time, "
        "so each handover stops the old CT before the new one starts)"
    ),
    field_path=".updateStrategy",
)
_RANGE_HOLDS_FILL = CelRule(
    rule="!has(self.fill) || self.vmidRange.end - self.vmidRange.start + 1 >= self.fill.maxReplicas",
    message="fill.maxReplicas must not exceed the number of VMIDs in vmidRange (end - start + 1)",
    field_path=".fill.maxReplicas",
)


class PlacementStrategy(StrEnum):
    """How new CTs are spread over the pool's nodes."""

    WEIGHTED_SPREAD = "WeightedSpread"
    """Deterministic: each new CT goes to the node furthest below its weighted share of the policy's CTs."""

    WEIGHTED_RANDOM = "WeightedRandom"
    """Each new CT goes to a node drawn at random with probability proportional to its weight."""


class DeletionPolicy(StrEnum):
    """What happens to the CTs when their ContainerPolicy is deleted."""

    DELETE = "Delete"
    """Stop and destroy them (with their disks)."""

    RETAIN = "Retain"
    """Leave them as they are in Proxmox VE, no longer managed."""


class ContainerState(StrEnum):
    """State of one CT of a policy, as the operator sees it."""

    CREATING = "Creating"
    RUNNING = "Running"
    STOPPED = "Stopped"
    """Stopped, but not by the operator's offload (it will be started again)."""

    OFFLOADED = "Offloaded"
    """Stopped by the operator to relieve its node; started again once the node has room."""

    MIGRATING = "Migrating"
    UNKNOWN = "Unknown"
    """On a node that is offline: Proxmox VE cannot tell its state, and the operator leaves it alone
    (counted, never replaced) until the node is back."""

    MISSING = "Missing"
    """Recorded in status but no longer found in Proxmox VE (it will be recreated)."""


class FillStoppedReason(StrEnum):
    """Why fill mode stopped adding CTs."""

    USAGE_LIMIT_REACHED = "UsageLimitReached"
    """The pool's usage reached fill.untilPercent (or every node reached the creation ceiling)."""

    MAX_REPLICAS_REACHED = "MaxReplicasReached"
    """The policy holds fill.maxReplicas CTs."""

    VMID_RANGE_EXHAUSTED = "VmidRangeExhausted"
    """No free VMID is left in vmidRange (other guests use some of it)."""


# ---------------------------------------------------------------------------------------------
# Spec


class FillSpec(ApiModel):
    """Generator mode: keep adding CTs while the pool has room, up to a maximum."""

    until_percent: int = Field(ge=1, le=100)
    """Add CTs while the pool's usage of its thresholds.metric stays below this, in percent of the capacity
    of its nodes (nodes in maintenance and of weight 0 excluded). The pool's creationCeilingPercent still
    applies to each node."""

    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    """Never hold more CTs than this, however much room is left."""


class RootFS(ApiModel):
    """The CT's root file system volume."""

    storage: str = Field(min_length=2, max_length=100, pattern=STORAGE_ID)
    """Proxmox VE storage for the volume, e.g. local-lvm (it must exist on every node of the pool)."""

    size_gib: int = Field(8, alias="sizeGiB", ge=1, le=131072)
    """Size of the volume in GiB."""


MOUNT_PATH = "^/[-_./a-zA-Z0-9]*[-_a-zA-Z0-9]$"
"""An absolute path inside the CT for a mount point: no ``,``, ``;``, ``=`` or spaces (PVE's property string),
not ``/`` itself, no ``..`` (checked separately)."""

SNIPPET_VOLUME = "^[a-z][-a-z0-9_.]*[a-z0-9]:snippets/[-_a-zA-Z0-9]+([.][-_a-zA-Z0-9]+)*$"
"""A hook script volume ID: ``<storage>:snippets/<file>`` (single dots, no ``/`` in the file name)."""


_MOUNT_PATH_PLAIN = CelRule(
    rule="!(self + '/').contains('/../') && !self.contains('//')",
    message="path must be a plain absolute path: no '..' steps and no '//'",
)


class MountPoint(ApiModel):
    """A storage-backed volume mounted into the CT (Proxmox VE's ``mp0``, ``mp1``, ... in list order). It is
    part of the CT: destroyed with it, and new (empty) when a rolling update recreates the CT, unless
    ``keepOnRecreate`` hands it over to the replacement."""

    storage: str = Field(min_length=2, max_length=100, pattern=STORAGE_ID)
    """Proxmox VE storage for the volume, e.g. local-lvm."""

    size_gib: int = Field(alias="sizeGiB", ge=1, le=131072)
    """Size of the volume in GiB."""

    path: str = Field(
        min_length=2, max_length=255, pattern=MOUNT_PATH, json_schema_extra=kube_schema(_MOUNT_PATH_PLAIN)
    )
    """Where it is mounted inside the CT, e.g. /srv/data."""

    backup: bool = False
    """Include the volume in vzdump backups (Proxmox VE's default: excluded)."""

    read_only: bool = False
    """Mount it read-only (Proxmox VE's ro)."""

    quota: bool = False
    """Enable user quotas inside the CT for this volume."""

    acl: bool | None = None
    """Force POSIX ACLs on (true) or off (false); absent: the file system's default."""

    replicate: bool = True
    """Include the volume in storage replication jobs."""

    keep_on_recreate: bool = False
    """Hand the volume over to the CT that replaces this one in a rolling update, with its data, instead of
    destroying it with the CT. The replacement is created (stopped) on the same node, the old CT is stopped,
    Proxmox VE reassigns the volume (``move_volume`` with ``target-vmid``), the replacement starts and the old
    CT is destroyed. Needs updateStrategy RollingUpdate with maxSurge >= 1 and maxUnavailable >= 1, and a
    storage that can rename volumes (not iSCSI). Scale-down and deleting the policy still destroy it. Changing
    this field alone recreates no CT."""

    @field_validator("path")
    @classmethod
    def _no_parent_steps(cls, path: str) -> str:
        _MOUNT_PATH_PLAIN.require("/../" not in path + "/" and "//" not in path, f"got {path!r}")
        return path


class NetworkInterface(ApiModel):
    """A network interface of the CT (net0, net1, ... in list order)."""

    model_config = ConfigDict(
        json_schema_extra=kube_schema(
            _GATEWAY_NEEDS_STATIC_IP, _GATEWAY_NOT_OWN_OR_NETWORK_ADDRESS, _GATEWAY6_NEEDS_STATIC_IP6
        )
    )

    name: str = Field(min_length=1, max_length=15, pattern=INTERFACE_NAME)
    """Interface name inside the CT, e.g. eth0."""

    bridge: str = Field(min_length=1, max_length=15, pattern=INTERFACE_NAME)
    """Bridge on the node the interface is attached to, e.g. vmbr0."""

    ip: str = Field("dhcp", max_length=18, json_schema_extra=kube_schema(_IP_CONFIG_SYNTAX))
    """IPv4 configuration: dhcp, manual, or address/prefix like 192.168.1.10/24. A static address only
    suits policies of one replica, since every CT would get the same address."""

    gateway: str | None = Field(None, max_length=15, json_schema_extra=kube_schema(_GATEWAY_SYNTAX))
    """IPv4 default gateway, only with a static ip."""

    vlan: int | None = Field(None, ge=1, le=4094)
    """VLAN tag of the interface (802.1Q) on a VLAN-aware bridge."""

    firewall: bool = False
    """Apply the Proxmox VE firewall rules of the CT to this interface."""

    ip6: str | None = Field(None, max_length=43, json_schema_extra=kube_schema(_IP6_CONFIG_SYNTAX))
    """IPv6 configuration: dhcp, auto (SLAAC), manual, or address/prefix like 2001:db8::10/64. Absent: no
    IPv6 configuration (what the template's OS does by default)."""

    gateway6: str | None = Field(None, max_length=39, json_schema_extra=kube_schema(_GATEWAY6_SYNTAX))
    """IPv6 default gateway, only with a static ip6."""

    mtu: int | None = Field(None, ge=64, le=65535)
    """MTU of the interface (Proxmox VE: 64 to 65535; absent: the bridge's)."""

    rate_mbps: float | None = Field(None, alias="rateMBps", ge=0, le=1_000_000)
    """Rate limit of the interface in megabytes per second (Proxmox VE's ``rate``); absent: unlimited."""

    stable_mac: bool = False
    """Give the interface a MAC address derived from the policy and the CT's index (locally administered,
    02:...), so a CT recreated by a rolling update or a replacement keeps its MAC (and its DHCP lease or
    reservation). Absent/false: Proxmox VE picks a random one at create."""

    @field_validator("ip6")
    @classmethod
    def _ip6_syntax(cls, ip6: str | None) -> str | None:
        if ip6 is not None and ip6 not in ("dhcp", "auto", "manual"):
            try:
                valid = IPv6Interface(ip6).ip.version == 6 and "/" in ip6
            except ValueError:
                valid = False
            _IP6_CONFIG_SYNTAX.require(valid, f"got {ip6!r}")
        return ip6

    @field_validator("gateway6")
    @classmethod
    def _gateway6_syntax(cls, gateway6: str | None) -> str | None:
        if gateway6 is not None:
            try:
                IPv6Address(gateway6)
            except ValueError:
                _GATEWAY6_SYNTAX.require(False, f"got {gateway6!r}")
        return gateway6

    @field_validator("ip")
    @classmethod
    def _ip_syntax(cls, ip: str) -> str:
        _IP_CONFIG_SYNTAX.require(full_match(IP_CONFIG, ip), f"got {ip!r}")
        return ip

    @field_validator("gateway")
    @classmethod
    def _gateway_syntax(cls, gateway: str | None) -> str | None:
        if gateway is not None:
            _GATEWAY_SYNTAX.require(full_match(IPV4_ADDRESS, gateway), f"got {gateway!r}")
        return gateway

    @model_validator(mode="after")
    def _gateway_with_static_ip(self) -> Self:
        _GATEWAY_NEEDS_STATIC_IP.require(self.gateway is None or self.ip != "dhcp")
        _GATEWAY6_NEEDS_STATIC_IP6.require(
            self.gateway6 is None or (self.ip6 is not None and self.ip6 not in ("dhcp", "auto", "manual"))
        )
        interface, gateway = self.static_interface, self.gateway_address
        if interface is not None and gateway is not None:
            network = interface.network
            _GATEWAY_NOT_OWN_OR_NETWORK_ADDRESS.require(
                gateway != interface.ip and (network.prefixlen >= 31 or gateway != network.network_address),
                f"ip {self.ip}, gateway {self.gateway}",
            )
        return self

    @property
    def static_interface(self) -> IPv4Interface | None:
        """The static address with its subnet (``10.0.0.5/24``), or None for dhcp and manual."""
        return IPv4Interface(self.ip) if self.ip not in ("dhcp", "manual") else None

    @property
    def gateway_address(self) -> IPv4Address | None:
        """The gateway as an address, or None when there is none."""
        return IPv4Address(self.gateway) if self.gateway is not None else None

    def gateway_outside_subnet(self) -> bool:
        """Whether a static ip's gateway lies outside its subnet (``10.0.0.5/24`` with ``10.1.0.1``).

        Not an error: Proxmox VE then adds an on-link host route to the gateway inside the CT, which is how
        routed setups (a /32 failover address, a subnet routed via the host) reach their gateway. But it is
        also what a typo looks like, so ``ContainerPolicySpec.warnings`` mentions it.
        """
        interface, gateway = self.static_interface, self.gateway_address
        return interface is not None and gateway is not None and gateway not in interface.network


class Features(ApiModel):
    """Optional LXC features of the CT."""

    nesting: bool = False
    """Allow nested namespaces (needed by systemd's sandboxing and by containers inside the CT). Best with
    unprivileged CTs."""

    keyctl: bool = False
    """Allow the keyctl() system call (unprivileged CTs only; Docker inside a CT needs it). Needs root@pam."""

    fuse: bool = False
    """Allow FUSE file systems inside the CT. Needs root@pam."""

    mknod: bool = False
    """Allow mknod() of some device nodes (Proxmox VE calls it experimental). Needs root@pam."""

    mount: tuple[Annotated[str, Field(min_length=1, max_length=32, pattern=FS_TYPE)], ...] = Field(
        (), max_length=8, json_schema_extra=kube_schema(list_type="set")
    )
    """File system types the CT may mount, e.g. [nfs, cifs]. Needs root@pam."""

    @property
    def root_only(self) -> tuple[str, ...]:
        """The features set here that only root@pam may set (every one but nesting)."""
        return tuple(name for name in ("keyctl", "fuse", "mknod") if getattr(self, name)) + (
            ("mount",) if self.mount else ()
        )

    @property
    def enabled(self) -> tuple[str, ...]:
        """Every feature set here (nesting included), in Proxmox VE's order."""
        return (("nesting",) if self.nesting else ()) + self.root_only


class StartupOrder(ApiModel):
    """When the CT starts and stops relative to the node's other guests (Proxmox VE's ``startup``)."""

    order: int | None = Field(None, ge=0, le=1_000_000)
    """Start order: lower starts first, stops last; absent: after the ordered ones."""

    up_seconds: int | None = Field(None, alias="upSeconds", ge=0, le=86_400)
    """Seconds to wait after starting this CT before starting the next guest."""

    down_seconds: int | None = Field(None, alias="downSeconds", ge=0, le=86_400)
    """Seconds to wait for this CT to shut down before stopping it."""


class DataKeyReference(ApiModel):
    """One key of a Secret's or ConfigMap's data in the policy's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the object."""

    key: str = Field(min_length=1, max_length=253, pattern=CONFIG_KEY)
    """Key within its data."""


_ONE_KEY_SOURCE = CelRule(
    rule="has(self.secretKeyRef) != has(self.configMapKeyRef)",
    message="exactly one of secretKeyRef and configMapKeyRef must be set",
)


class SshPublicKeysSource(ApiModel):
    """A Secret or ConfigMap key holding OpenSSH public keys, one per line (authorized_keys format; empty
    lines and # comments are skipped)."""

    model_config = ConfigDict(json_schema_extra=kube_schema(_ONE_KEY_SOURCE))

    secret_key_ref: DataKeyReference | None = None
    """A key of a Secret."""

    config_map_key_ref: DataKeyReference | None = None
    """A key of a ConfigMap."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        _ONE_KEY_SOURCE.require((self.secret_key_ref is None) != (self.config_map_key_ref is None))
        return self

    @property
    def reference(self) -> tuple[str, DataKeyReference]:
        """``("Secret" | "ConfigMap", reference)``."""
        if self.secret_key_ref is not None:
            return "Secret", self.secret_key_ref
        assert self.config_map_key_ref is not None
        return "ConfigMap", self.config_map_key_ref


class SecretKeyReference(ApiModel):
    """One key of a Secret in the policy's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the Secret."""

    key: str = Field("password", min_length=1, max_length=253, pattern=CONFIG_KEY)
    """Key within the Secret's data."""


Tag = Annotated[str, Field(min_length=1, max_length=63, pattern=TAG)]


def _ostemplate_problem(ostemplate: str) -> str:
    """What is wrong with an ostemplate the pattern refuses, for the model's message."""
    _, _, volume = ostemplate.partition(":")
    if ".." in volume or "%" in volume or volume.count("/") > 1 or "\\" in volume:
        return f"got {ostemplate!r}: a path, a '..' or a %-escape is not a template file name"
    return f"got {ostemplate!r}"


class Architecture(StrEnum):
    """CT architectures Proxmox VE knows (pve-container ``arch``)."""

    AMD64 = "amd64"
    I386 = "i386"
    ARM64 = "arm64"
    ARMHF = "armhf"
    RISCV32 = "riscv32"
    RISCV64 = "riscv64"


class OsType(StrEnum):
    """OS types of pve-container's ``ostype`` (the setup plugin that configures the CT)."""

    DEBIAN = "debian"
    DEVUAN = "devuan"
    UBUNTU = "ubuntu"
    CENTOS = "centos"
    FEDORA = "fedora"
    OPENSUSE = "opensuse"
    ARCHLINUX = "archlinux"
    ALPINE = "alpine"
    GENTOO = "gentoo"
    NIXOS = "nixos"
    UNMANAGED = "unmanaged"


class UpdateClass(StrEnum):
    """How a change of a ``spec.template`` field reaches CTs that already exist (issue 11 §2)."""

    HOT = "Hot"
    """Applied in place to running CTs at once (Proxmox VE's fast-plug and hot-plug options)."""

    RESTART = "Restart"
    """Written in place; Proxmox VE applies it at the CT's next start (a pending change)."""

    RECREATE = "Recreate"
    """Only a new CT has it (the template, the root volume, privileges): existing CTs are outdated."""

    CREATE_ONLY = "CreateOnly"
    """Used once, inside the new CT (keys, password) or by the operator at create: existing CTs keep what
    they got; change it inside the CT."""


_ONE_CLONE_SOURCE = CelRule(
    rule="has(self.fromVmid) != has(self.fromName)",
    message="exactly one of clone.fromVmid and clone.fromName must be set",
)
_CLONE_STORAGE_NEEDS_FULL = CelRule(
    rule="!has(self.storage) || self.full",
    message="clone.storage is only allowed with clone.full: true (a linked clone stays on its template's storage)",
    field_path=".storage",
)


class CloneSource(ApiModel):
    """A template CT of the cluster to clone each new CT from (``POST /nodes/{node}/lxc/{vmid}/clone``)."""

    model_config = ConfigDict(json_schema_extra=kube_schema(_ONE_CLONE_SOURCE, _CLONE_STORAGE_NEEDS_FULL))

    from_vmid: int | None = Field(None, ge=MIN_VMID, le=MAX_VMID)
    """VMID of the template CT."""

    from_name: str | None = Field(None, min_length=1, max_length=255, pattern=PVE_DNS_NAME)
    """Host name of the template CT (exactly one template CT must have it)."""

    full: bool = False
    """Full clone (an independent copy of the volumes, takes as long as copying them) instead of a linked clone
    (seconds; the storage must support it: lvmthin, zfspool, rbd, btrfs)."""

    storage: str | None = Field(None, min_length=2, max_length=100, pattern=STORAGE_ID)
    """Full clones only: the storage for the new CT's volumes (absent: the template's)."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _ONE_CLONE_SOURCE.require((self.from_vmid is None) != (self.from_name is None))
        _CLONE_STORAGE_NEEDS_FULL.require(self.storage is None or self.full)
        return self


_ONE_SOURCE = CelRule(
    rule="has(self.ostemplate) != has(self.clone)",
    message="exactly one of ostemplate and clone must be set",
)
_CLONE_HAS_NO_CREATE_ONLY_SETTINGS = CelRule(
    rule="!has(self.clone) || (size(self.sshPublicKeys) == 0 && size(self.sshPublicKeysFrom) == 0"
    " && !has(self.rootPasswordSecretRef))",
    message="sshPublicKeys, sshPublicKeysFrom and rootPasswordSecretRef are set while Proxmox VE creates a CT from "
    "an ostemplate; a clone has its template's keys and password",
)


class ContainerTemplate(ApiModel):
    """What each CT of the policy looks like."""

    model_config = ConfigDict(
        json_schema_extra=kube_schema(_KEYCTL_NEEDS_UNPRIVILEGED, _ONE_SOURCE, _CLONE_HAS_NO_CREATE_ONLY_SETTINGS)
    )

    ostemplate: str | None = Field(None, max_length=255, json_schema_extra=kube_schema(_OSTEMPLATE_SYNTAX))
    """Container template volume ID, e.g. local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst (it must be
    readable from every node of the pool). Exactly one of ostemplate and clone."""

    clone: CloneSource | None = None
    """Clone each CT from a template CT instead (seconds per CT with a linked clone). When every volume of the
    template is on shared storage (Ceph RBD, NFS, ...) the CTs are placed on any node (PVE's clone target);
    otherwise on the template's node only (PVE cannot clone a CT on local storage onto another node). The
    template's root volume and unprivileged setting are kept, the other settings here are applied to the clone."""

    memory_mib: int = Field(512, alias="memoryMiB", ge=16, le=4194304)
    """Memory of the CT in MiB."""

    swap_mib: int = Field(512, alias="swapMiB", ge=0, le=4194304)
    """Swap of the CT in MiB."""

    cores: int = Field(1, ge=1, le=8192)
    """CPU cores the CT may use."""

    rootfs: RootFS
    """The root file system volume."""

    networks: tuple[NetworkInterface, ...] = Field(
        (), max_length=10, json_schema_extra=kube_schema(list_map_keys=("name",))
    )
    """Network interfaces, net0 first. Names must be unique."""

    unprivileged: bool = True
    """Run the CT unprivileged (its root is not the host's root). Privileged CTs need Sys.Modify on /."""

    features: Features = Field(default_factory=Features)
    """Optional LXC features."""

    tags: tuple[Tag, ...] = Field((), max_length=16, json_schema_extra=kube_schema(list_type="set"))
    """Proxmox VE tags for the CT, shown in the Proxmox VE UI (the operator adds its own ownership tag)."""

    start_on_create: bool = True
    """Start the CT once it is created (false leaves new CTs stopped)."""

    ssh_public_keys: tuple[Annotated[str, Field(min_length=16, max_length=16384, pattern=SSH_PUBLIC_KEY)], ...] = Field(
        (), max_length=32
    )
    """OpenSSH public keys put into root's authorized_keys when a CT is created (ssh-ed25519 AAAA... user@host)."""

    ssh_public_keys_from: tuple[SshPublicKeysSource, ...] = Field((), max_length=8)
    """More keys from Secret or ConfigMap keys (one per line), read when a CT is created and added to
    sshPublicKeys: a team's key list kept in one place. A line that is not an OpenSSH public key stops
    the creation with a message naming the object, the key and the line."""

    root_password_secret_ref: SecretKeyReference | None = None
    """A Secret key holding root's password, set when a CT is created (at least 5 characters). The value is
    never logged, posted or written to status."""

    nameservers: tuple[Annotated[str, Field(max_length=45, json_schema_extra=kube_schema(_NAMESERVER_SYNTAX))], ...] = (
        Field((), max_length=3)
    )
    """DNS servers of the CT (IPv4 or IPv6); absent: the node's."""

    search_domain: str | None = Field(None, max_length=255, pattern=PVE_DNS_NAME)
    """DNS search domain of the CT, e.g. lab.example; absent: the node's."""

    on_boot: bool = False
    """Start the CT when its node boots."""

    startup: StartupOrder | None = None
    """Start/stop order and delays at node boot and shutdown."""

    protection: bool = False
    """Proxmox VE's protection flag: the CT cannot be removed by hand, nor its disks. The operator clears it
    itself right before it destroys a CT it owns (scale-down, policy deletion)."""

    cpu_limit: float | None = Field(None, ge=0, le=8192)
    """CPU time limit in cores (0.5 = half a core); absent or 0: unlimited."""

    cpu_units: int | None = Field(None, ge=0, le=500_000)
    """CPU weight against the node's other guests (cgroup v2: 1 to 10000, default 100)."""

    timezone: str | None = Field(None, max_length=64, pattern=TIMEZONE)
    """Time zone of the CT: host, or an IANA name such as Europe/Berlin; absent: the template's."""

    description: str = Field("", max_length=4096, json_schema_extra=kube_schema(_DESCRIPTION_HAS_NO_RECORD))
    """Notes of your own for every CT, shown in the Proxmox VE UI above the operator's ownership record."""

    mount_points: tuple[MountPoint, ...] = Field((), max_length=32)
    """Storage-backed volumes mounted into each CT (mp0, mp1, ... in list order); created with the CT and
    destroyed with it: a rolling update gives the new CT new, empty volumes, except those with
    keepOnRecreate, which are handed over to the replacement with their data."""

    arch: Architecture | None = None
    """CT architecture when the template does not say (amd64, i386, arm64, armhf, riscv32, riscv64)."""

    ostype: OsType | None = None
    """OS type when the template does not say (debian, ubuntu, alpine, ..., unmanaged): how Proxmox VE
    sets up the network and host name inside the CT."""

    hookscript: str | None = Field(None, max_length=255, pattern=SNIPPET_VOLUME)
    """A hook script Proxmox VE runs at each start and stop phase of the CT, e.g. local:snippets/hook.sh
    (the storage needs the snippets content type)."""

    @field_validator("nameservers")
    @classmethod
    def _nameserver_syntax(cls, nameservers: tuple[str, ...]) -> tuple[str, ...]:
        for server in nameservers:
            try:
                ip_address(server)
            except ValueError:
                _NAMESERVER_SYNTAX.require(False, f"got {server!r}")
        return nameservers

    @field_validator("description")
    @classmethod
    def _description_without_record(cls, description: str) -> str:
        _DESCRIPTION_HAS_NO_RECORD.require(
            not any(line.startswith("pve-operator:") for line in description.splitlines())
        )
        return description

    @model_validator(mode="after")
    def _keyctl_needs_unprivileged(self) -> Self:
        _KEYCTL_NEEDS_UNPRIVILEGED.require(not self.features.keyctl or self.unprivileged)
        return self

    @field_validator("ostemplate")
    @classmethod
    def _ostemplate_syntax(cls, ostemplate: str | None) -> str | None:
        if ostemplate is not None:
            _OSTEMPLATE_SYNTAX.require(full_match(OSTEMPLATE, ostemplate), _ostemplate_problem(ostemplate))
        return ostemplate

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        _ONE_SOURCE.require((self.ostemplate is None) != (self.clone is None))
        _CLONE_HAS_NO_CREATE_ONLY_SETTINGS.require(
            self.clone is None
            or (not self.ssh_public_keys and not self.ssh_public_keys_from and self.root_password_secret_ref is None)
        )
        return self

    @field_validator("networks")
    @classmethod
    def _unique_interfaces(cls, networks: tuple[NetworkInterface, ...]) -> tuple[NetworkInterface, ...]:
        names = [network.name for network in networks]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"network names must be unique: {', '.join(duplicates)} appear more than once")
        return networks

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({tag for tag in tags if tags.count(tag) > 1})
        if duplicates:
            raise ValueError(f"tags must be unique: {', '.join(duplicates)} appear more than once")
        return tags


TEMPLATE_UPDATE_CLASSES: dict[str, UpdateClass] = {
    # pve-container src/PVE/LXC/Config.pm: $LXC_FASTPLUG_OPTIONS (description, onboot, startup,
    # protection, cores, tags, ...) and vmconfig_hotplug_pending's cgroup options (memory, swap,
    # cpulimit, cpuunits) take effect on a running CT; net[n] is hot-plugged; the rest is pending.
    "ostemplate": UpdateClass.RECREATE,
    "clone": UpdateClass.RECREATE,
    "memory_mib": UpdateClass.HOT,
    "swap_mib": UpdateClass.HOT,
    "cores": UpdateClass.HOT,
    "rootfs": UpdateClass.RECREATE,
    "networks": UpdateClass.HOT,
    "unprivileged": UpdateClass.RECREATE,
    "features": UpdateClass.RESTART,
    "tags": UpdateClass.HOT,
    "start_on_create": UpdateClass.CREATE_ONLY,
    "ssh_public_keys": UpdateClass.CREATE_ONLY,
    "ssh_public_keys_from": UpdateClass.CREATE_ONLY,
    "root_password_secret_ref": UpdateClass.CREATE_ONLY,
    "nameservers": UpdateClass.RESTART,
    "search_domain": UpdateClass.RESTART,
    "on_boot": UpdateClass.HOT,
    "startup": UpdateClass.HOT,
    "protection": UpdateClass.HOT,
    "cpu_limit": UpdateClass.HOT,
    "cpu_units": UpdateClass.HOT,
    "timezone": UpdateClass.RESTART,
    "description": UpdateClass.HOT,
    # Storage-backed volumes are allocated at create; arch and ostype decide how the CT was set up.
    "mount_points": UpdateClass.RECREATE,
    "arch": UpdateClass.RECREATE,
    "ostype": UpdateClass.RECREATE,
    # Run at the CT's start and stop phases: a change takes effect at the next start.
    "hookscript": UpdateClass.RESTART,
}
"""Every ``spec.template`` field's :class:`UpdateClass` (a unit test fails when a field has none)."""


def template_hash(template: ContainerTemplate) -> str:
    """12 hex digits of SHA-256 over the template's Recreate-class fields (as the CRD writes them): two
    templates with the same hash make the same CT as far as only a new CT can show. Stored (signed) in
    each CT's ownership record at create; a rolling update recreates the CTs whose hash differs (a mount point's
    keepOnRecreate is not part of it: it says what happens to the volume, not what the CT is). Values at
    their defaults are left out, so a field a later version adds (with a default) does not change every
    CT's hash and recreate the fleet on upgrade."""
    wire = template.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for mount_point in wire.get("mountPoints", ()):
        mount_point.pop("keepOnRecreate", None)  # how a volume outlives its CT, not what the CT is made of
    fields = {
        name: wire.get(ContainerTemplate.model_fields[name].alias or name)
        for name, kind in sorted(TEMPLATE_UPDATE_CLASSES.items())
        if kind is UpdateClass.RECREATE
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


class VmidRange(ApiModel):
    """The VMIDs the policy's CTs may use, both ends included. CT number index has VMID start + index.

    Only CTs inside the range that carry the operator's ownership marks are treated as the policy's;
    any other guest in the range is left alone and its VMID skipped.
    """

    model_config = ConfigDict(json_schema_extra=kube_schema(_VMID_RANGE_ORDERED))

    start: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """First VMID of the range (100..999999999)."""

    end: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """Last VMID of the range (100..999999999), at least start."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _VMID_RANGE_ORDERED.require(self.start <= self.end, f"{self.start} > {self.end}")
        return self

    @property
    def size(self) -> int:
        """Number of VMIDs in the range."""
        return self.end - self.start + 1

    def as_range(self) -> range:
        """The VMIDs as a Python range (end included)."""
        return range(self.start, self.end + 1)

    def __contains__(self, vmid: object) -> bool:
        return isinstance(vmid, int) and self.start <= vmid <= self.end


class NodeWeightOverride(ApiModel):
    """This policy's own placement weight for one node of the pool."""

    name: PveNodeName
    """Node name, one of the pool's nodes."""

    weight: int = Field(ge=0, le=1000)
    """Placement weight for this policy's CTs on the node; 0 places none of them there."""


class WhenUnsatisfiable(StrEnum):
    """What a topology spread constraint does when no node satisfies it (Kubernetes' names)."""

    DO_NOT_SCHEDULE = "DoNotSchedule"
    """Hard: no CT is created or moved where it would break the constraint; a CT that fits nowhere waits."""
    SCHEDULE_ANYWAY = "ScheduleAnyway"
    """Soft: nodes that keep the skew lower are preferred."""


class TopologySpreadConstraint(ApiModel):
    """Keep the policy's CTs spread over the domains of one node label (Kubernetes' pod topology spread)."""

    topology_key: LabelKey
    """Node label whose values are the domains: kubernetes.io/hostname (every node its own domain, implicit)
    or a label of the pool's nodes (spec.nodes[].labels), e.g. topology.pve/rack."""

    max_skew: int = Field(ge=1, le=1000)
    """How far the number of the policy's CTs may differ between two domains."""

    when_unsatisfiable: WhenUnsatisfiable
    """DoNotSchedule (hard) or ScheduleAnyway (a preference)."""


class NodeSelectorOperator(StrEnum):
    """Operator of a node selector requirement (Kubernetes' names and semantics)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


_VALUES_FOR_IN = CelRule(
    rule="!(self.operator in ['In', 'NotIn']) || size(self.values) > 0",
    message="values must not be empty when operator is In or NotIn",
    field_path=".values",
)
_NO_VALUES_FOR_EXISTS = CelRule(
    rule="!(self.operator in ['Exists', 'DoesNotExist']) || size(self.values) == 0",
    message="values must be empty when operator is Exists or DoesNotExist",
    field_path=".values",
)
_ONE_INTEGER_FOR_GT = CelRule(
    rule="!(self.operator in ['Gt', 'Lt']) || (size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
    message="values must be exactly one integer when operator is Gt or Lt",
    field_path=".values",
)


class NodeSelectorRequirement(ApiModel):
    """One condition on a node's labels."""

    model_config = ConfigDict(json_schema_extra=kube_schema(_VALUES_FOR_IN, _NO_VALUES_FOR_EXISTS, _ONE_INTEGER_FOR_GT))

    key: LabelKey
    """The label key, e.g. topology.pve/rack or kubernetes.io/hostname."""

    operator: NodeSelectorOperator
    """In, NotIn, Exists, DoesNotExist, Gt or Lt."""

    values: tuple[Annotated[str, Field(max_length=63)], ...] = Field((), max_length=64)
    """Values for In/NotIn (at least one), one integer for Gt/Lt, none for Exists/DoesNotExist."""

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Self:
        op = self.operator
        if op in (NodeSelectorOperator.IN, NodeSelectorOperator.NOT_IN):
            _VALUES_FOR_IN.require(bool(self.values), f"key {self.key}")
        elif op in (NodeSelectorOperator.EXISTS, NodeSelectorOperator.DOES_NOT_EXIST):
            _NO_VALUES_FOR_EXISTS.require(not self.values, f"key {self.key}")
        else:
            _ONE_INTEGER_FOR_GT.require(
                len(self.values) == 1 and full_match("^-?[0-9]+$", self.values[0]), f"key {self.key}"
            )
        return self


class NodeSelectorTerm(ApiModel):
    """Conditions that must all hold for a node to match."""

    match_expressions: tuple[NodeSelectorRequirement, ...] = Field(min_length=1, max_length=16)
    """The conditions (all must hold)."""


class RequiredNodeAffinity(ApiModel):
    """Nodes the policy's CTs may be created on and moved to."""

    node_selector_terms: tuple[NodeSelectorTerm, ...] = Field(min_length=1, max_length=16)
    """A node must match at least one term."""


class PreferredNodeAffinity(ApiModel):
    """A preference for nodes matching a term."""

    weight: int = Field(ge=1, le=100)
    """How much matching counts (1-100), summed over the preferences a node matches."""

    preference: NodeSelectorTerm
    """The term a preferred node matches."""


class NodeAffinity(ApiModel):
    """Which nodes the policy's CTs may go to, and which they prefer (Kubernetes' node affinity: the
    rules decide where CTs are created and moved; a CT is not moved because its node stops matching)."""

    required: RequiredNodeAffinity | None = Field(None, alias="requiredDuringSchedulingIgnoredDuringExecution")
    """Nodes outside these terms never receive the policy's CTs."""

    preferred: tuple[PreferredNodeAffinity, ...] = Field(
        (), alias="preferredDuringSchedulingIgnoredDuringExecution", max_length=16
    )
    """Preferred nodes: among the nodes the other rules allow, the highest summed weight wins."""


_UNIQUE_SPREAD = CelRule(
    rule="self.all(c, self.exists_one(d, d.topologyKey == c.topologyKey"
    " && d.whenUnsatisfiable == c.whenUnsatisfiable))",
    message="topologySpreadConstraints must not repeat a pair of topologyKey and whenUnsatisfiable",
)


class PlacementSpec(ApiModel):
    """How the policy's CTs are spread over the pool's nodes."""

    strategy: PlacementStrategy = PlacementStrategy.WEIGHTED_SPREAD
    """WeightedSpread (deterministic: the node furthest below its weighted share) or WeightedRandom."""

    node_weights: tuple[NodeWeightOverride, ...] = Field(
        (), max_length=64, json_schema_extra=kube_schema(list_map_keys=("name",))
    )
    """Per-node weights for this policy instead of the pool's; nodes not listed keep the pool's weight."""

    topology_spread_constraints: tuple[TopologySpreadConstraint, ...] = Field(
        (), max_length=8, json_schema_extra=kube_schema(_UNIQUE_SPREAD)
    )
    """Keep the CTs spread over node label domains (Kubernetes semantics): creation, scale-down (from the
    most crowded domain first), restores and every balancing move honour them; balancing repairs a
    DoNotSchedule constraint left over-skewed (e.g. by a node failure) when room allows."""

    node_affinity: NodeAffinity | None = None
    """Nodes the CTs may go to (required) and prefer (preferred), by the pool's node labels."""

    def effective_node_weights(self, pool: ProxmoxServerPoolSpec) -> dict[str, int]:
        """Placement weight of every pool node for the policy, in the pool's node order.

        A node in maintenance weighs 0 whatever its weight; otherwise the policy's override wins over
        the pool's weight. Overrides for nodes outside the pool are ignored (see
        ``ContainerPolicySpec.unknown_weight_overrides``).
        """
        overrides = {override.name: override.weight for override in self.node_weights}
        return {node.name: 0 if node.maintenance else overrides.get(node.name, node.weight) for node in pool.nodes}

    @field_validator("topology_spread_constraints")
    @classmethod
    def _unique_spread(cls, constraints: tuple[TopologySpreadConstraint, ...]) -> tuple[TopologySpreadConstraint, ...]:
        pairs = [(c.topology_key, c.when_unsatisfiable) for c in constraints]
        _UNIQUE_SPREAD.require(len(set(pairs)) == len(pairs))
        return constraints


class UpdateStrategyType(StrEnum):
    """How template changes that only a new CT can have reach the existing CTs (Kubernetes' names)."""

    ROLLING_UPDATE = "RollingUpdate"
    """Replace outdated CTs a few at a time: destroy and recreate within maxUnavailable (each keeps its index,
    VMID and host name), or first create maxSurge new CTs and destroy an outdated one once they run."""
    ON_DELETE = "OnDelete"
    """Leave outdated CTs; a CT deleted by hand comes back with the new template."""


_SURGE_OR_UNAVAILABLE = CelRule(
    rule="(has(self.maxUnavailable) ? self.maxUnavailable : 1) + (has(self.maxSurge) ? self.maxSurge : 0) >= 1",
    message="maxUnavailable and maxSurge must not both be 0: the rollout could never replace a CT",
)


class UpdateStrategy(ApiModel):
    """How a change of a Recreate-class template field (ostemplate, rootfs, unprivileged) is rolled out."""

    model_config = ConfigDict(json_schema_extra=kube_schema(_SURGE_OR_UNAVAILABLE))

    type: UpdateStrategyType = UpdateStrategyType.ROLLING_UPDATE
    """RollingUpdate (default) or OnDelete."""

    max_unavailable: int = Field(1, ge=0, le=MAX_REPLICAS)
    """RollingUpdate: most CTs missing or not running at once, counting the ones being recreated (a CT is
    destroyed only while fewer are unavailable); each comes back at the next cycles with its index. 0 needs
    maxSurge: no CT is destroyed before its replacement runs."""

    max_surge: int = Field(0, ge=0, le=MAX_REPLICAS)
    """RollingUpdate: most CTs created above replicas during a rollout. A surge CT (new template, the lowest
    free index, so VMIDs and host names move between indices) is created and running before an outdated CT
    is destroyed. Needs replicas (not fill) and replicas + maxSurge VMIDs in vmidRange. 0 (default): CTs are
    recreated in place and keep their index, VMID and host name."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        _SURGE_OR_UNAVAILABLE.require(self.max_unavailable + self.max_surge >= 1)
        return self


class HaState(StrEnum):
    """The state the operator registers its CTs with in Proxmox VE's HA stack."""

    STARTED = "started"
    """PVE's HA manager keeps the CTs running and recovers them onto another node when theirs fails."""
    IGNORED = "ignored"
    """Registered (rules apply when it is set back to started) but the HA manager leaves the CTs alone."""


class HaSpec(ApiModel):
    """Register the policy's CTs with Proxmox VE's HA stack (PVE 9 HA resources and rules)."""

    enabled: bool = True
    """Register (true) or take back what the operator registered (false, like removing spec.ha)."""

    state: HaState = HaState.STARTED
    """started: PVE keeps them running and recovers them when a node fails; ignored: registered only."""

    max_restart: int = Field(1, ge=0, le=10)
    """Restarts on the same node after a failed start, before relocating (PVE's max_restart)."""

    max_relocate: int = Field(1, ge=0, le=10)
    """Relocations to another node after failed starts (PVE's max_relocate)."""


class ContainerPolicySpec(ApiModel):
    """A set of CTs the operator creates, keeps running and spreads over a ProxmoxServerPool."""

    model_config = ConfigDict(
        json_schema_extra=kube_schema(
            _EXACTLY_ONE_SIZE,
            _RANGE_HOLDS_REPLICAS,
            _RANGE_HOLDS_FILL,
            _RANGE_HOLDS_SURGE,
            _SURGE_NEEDS_REPLICAS,
            _KEPT_VOLUMES_NEED_HANDOVER,
        )
    )

    pool_ref: LocalObjectReference = Field(
        json_schema_extra=kube_schema(immutable("poolRef", "create a new ContainerPolicy to use another pool"))
    )
    """The ProxmoxServerPool (same namespace) the CTs run on. Immutable."""

    replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS)
    """Number of CTs to keep. Exactly one of replicas and fill must be set. kubectl scale changes it."""

    fill: FillSpec | None = None
    """Generator mode instead of replicas: keep adding CTs while the pool's usage stays below
    fill.untilPercent, up to fill.maxReplicas."""

    vmid_range: VmidRange = Field(
        json_schema_extra=kube_schema(immutable("vmidRange", "create a new ContainerPolicy to use another range"))
    )
    """VMIDs of the CTs (CT number index gets start + index). Immutable; must not overlap other policies'."""

    # 265 = a 255-character name whose one-digit index is written as the longest field, {index:09d}.
    hostname_pattern: str = Field(max_length=265, json_schema_extra=kube_schema(_HOSTNAME_PATTERN_SYNTAX))
    """Host name of CT number index (0-based, VMID start + index) in Python format syntax with one field
    {index}, e.g. ct-web-{index:02d} gives ct-web-00, ct-web-01, ... Every rendered name must be a host
    name Proxmox VE accepts (format dns-name): labels of letters of either case, digits and '-' (not at
    either end), joined by '.', at most 255 characters, e.g. ct-tpgei-virt-C1-ct{index:02d} or
    web-{index}.example.org."""

    template: ContainerTemplate
    """What each CT looks like."""

    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    """How CTs are spread over the pool's nodes."""

    priority: int = Field(100, ge=0, le=1000)
    """Offload order under pressure: CTs of lower priority are stopped first (the oldest first among equals)
    and started again last."""

    deletion_policy: DeletionPolicy = DeletionPolicy.DELETE
    """What happens to the CTs when this policy is deleted: Delete destroys them, Retain leaves them."""

    update_strategy: UpdateStrategy = Field(default_factory=UpdateStrategy)
    """How CTs get template changes only a new CT can have (ostemplate, rootfs, unprivileged): RollingUpdate
    replaces outdated CTs maxUnavailable at a time, or creates maxSurge new ones first (their disks are new:
    keep data elsewhere), OnDelete
    leaves them until they are deleted. Hot settings are applied in place whatever the strategy."""

    ha: HaSpec | None = None
    """Register the CTs as Proxmox VE HA resources and express the placement as PVE 9 HA rules (a node
    affinity rule over the nodes the policy may use, strict when placement.nodeAffinity has required terms;
    negative resource affinity rules for a kubernetes.io/hostname spread), so that PVE keeps the CTs
    running and apart when a node fails, even while the operator is not running. PVE's HA manager then
    places these CTs: the operator offloads and restores them but no longer migrates them. Removing ha
    (or enabled: false) removes what the operator added, nothing else. Needs Sys.Console on /."""

    paused: bool = False
    """Stop changing this policy's CTs (no create, delete, start, stop, migrate or offload) while keeping
    status up to date."""

    @field_validator("hostname_pattern")
    @classmethod
    def _hostname_pattern_syntax(cls, pattern: str) -> str:
        _HOSTNAME_PATTERN_SYNTAX.require(full_match(HOSTNAME_PATTERN, pattern), f"got {pattern!r}")
        return pattern

    @model_validator(mode="after")
    def _check(self) -> Self:
        _EXACTLY_ONE_SIZE.require((self.replicas is None) != (self.fill is None))
        if self.replicas is not None:
            _RANGE_HOLDS_REPLICAS.require(
                self.replicas <= self.vmid_range.size,
                f"replicas {self.replicas}, vmidRange holds {self.vmid_range.size}",
            )
            surge = self.update_strategy.max_surge
            _RANGE_HOLDS_SURGE.require(
                self.replicas + surge <= self.vmid_range.size,
                f"replicas {self.replicas} + maxSurge {surge}, vmidRange holds {self.vmid_range.size}",
            )
        if self.fill is not None:
            _SURGE_NEEDS_REPLICAS.require(self.update_strategy.max_surge == 0)
            _RANGE_HOLDS_FILL.require(
                self.fill.max_replicas <= self.vmid_range.size,
                f"fill.maxReplicas {self.fill.max_replicas}, vmidRange holds {self.vmid_range.size}",
            )
        kept = [f"mountPoints[{i}]" for i, m in enumerate(self.template.mount_points) if m.keep_on_recreate]
        if kept:
            strategy = self.update_strategy
            _KEPT_VOLUMES_NEED_HANDOVER.require(
                strategy.type is UpdateStrategyType.ROLLING_UPDATE
                and strategy.max_surge >= 1
                and strategy.max_unavailable >= 1,
                f"{', '.join(kept)} keepOnRecreate; updateStrategy {strategy.type.value} maxSurge "
                f"{strategy.max_surge} maxUnavailable {strategy.max_unavailable}",
            )
        # The API server checks the pattern's syntax; only here can every rendered name be checked.
        render_hostname(self.hostname_pattern, 0)
        render_hostname(self.hostname_pattern, self.vmid_range.size - 1)
        return self

    @property
    def max_replicas(self) -> int:
        """Most CTs the policy may hold: replicas, or fill.maxReplicas in fill mode."""
        if self.replicas is not None:
            return self.replicas
        assert self.fill is not None
        return self.fill.max_replicas

    def vmid_for_index(self, index: int) -> int:
        """VMID of CT number ``index`` (0-based). Raises ``ValueError`` outside vmidRange."""
        if not 0 <= index < self.vmid_range.size:
            first, last = self.vmid_range.start, self.vmid_range.end
            raise ValueError(f"index {index} is outside vmidRange {first}-{last}")
        return self.vmid_range.start + index

    def index_for_vmid(self, vmid: int) -> int | None:
        """CT number of a VMID, or None when the VMID is outside vmidRange."""
        return vmid - self.vmid_range.start if vmid in self.vmid_range else None

    def render_hostname(self, index: int) -> str:
        """Host name of CT number ``index`` (0-based). Raises ``ValueError`` outside vmidRange."""
        self.vmid_for_index(index)
        return render_hostname(self.hostname_pattern, index)

    def effective_node_weights(self, pool: ProxmoxServerPoolSpec) -> dict[str, int]:
        """Placement weight of every pool node for this policy (``PlacementSpec.effective_node_weights``)."""
        return self.placement.effective_node_weights(pool)

    def unknown_weight_overrides(self, pool: ProxmoxServerPoolSpec) -> tuple[str, ...]:
        """Nodes named in placement.nodeWeights that are not in the pool (worth a warning)."""
        in_pool = set(pool.node_names)
        return tuple(o.name for o in self.placement.node_weights if o.name not in in_pool)

    def warnings(self, pool: ProxmoxServerPoolSpec) -> tuple[str, ...]:
        """What is valid but probably not meant, one ``spec.<path>: <problem>`` line each (empty: nothing).

        The operator shows them in the Degraded condition (status False, reason ``SpecWarning``) and acts on
        the spec as it is: a placement.nodeWeights entry for a node the pool does not have (it is ignored),
        and a static ip whose gateway is outside its subnet (Proxmox VE routes to it on-link).
        """
        found = []
        unknown = self.unknown_weight_overrides(pool)
        if unknown:
            found.append(
                f"spec.placement.nodeWeights: {', '.join(unknown)} "
                f"{'is not a node' if len(unknown) == 1 else 'are not nodes'} of ProxmoxServerPool "
                f"{self.pool_ref.name} (nodes: {', '.join(pool.node_names)}); "
                f"{'its weight is' if len(unknown) == 1 else 'their weights are'} ignored"
            )
        for index, network in enumerate(self.template.networks):
            if network.gateway_outside_subnet():
                found.append(
                    f"spec.template.networks[{index}].gateway: {network.gateway} is outside the subnet of ip "
                    f"{network.ip}; Proxmox VE adds an on-link route to it (as routed setups want), "
                    "check that it is not a typo"
                )
        return tuple(found)


def render_hostname(pattern: str, index: int) -> str:
    """The host name ``pattern`` gives CT number ``index``: ``render_hostname("ct-web-{index:02d}", 3)``
    is ``ct-web-03``.

    Raises ``ValueError`` when the pattern is malformed or the result is not a host name Proxmox VE
    accepts (:data:`PVE_DNS_NAME`, at most 255 characters).
    """
    _HOSTNAME_PATTERN_SYNTAX.require(full_match(HOSTNAME_PATTERN, pattern), f"got {pattern!r}")
    if index < 0:
        raise ValueError(f"a CT index is never negative, got {index}")
    hostname = pattern.format(index=index)
    if len(hostname) > PVE_HOSTNAME_MAX_LENGTH or not full_match(PVE_DNS_NAME, hostname):
        raise ValueError(
            f"hostnamePattern {pattern!r} renders CT index {index} as {hostname!r}, which is not a host name "
            "Proxmox VE accepts (dns-name: labels of letters, digits and '-', not at either end, joined by "
            "'.', at most 255 characters)"
        )
    return hostname


# ---------------------------------------------------------------------------------------------
# Status


class ContainerStatus(StatusModel):
    """One CT of the policy as the operator last saw it."""

    vmid: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """VMID of the CT."""

    hostname: str = Field(max_length=PVE_HOSTNAME_MAX_LENGTH)
    """Host name of the CT."""

    node: str | None = Field(None, max_length=63)
    """Node the CT is on (absent while Missing)."""

    state: ContainerState
    """Creating, Running, Stopped, Offloaded, Migrating, Unknown (node offline) or Missing."""

    created_at: Timestamp | None = None
    """When the operator created the CT (offload stops the oldest CTs of the lowest priority first)."""

    cpu_percent: Percent | None = None
    """CPU use of the CT in percent of its node's CPU capacity (all cores), as Proxmox VE reports it."""

    memory_percent: Percent | None = None
    """Memory use of the CT in percent of its node's memory."""

    disk_percent: Percent | None = None
    """Root file system use of the CT in percent of its node's root disk."""

    template_hash: str | None = Field(None, max_length=16)
    """The template hash recorded in the CT's ownership record (absent: not known yet)."""

    outdated: bool | None = None
    """True when the CT was created with another template than the policy's (status.templateHash):
    updateStrategy RollingUpdate recreates it, OnDelete leaves it until it is deleted; absent otherwise."""


class NodeDistribution(StatusModel):
    """How many of the policy's CTs are on one node."""

    node: str = Field(max_length=63)
    """Node name."""

    replicas: int = Field(0, ge=0)
    """CTs of the policy on the node, in any state."""

    running: int = Field(0, ge=0)
    """CTs of the policy running on the node."""


class VmidConflict(StatusModel):
    """CT number index cannot have its own VMID (vmidRange.start + index)."""

    index: int = Field(ge=0, le=MAX_REPLICAS)
    """Number of the CT in the policy (0-based)."""

    wanted_vmid: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """The VMID the CT should have: vmidRange.start + index."""

    vmid: int | None = Field(None, ge=MIN_VMID, le=MAX_VMID)
    """The VMID the CT has (or is being created with) instead; absent when it gets none."""

    held_by: str = Field(max_length=1024)
    """Why the wanted VMID is not free: another guest holds it, or another policy's range overlaps it."""


class OwnershipLostContainer(StatusModel):
    """A CT the policy created and counted, whose ownership marks someone has since removed."""

    vmid: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """VMID of the CT."""

    node: str | None = Field(None, max_length=63)
    """Node the CT is on."""

    missing: str = Field(max_length=256)
    """The mark that is gone: a tag (pve-operator, ctp-...) or the ownership record in the description."""


class ForeignInRangeContainer(StatusModel):
    """A CT in the policy's vmidRange that carries its tags and an ownership record naming it, but whose
    record's signature does not verify: copied from another CT or written by someone else. The operator
    leaves it untouched and does not count it."""

    vmid: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """VMID of the CT."""

    node: str | None = Field(None, max_length=63)
    """Node the CT is on."""

    why: str = Field(max_length=256)
    """Why its claim proves nothing."""


class PolicyHaStatus(StatusModel):
    """The HA resources and rules the operator keeps in Proxmox VE for the policy (spec.ha)."""

    resources: int = Field(0, ge=0)
    """CTs of the policy registered as HA resources by the operator."""

    rules: tuple[Annotated[str, Field(max_length=64)], ...] = Field((), max_length=MAX_REPLICAS)
    """IDs of the PVE HA rules the operator keeps for the policy (pveop-<uid>-nodes, -apart-N)."""

    message: str = Field("", max_length=1024)
    """What was changed last, or what PVE's rules cannot express."""


class PolicyTaskStep(StrEnum):
    """Which Proxmox VE task of a policy action is running (:class:`PolicyTask`)."""

    CREATE = "Create"
    """``vzcreate``: the CT is being created from its OS template."""
    CLONE = "Clone"
    """``vzclone``: the CT is being cloned from template.clone; its settings are written when it ends."""
    DISCARD = "Discard"
    """``vzdestroy`` of a clone whose settings could not be written: the creation failed."""
    START = "Start"
    """``vzstart``/``hastart``."""
    STOP = "Stop"
    """``vzstop``/``hastop``: before a destroy, or before a handover moves the CT's volumes."""
    DESTROY = "Destroy"
    """``vzdestroy`` with purge."""
    REBOOT = "Reboot"
    """``vzreboot``: restart-class settings restored on a running CT take effect."""
    MIGRATE = "Migrate"
    """``vzmigrate``: a handover's replacement goes back to its source's node."""
    MOVE_VOLUME = "MoveVolume"
    """``move_volume``: a kept volume is reassigned from the outdated CT to its replacement."""
    RESTART_SOURCE = "RestartSource"
    """A handover failed after stopping the outdated CT: it is started again (never left stopped)."""


class PolicyTask(StatusModel):
    """A policy action waiting for a Proxmox VE task. Each reconcile looks at the task once (it never waits for
    it) and, when it ended, starts the action's next task or reports the action. Written before the cycle
    ends, so a restarted operator (or the other replica) goes on where this one stopped."""

    vmid: int = Field(ge=MIN_VMID, le=MAX_VMID)
    """VMID of the CT acted on (a handover's: the replacement's)."""

    action: ActionKind
    """Create, Start, Delete, Repair or HandOver."""

    step: PolicyTaskStep
    """Which of the action's tasks is running."""

    node: str = Field(max_length=63)
    """Node of the task (and of the CT when the action began)."""

    upid: str = Field(max_length=512)
    """Proxmox VE task ID being followed."""

    started_at: Timestamp
    """When the action began."""

    reason: str = Field("", max_length=1024)
    """Why the action was planned (told again when it ends)."""

    hostname: str | None = Field(None, max_length=253)
    """Create: the CT's host name."""

    index: int | None = Field(None, ge=0)
    """Create: the CT's replica index."""

    source_vmid: int | None = Field(None, ge=MIN_VMID, le=MAX_VMID)
    """HandOver: the outdated CT whose kept volumes move; Create: the CT the replacement receives them from."""

    keys: tuple[Annotated[str, Field(max_length=8)], ...] = Field((), max_length=256)
    """HandOver: the kept mount points (mpN) still to move; Delete: refused while the CT still holds these."""

    moved: tuple[Annotated[str, Field(max_length=8)], ...] = Field((), max_length=256)
    """HandOver: the mount points already moved."""

    source_stopped: bool = False
    """HandOver: this handover stopped the outdated CT (started again if the handover fails)."""

    volume: str | None = Field(None, max_length=8)
    """MoveVolume: the mount point being moved."""

    detail: str | None = Field(None, max_length=1024)
    """What the action's message says besides the task: why it failed (Discard, RestartSource), the settings
    restored (Repair), the protection flag cleared (Delete), new empty volumes (HandOver)."""


class ContainerPolicyStatus(StatusModel):
    """Observed state of the policy's CTs, written by the operator."""

    observed_generation: int | None = Field(None, ge=0)
    """The metadata.generation of the spec this status reflects."""

    conditions: tuple[Condition, ...] = Field((), max_length=16, json_schema_extra=CONDITIONS_SCHEMA)
    """Ready (all desired CTs exist and run), Progressing, Degraded."""

    last_handled_configuration: str | None = Field(None, max_length=262144)
    """The spec the operator last acted on (JSON, written by Kopf). Kept in status, not in an annotation,
    so that ``kubectl replace`` or a GitOps tool rewriting metadata does not look like a new object."""

    replicas: int = Field(0, ge=0)
    """CTs of the policy that exist in Proxmox VE, in any state (kubectl scale reads this)."""

    desired_replicas: int | None = Field(None, ge=0)
    """CTs the operator is converging to: spec.replicas, or in fill mode the count the generator chose."""

    ready_replicas: int = Field(0, ge=0)
    """CTs running on their node and not migrating (the Running column of kubectl get)."""

    offloaded_replicas: int = Field(0, ge=0)
    """CTs stopped by offload, waiting for room to be started again."""

    migrating_replicas: int = Field(0, ge=0)
    """CTs being migrated now."""

    updated_replicas: int = Field(0, ge=0)
    """CTs created with the current template (its Recreate-class fields; see templateHash)."""

    template_hash: str | None = Field(None, max_length=16)
    """Hash of the template's Recreate-class fields (ostemplate, rootfs, unprivileged), recorded in each new
    CT's ownership record: CTs with another one are outdated and replaced as spec.updateStrategy says."""

    template_tags: tuple[Tag, ...] = Field((), max_length=64)
    """The template.tags the CTs carry now (lower case), so that a tag removed from template.tags is known."""

    retired_tags: tuple[Tag, ...] = Field((), max_length=64)
    """Tags removed from template.tags that some CT still carries: the operator removes them from its CTs
    (a tag added by hand to a CT of the policy is removed too while it is listed here)."""

    fill_stopped_reason: FillStoppedReason | None = None
    """Fill mode only: why the generator stopped adding CTs (UsageLimitReached, MaxReplicasReached,
    VmidRangeExhausted); absent while it is still growing."""

    containers: tuple[ContainerStatus, ...] = Field(
        (), max_length=MAX_REPLICAS, json_schema_extra=kube_schema(list_map_keys=("vmid",))
    )
    """Every CT of the policy, by VMID."""

    distribution: tuple[NodeDistribution, ...] = Field(
        (), max_length=64, json_schema_extra=kube_schema(list_map_keys=("node",))
    )
    """CTs per node."""

    vmid_conflicts: tuple[VmidConflict, ...] = Field(
        (), max_length=MAX_REPLICAS, json_schema_extra=kube_schema(list_map_keys=("index",))
    )
    """CTs that cannot have VMID vmidRange.start + index, by index, and why (empty when every CT has
    its own VMID)."""

    ownership_lost: tuple[OwnershipLostContainer, ...] = Field(
        (), max_length=MAX_REPLICAS, json_schema_extra=kube_schema(list_map_keys=("vmid",))
    )
    """CTs that were the policy's but no longer carry all its ownership marks: the operator does not
    act on them or count them any more (put the marks back, or manage the CT yourself)."""

    foreign_in_range: tuple[ForeignInRangeContainer, ...] = Field(
        (), max_length=MAX_REPLICAS, json_schema_extra=kube_schema(list_map_keys=("vmid",))
    )
    """CTs in the vmidRange that claim to be the policy's (its tags, a record naming it) without a valid
    signature: never changed, stopped or destroyed by the operator, and not counted as replicas."""

    ha: PolicyHaStatus | None = None
    """What the operator registered in Proxmox VE's HA stack for spec.ha (absent when nothing)."""

    recent_actions: tuple[RecordedAction, ...] = Field((), max_length=MAX_RECENT_ACTIONS)
    """The last creations, deletions, starts and repairs of the policy's CTs, oldest first (migrations,
    offloads and restores are in the pool's recentActions and in events on this policy)."""

    tasks_in_flight: tuple[PolicyTask, ...] = Field(
        (), max_length=MAX_REPLICAS, json_schema_extra=kube_schema(list_map_keys=("vmid",))
    )
    """Actions waiting for a Proxmox VE task (creations, starts, deletions, restarts, volume handovers), by
    VMID: the reconcile follows each task without waiting for it."""


_READY = '.status.conditions[?(@.type=="Ready")]'

CONTAINER_POLICY = CustomResource(
    kind="ContainerPolicy",
    plural="containerpolicies",
    singular="containerpolicy",
    short_names=("ctp", "ctpolicy", "ctpolicies"),
    description="ContainerPolicy is a set of Proxmox VE LXC containers (CTs) the operator creates, keeps "
    "running and spreads over a ProxmoxServerPool: how many, from which template, with which VMIDs and "
    "host names, and what happens to them when the policy is deleted.",
    spec_model=ContainerPolicySpec,
    status_model=ContainerPolicyStatus,
    printer_columns=(
        PrinterColumn("Pool", "string", ".spec.poolRef.name", "ProxmoxServerPool the CTs run on"),
        PrinterColumn("Desired", "integer", ".status.desiredReplicas", "CTs the operator converges to"),
        PrinterColumn("Running", "integer", ".status.readyReplicas", "CTs running and not migrating"),
        PrinterColumn("Offloaded", "integer", ".status.offloadedReplicas", "CTs stopped by offload"),
        PrinterColumn("Migrating", "integer", ".status.migratingReplicas", "CTs being migrated"),
        PrinterColumn("Updated", "integer", ".status.updatedReplicas", "CTs with the current template"),
        PrinterColumn("Ready", "string", f"{_READY}.status", "Whether all desired CTs exist and run"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the policy was created"),
        PrinterColumn("Fill", "string", ".status.fillStoppedReason", "Why fill mode stopped adding CTs", priority=1),
        PrinterColumn("Reason", "string", f"{_READY}.reason", "Reason of the Ready condition", priority=1),
    ),
    scale=ScaleSubresource(spec_replicas_path=".spec.replicas", status_replicas_path=".status.replicas"),
    selectable_fields=(".spec.poolRef.name",),
)
"""The ContainerPolicy kind: names, columns and subresources of its CRD."""
