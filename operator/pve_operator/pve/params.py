"""PVE wire parameters for a CT: the blueprint the operator creates CTs from, as PVE wants it.

``net0`` and ``rootfs`` are PVE property strings; booleans are 1/0; ``unprivileged`` is always sent
(PVE 8 defaults to privileged, PVE 9 to unprivileged); tags are ``;``-joined (PVE normalises them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class NetworkInterface:
    name: str = "eth0"
    bridge: str = "vmbr0"
    #: ``dhcp``, ``manual`` or a CIDR such as ``10.0.0.5/24``.
    ip: str = "dhcp"
    gateway: str | None = None
    vlan: int | None = None
    firewall: bool = False
    #: ``dhcp``, ``auto``, ``manual`` or an IPv6 CIDR; None: no ``ip6``.
    ip6: str | None = None
    gateway6: str | None = None
    mtu: int | None = None
    #: Megabytes per second (PVE's ``rate``).
    rate_mbps: float | None = None
    #: ``hwaddr`` from :func:`stable_mac` (the CT's seed and this name) instead of PVE's random one.
    stable_mac: bool = False


@dataclass(frozen=True)
class MountPoint:
    storage: str
    size_gib: int
    path: str
    backup: bool = False
    read_only: bool = False
    quota: bool = False
    acl: bool | None = None
    replicate: bool = True
    #: keepOnRecreate: a rolling update hands the volume over to the replacement CT.
    keep_on_recreate: bool = False


def kept_volume_keys(mount_points: Sequence[MountPoint]) -> tuple[str, ...]:
    """The ``mpN`` keys of the mount points a rolling update hands over (keepOnRecreate)."""
    return tuple(f"mp{i}" for i, mp in enumerate(mount_points) if mp.keep_on_recreate)


def stable_mac(seed: str, nic: str) -> str:
    """A locally administered unicast MAC (``02:..``) derived from ``seed`` (policy UID and CT index) and
    the interface name: the same CT index gets the same MAC whenever it is created again."""
    digest = hashlib.sha256(f"pve-operator mac v1\0{seed}\0{nic}".encode()).digest()
    return "02:" + ":".join(f"{b:02X}" for b in digest[:5])


def mount_point_property(mp: MountPoint, volume: str | None = None) -> str:
    """PVE's ``mpN`` property string for a new volume (``local-lvm:8,mp=/srv,backup=1,...``), or, with
    ``volume``, for an existing volume with the policy's options (``local-lvm:vm-3105-disk-1,mp=/srv,...``)."""
    parts = [volume or f"{mp.storage}:{mp.size_gib}", f"mp={mp.path}", f"backup={1 if mp.backup else 0}"]
    if mp.read_only:
        parts.append("ro=1")
    if mp.quota:
        parts.append("quota=1")
    if mp.acl is not None:
        parts.append(f"acl={1 if mp.acl else 0}")
    if not mp.replicate:
        parts.append("replicate=0")
    return ",".join(parts)


@dataclass(frozen=True)
class CloneFrom:
    """The template CT new CTs are cloned from, resolved to where it is now."""

    vmid: int
    node: str
    full: bool = False
    storage: str | None = None
    #: Every volume of the template (and ``storage``, for a full clone) is on shared storage: the clone may be
    #: made on any node (``target``); otherwise only on the template's node.
    shared: bool = False


@dataclass(frozen=True)
class ContainerBlueprint:
    """Everything a new CT of a policy has in common; the index-specific parts come per CT."""

    #: The template volume to create from, or None when the CTs are cloned (``clone``).
    ostemplate: str | None
    memory_mib: int
    swap_mib: int
    cores: int
    rootfs_storage: str
    rootfs_gib: int
    networks: Sequence[NetworkInterface] = ()
    unprivileged: bool = True
    #: PVE's ``features`` property string (``nesting=1,keyctl=1``), None when no feature is set.
    features: str | None = None
    tags: frozenset[str] = frozenset()
    pool: str | None = None
    start_on_create: bool = True
    ssh_public_keys: tuple[str, ...] = ()
    #: Root's password, sent on create only. Never printed (repr hides it), never logged.
    password: str | None = field(default=None, repr=False)
    nameservers: tuple[str, ...] = ()
    search_domain: str | None = None
    on_boot: bool = False
    #: PVE's ``startup`` property string (``order=1,up=30``), None when not set.
    startup: str | None = None
    protection: bool = False
    cpu_limit: float | None = None
    cpu_units: int | None = None
    timezone: str | None = None
    #: The user's notes, written above the ownership record in the description.
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``template_hash`` of the policy's template, recorded (signed) in each new CT's ownership record.
    template_hash: str = ""
    mount_points: Sequence[MountPoint] = ()
    clone: CloneFrom | None = None
    arch: str | None = None
    ostype: str | None = None
    hookscript: str | None = None


def net_property(nic: NetworkInterface, hwaddr: str | None = None) -> str:
    parts = [f"name={nic.name}", f"bridge={nic.bridge}", f"ip={nic.ip}"]
    if hwaddr:
        parts.append(f"hwaddr={hwaddr}")
    if nic.gateway:
        parts.append(f"gw={nic.gateway}")
    if nic.vlan is not None:
        parts.append(f"tag={nic.vlan}")
    if nic.firewall:
        parts.append("firewall=1")
    if nic.ip6 is not None:
        parts.append(f"ip6={nic.ip6}")
    if nic.gateway6:
        parts.append(f"gw6={nic.gateway6}")
    if nic.mtu is not None:
        parts.append(f"mtu={nic.mtu}")
    if nic.rate_mbps is not None:
        parts.append(f"rate={_number(nic.rate_mbps)}")
    return ",".join(parts)


def features_property(
    *, nesting: bool = False, keyctl: bool = False, fuse: bool = False, mknod: bool = False, mount: Sequence[str] = ()
) -> str | None:
    """PVE's ``features`` property string (``nesting=1,keyctl=1,mount=nfs;cifs``), None when none is set."""
    flags = (("nesting", nesting), ("keyctl", keyctl), ("fuse", fuse), ("mknod", mknod))
    parts = [f"{name}=1" for name, on in flags if on]
    if mount:
        parts.append("mount=" + ";".join(mount))
    return ",".join(parts) or None


def startup_property(order: int | None = None, up: int | None = None, down: int | None = None) -> str | None:
    """PVE's ``startup`` property string (``order=2,up=30,down=60``), None when nothing is set."""
    parts = [f"{key}={value}" for key, value in (("order", order), ("up", up), ("down", down)) if value is not None]
    return ",".join(parts) or None


def _number(value: float) -> str:
    """A number as PVE prints it: ``0.5``, ``2`` (no trailing ``.0``)."""
    return f"{value:g}"


def create_params(
    blueprint: ContainerBlueprint, *, hostname: str, description: str, tags: frozenset[str], mac_seed: str = ""
) -> dict[str, Any]:
    """The body of ``POST /nodes/{node}/lxc`` (without ``vmid``; the CT is started separately).

    Options left at PVE's default are not sent (PVE writes only what it is given into the config).
    ``password`` and ``ssh-public-keys`` exist on create only: PVE applies them inside the new CT."""
    params: dict[str, Any] = {
        "ostemplate": blueprint.ostemplate,
        "hostname": hostname,
        "memory": blueprint.memory_mib,
        "swap": blueprint.swap_mib,
        "cores": blueprint.cores,
        "rootfs": f"{blueprint.rootfs_storage}:{blueprint.rootfs_gib}",
        "unprivileged": 1 if blueprint.unprivileged else 0,
        "tags": ";".join(sorted(tags | blueprint.tags)),
        "description": description,
        "start": 0,
    }
    if blueprint.features:
        params["features"] = blueprint.features
    if blueprint.ssh_public_keys:
        params["ssh-public-keys"] = "\n".join(blueprint.ssh_public_keys) + "\n"
    if blueprint.password is not None:
        params["password"] = blueprint.password
    if blueprint.nameservers:
        params["nameserver"] = " ".join(blueprint.nameservers)
    if blueprint.search_domain:
        params["searchdomain"] = blueprint.search_domain
    if blueprint.on_boot:
        params["onboot"] = 1
    if blueprint.startup:
        params["startup"] = blueprint.startup
    if blueprint.protection:
        params["protection"] = 1
    if blueprint.cpu_limit:
        params["cpulimit"] = _number(blueprint.cpu_limit)
    if blueprint.cpu_units is not None:
        params["cpuunits"] = blueprint.cpu_units
    if blueprint.timezone:
        params["timezone"] = blueprint.timezone
    for i, nic in enumerate(blueprint.networks):
        params[f"net{i}"] = net_property(nic, stable_mac(mac_seed, nic.name) if nic.stable_mac and mac_seed else None)
    for i, mp in enumerate(blueprint.mount_points):
        params[f"mp{i}"] = mount_point_property(mp)
    if blueprint.arch:
        params["arch"] = blueprint.arch
    if blueprint.ostype:
        params["ostype"] = blueprint.ostype
    if blueprint.hookscript:
        params["hookscript"] = blueprint.hookscript
    if blueprint.pool:
        params["pool"] = blueprint.pool
    params.update(blueprint.extra)
    return params


#: Parameters of ``POST /nodes/{node}/lxc`` that only creating from an ostemplate takes (a clone has its
#: template's root volume, privileges, keys and password); the rest are config options a clone gets by ``PUT``.
_CREATE_ONLY = frozenset({"ostemplate", "rootfs", "unprivileged", "password", "ssh-public-keys", "start", "pool"})


def clone_params(
    blueprint: ContainerBlueprint, *, newid: int, hostname: str, description: str, target: str
) -> dict[str, Any]:
    """The body of ``POST /nodes/{node}/lxc/{vmid}/clone`` for one new CT on node ``target`` (PVE's
    ``target`` is sent when that is not the template's node: its volumes must be on shared storage)."""
    assert blueprint.clone is not None
    params: dict[str, Any] = {
        "newid": newid,
        "hostname": hostname,
        "description": description,
        "full": 1 if blueprint.clone.full else 0,
    }
    if blueprint.clone.storage:
        params["storage"] = blueprint.clone.storage
    if target != blueprint.clone.node:
        params["target"] = target
    if blueprint.pool:
        params["pool"] = blueprint.pool
    return params


def clone_settings(
    blueprint: ContainerBlueprint, *, hostname: str, description: str, tags: frozenset[str], mac_seed: str = ""
) -> dict[str, Any]:
    """What ``PUT /nodes/{node}/lxc/{vmid}/config`` sets on a fresh clone: every option ``create_params``
    would send except the create-only ones (the clone keeps its template's)."""
    settings = create_params(
        replace(blueprint, ostemplate=blueprint.ostemplate or ""),
        hostname=hostname,
        description=description,
        tags=tags,
        mac_seed=mac_seed,
    )
    return {k: v for k, v in settings.items() if k not in _CREATE_ONLY}
