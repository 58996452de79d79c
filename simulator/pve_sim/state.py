"""The simulated cluster's state: nodes, storages, templates, containers, HA resources.

This is the data PVE keeps in ``/etc/pve`` (node list, storage.cfg, the per-node ``lxc/<vmid>.conf``
files, ha/resources.cfg) plus what the kernel knows (which CTs run, since when). It carries the small
rules that PVE implements next to that data and that several handlers share: loading a config with
PVE's "does not exist" error, ``check_lock``, ``check_vmid_unused``, storage lookups with their
errors, volume naming per storage type, config digests, and printing config values the way
pve-container stores them.

Users, ACLs and pools are in :mod:`pve_sim.access`; usage over time in :mod:`pve_sim.history`; tasks
in :mod:`pve_sim.tasks`. Nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pve_sim.errors import PveApiError, internal
from pve_sim.scenario import TEMPLATE_STORAGE_TYPES

MIB = 1024 * 1024
GIB = 1024 * MIB

ConfigValue = str | int
"""A config value as pve-container stores it: ints for integer/boolean options, else strings."""

# Options whose value is a property string with these (default key, required keys) when printed.
_PROPERTY_DEFAULT_KEY = {"rootfs": "volume", "mp": "volume", "unused": "volume", "dev": "path"}
_PROPERTY_REQUIRED_KEYS = {"net": ("name",), "mp": ("mp",)}
_PROPERTY_BOOLEAN_KEYS = frozenset(
    {
        "firewall",
        "host-managed",
        "link_down",
        "acl",
        "quota",
        "replicate",
        "ro",
        "shared",
        "backup",
        "keepattrs",
        "nesting",
        "keyctl",
        "fuse",
        "mknod",
        "force_rw_sys",
    }
)
_DISK_SIZE_KEYS = frozenset({"size"})

LOCK_VALUES = (
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
)
"""pve-container's lock enum (``$confdesc->{lock}``)."""


# ------------------------------------------------------------------------------------------ helpers


def parse_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """Split a validated property string (``k=v,k=v`` with an optional leading default-key value).

    The HTTP layer has validated the value against the schema already; this only splits it.
    """
    result: dict[str, str] = {}
    for part in value.split(","):
        if not part:
            continue
        key, sep, item = part.partition("=")
        if not sep:
            if default_key is None:
                raise internal(f"unable to parse property string '{value}'")
            result[default_key] = key
        else:
            result[key] = item
    return result


def option_family(key: str) -> str:
    """``net0`` -> ``net``, ``mp12`` -> ``mp``, ``rootfs`` -> ``rootfs``."""
    match = re.match(r"^([a-z]+)\d+$", key)
    return match.group(1) if match else key


def print_property_string(data: Mapping[str, str], family: str) -> str:
    """Print like ``PVE::JSONSchema::print_property_string``: default key, required keys, the rest sorted."""
    default_key = _PROPERTY_DEFAULT_KEY.get(family)
    required = _PROPERTY_REQUIRED_KEYS.get(family, ())
    parts: list[str] = []
    done: set[str] = set()

    def add(key: str, bare: bool = False) -> None:
        if key in done or key not in data:
            return
        done.add(key)
        value = data[key]
        if key in _PROPERTY_BOOLEAN_KEYS:
            value = _normalise_bool(value)
        elif key in _DISK_SIZE_KEYS:
            value = format_size(parse_disk_size(value))
        parts.append(value if bare else f"{key}={value}")

    if default_key is not None:
        add(default_key, bare=True)
    for key in sorted(data):
        if key in required:
            add(key)
    for key in sorted(data):
        add(key)
    return ",".join(parts)


def _normalise_bool(value: str) -> str:
    lowered = value.lower()
    if lowered in ("1", "on", "yes", "true"):
        return "1"
    if lowered in ("0", "off", "no", "false"):
        return "0"
    return value


def parse_disk_size(text: str) -> int:
    """Bytes of a ``disk-size`` value (``8G``, ``512M``, ``4``=bytes, ``1.5T``)."""
    match = re.match(r"^(\d+(?:\.\d+)?)([KMGT])?$", text)
    if match is None:
        raise internal(f"unable to parse size '{text}'")
    number = float(match.group(1))
    unit = match.group(2)
    if unit:
        number *= 1024 ** ("KMGT".index(unit) + 1)
    return int(number)


def format_size(size_bytes: int) -> str:
    """``PVE::JSONSchema::format_size``: the largest exact unit (``8G``, ``512M``, ``100K``)."""
    size = int(size_bytes)
    kb, rest = divmod(size, 1024)
    if rest:
        return str(size)
    mb, rest = divmod(kb, 1024)
    if rest:
        return f"{kb}K"
    gb, rest = divmod(mb, 1024)
    if rest:
        return f"{mb}M"
    tb, rest = divmod(gb, 1024)
    if rest:
        return f"{gb}G"
    return f"{tb}T"


def format_number(value: float) -> str:
    """A ``number`` option as PVE stores it (a string): ``2``, ``0.5``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def stored_value(value: object) -> ConfigValue:
    """A typed parameter value as it is written to a CT config."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return format_number(value)
    return str(value)


# ------------------------------------------------------------------------------------------ nodes


@dataclass
class NodeState:
    """A cluster member. ``boot_epoch`` gives uptime and task ``pstart`` values."""

    name: str
    nodeid: int
    ip: str
    cores: int
    memory_bytes: int
    rootfs_bytes: int
    online: bool
    boot_epoch: float
    swap_bytes: int = 0
    cpu_model: str = "Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz"
    sockets: int = 1
    kernel_release: str = "6.17.2-1-pve"
    kernel_version: str = "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1 (2025-10-21T11:55Z)"
    offline_since: float | None = None
    """When corosync membership last lost the node (None while online): pvestatd's last broadcast
    from it is at or before this instant, and the other nodes keep that data for a while."""

    def uptime_seconds(self, now_epoch: float) -> int:
        return max(0, int(now_epoch - self.boot_epoch))

    def ssl_fingerprint(self) -> str:
        digest = hashlib.sha256(f"pve-sim node certificate {self.name}".encode()).hexdigest().upper()
        return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


# ------------------------------------------------------------------------------------------ storages


@dataclass
class StorageState:
    """One entry of storage.cfg. ``nodes`` None = available on every node."""

    sid: str
    type: str
    content: frozenset[str]
    shared: bool
    capacity_bytes: int
    base_used_bytes: int = 0
    """Space used by things the simulator does not model (ISOs, backups)."""
    enabled: bool = True
    nodes: frozenset[str] | None = None

    def available_on(self, node: str) -> bool:
        return self.nodes is None or node in self.nodes

    def content_string(self) -> str:
        """``content_hash_to_string``: sorted, comma-separated."""
        return ",".join(sorted(self.content))

    @property
    def active_on_every_node(self) -> bool:
        return self.shared

    def volume_name(self, vmid: int, index: int) -> str:
        """The volume name a new CT disk gets on this storage type."""
        if self.type in ("zfspool", "zfs"):
            return f"subvol-{vmid}-disk-{index}"
        if self.type in _FILE_STORAGE_TYPES:
            return f"{vmid}/vm-{vmid}-disk-{index}.raw"
        return f"vm-{vmid}-disk-{index}"

    def has_template_feature(self) -> bool:
        """``volume_has_feature($cfg, 'template', $volid)`` for a CT volume (raw or subvol, not a
        snapshot): every plugin with ``template => {current => ...}`` -- the file plugins
        (pve-storage ``src/PVE/Storage/Plugin.pm``: raw/subvol), ``LvmThinPlugin.pm``,
        ``ZFSPoolPlugin.pm``, ``RBDPlugin.pm``, ``BTRFSPlugin.pm``; thick ``LVMPlugin.pm`` has it
        commented out ("fixme: add later"), iSCSI has none."""
        return self.type in TEMPLATE_STORAGE_TYPES

    def has_linked_clone_feature(self, volname: str) -> bool:
        """``volume_has_feature($cfg, 'clone', $volid, undef, $running, {valid_target_formats =>
        ['raw', 'subvol']})`` as pve-container ``clone_vm`` asks it (pve-storage, each plugin's
        ``volume_has_feature``): lvmthin, zfspool and rbd clone only a base volume (``base-``,
        ``basevol-``), btrfs a base volume or a current raw image; the file plugins (dir, nfs,
        cifs, ...) refuse because their ``clone_image`` makes a qcow2 volume, which a CT cannot use;
        thick LVM has no clone feature."""
        base = is_base_volname(volname)
        if self.type in ("lvmthin", "zfspool", "zfs", "rbd"):
            return base
        if self.type == "btrfs":
            return base or volname.endswith(".raw")
        return False

    def base_volume_name(self, volname: str) -> str:
        """``create_base``: the name a volume gets when its CT becomes a template -- ``vm-`` becomes
        ``base-`` (pve-storage ``LvmThinPlugin.pm``, ``RBDPlugin.pm``, ``Plugin.pm`` for file
        storages, ``<vmid>/base-...``), a ZFS ``subvol-`` becomes ``basevol-`` (``ZFSPoolPlugin.pm``)."""
        head, sep, name = volname.rpartition("/")
        if name.startswith("subvol-"):
            name = "basevol-" + name.removeprefix("subvol-")
        elif name.startswith("vm-"):
            name = "base-" + name.removeprefix("vm-")
        return f"{head}{sep}{name}"

    def has_rename_feature(self, volname: str) -> bool:
        """``volume_has_feature($cfg, 'rename', $volid)`` for a CT volume (not a snapshot): every
        plugin that can hold CT volumes declares ``rename => {current => ...}`` -- the file plugins
        for raw/qcow2/vmdk images, not subvol directories (pve-storage ``src/PVE/Storage/Plugin.pm``,
        ``BTRFSPlugin.pm``), ``LVMPlugin.pm`` for raw, ``LvmThinPlugin.pm``, ``ZFSPoolPlugin.pm`` and
        ``RBDPlugin.pm`` for any current volume. A base volume (``base-``, ``basevol-``) never has it;
        iSCSI and ZFS over iSCSI (``ZFSPlugin.pm``) have no ``rename`` at all."""
        if is_base_volname(volname):
            return False
        if self.type in ("lvm", "lvmthin", "zfspool", "rbd"):
            return True
        if self.type in _FILE_STORAGE_TYPES:
            return volname.endswith((".raw", ".qcow2", ".vmdk"))
        return False

    def linked_clone_name(self, base_volname: str, free_name: str) -> str:
        """``clone_image``'s result for a base volume and the clone's free disk name: ZFS and RBD
        name the parent (``basevol-100-disk-0/subvol-101-disk-0``, ``base-100-disk-0/vm-101-disk-0``),
        LVM-thin returns the bare new LV (``vm-101-disk-0``, a thin snapshot of the base), btrfs
        ``<vmid>/<name>`` (pve-storage ``ZFSPoolPlugin.pm``, ``RBDPlugin.pm``, ``LvmThinPlugin.pm``,
        ``BTRFSPlugin.pm`` ``clone_image``)."""
        if self.type in ("zfspool", "zfs", "rbd"):
            return f"{base_volname}/{free_name}"
        return free_name


_FILE_STORAGE_TYPES = frozenset({"dir", "nfs", "cifs", "btrfs", "cephfs", "glusterfs"})
_BASE_VOLNAME_RE = re.compile(r"^(?:base|basevol)-\d+-")
_DISK_NUMBER_RE = re.compile(r"^(?:vm|subvol|base|basevol)-(\d+)-disk-(\d+)")
_OWNER_RE = re.compile(r"^(?:vm|subvol|base|basevol)-(\d+)-")


def volume_owner(volid: str) -> int | None:
    """The VMID a volume belongs to, from its own name (``vm-101-disk-0``, ``basevol-100-disk-0/
    subvol-101-disk-0`` -> 101), as the plugins' ``parse_volname`` reads it; None if not a guest's."""
    match = _OWNER_RE.match(volid.partition(":")[2].rpartition("/")[2])
    return int(match.group(1)) if match else None


def is_base_volname(volname: str) -> bool:
    """The plugins' ``parse_volname`` ``$isBase``: the volume's own name (after the last ``/``) is a
    ``base-``/``basevol-`` volume; a linked clone ``basevol-100-disk-0/subvol-101-disk-0`` is not."""
    return _BASE_VOLNAME_RE.match(volname.rpartition("/")[2]) is not None


@dataclass(frozen=True)
class TemplateVolume:
    """An OS template (``vztmpl``) volume on a storage."""

    volid: str
    storage: str
    ostype: str
    size_bytes: int
    arch: str = "amd64"

    @property
    def filename(self) -> str:
        return self.volid.split("/", 1)[-1]


# ------------------------------------------------------------------------------------------ containers


@dataclass
class Volume:
    """A CT volume (rootfs or mount point) as the storage layer sees it."""

    volid: str
    storage: str
    size_bytes: int
    key: str


@dataclass
class ContainerState:
    """A CT: its config file (on ``node``) and its runtime state."""

    vmid: int
    node: str
    config: dict[str, ConfigValue]
    running: bool = False
    started_epoch: float | None = None
    pid: int | None = None
    pending: dict[str, ConfigValue] = field(default_factory=dict)
    pending_delete: list[str] = field(default_factory=list)
    created_epoch: float = 0.0
    last_started_epoch: float | None = None
    """``started_epoch`` of the CT's last run (kept after it stops: a dead node's stale stats need it)."""
    ignores_shutdown: bool = False
    """The CT's init ignores the shutdown request (``lxc-stop`` without ``--kill`` never stops it):
    a clean shutdown only ends by a kill (``forceStop``, stop, reboot's kill-after-timeout)."""

    @property
    def lock(self) -> str | None:
        value = self.config.get("lock")
        return str(value) if value else None

    @property
    def is_template(self) -> bool:
        return bool(self.config.get("template"))

    @property
    def name(self) -> str:
        """vmstatus ``name``: the hostname or ``CT<vmid>``, whitespace removed."""
        hostname = self.config.get("hostname")
        if not hostname:
            return f"CT{self.vmid}"
        text = str(hostname)
        return "".join(text.split()) if " " in text or "\t" in text or "\n" in text else text

    @property
    def maxmem_bytes(self) -> int:
        return int(self.config.get("memory") or 512) * MIB

    @property
    def maxswap_bytes(self) -> int:
        return int(self.config.get("swap") or 0) * MIB

    def cpus(self, node_cores: int) -> float:
        """vmstatus ``cpus``: cores, else cpulimit, else every host CPU."""
        cores = self.config.get("cores")
        if cores:
            return float(cores)
        cpulimit = self.config.get("cpulimit")
        if cpulimit and float(cpulimit) > 0:
            return float(cpulimit)
        return float(node_cores)

    @property
    def tags(self) -> str | None:
        value = self.config.get("tags")
        return str(value) if value else None

    def volumes(self) -> list[Volume]:
        """rootfs and mount point volumes (unused volumes included), with their sizes."""
        result: list[Volume] = []
        for key in sorted(self.config, key=_volume_key_order):
            family = option_family(key)
            if family not in ("rootfs", "mp", "unused"):
                continue
            parsed = parse_property_string(str(self.config[key]), "volume")
            volid = parsed.get("volume", "")
            storage, sep, _ = volid.partition(":")
            if not sep or volid.startswith("/"):
                continue  # bind mount or device: not a storage volume
            size = parse_disk_size(parsed["size"]) if "size" in parsed else 0
            result.append(Volume(volid=volid, storage=storage, size_bytes=size, key=key))
        return result

    def rootfs_volume(self) -> Volume | None:
        for volume in self.volumes():
            if volume.key == "rootfs":
                return volume
        return None

    @property
    def maxdisk_bytes(self) -> int:
        """vmstatus ``maxdisk`` of a stopped CT: the rootfs size, 4 GiB if unknown."""
        volume = self.rootfs_volume()
        return volume.size_bytes if volume is not None and volume.size_bytes else 4 * GIB

    def current_config(self, *, with_pending: bool) -> dict[str, ConfigValue]:
        """``load_current_config``: the config, with pending changes applied unless ``current``."""
        config = dict(self.config)
        if with_pending:
            config.update(self.pending)
            for key in self.pending_delete:
                config.pop(key, None)
        return config

    def config_text(self) -> str:
        """The config file as ``write_pct_config`` writes it (the digest is its SHA1)."""
        lines: list[str] = []
        lines.extend(f"#{line}" for line in description_lines(self.config.get("description")))
        lines.extend(f"{key}: {self.config[key]}" for key in sorted(self.config) if key != "description")
        if self.pending or self.pending_delete:
            lines.append("")
            lines.append("[pve:pending]")
            lines.extend(f"#{line}" for line in description_lines(self.pending.get("description")))
            lines.extend(f"{key}: {self.pending[key]}" for key in sorted(self.pending) if key != "description")
            if self.pending_delete:
                lines.append(f"delete: {','.join(self.pending_delete)}")
        return "\n".join(lines) + "\n"

    def digest(self) -> str:
        return hashlib.sha1(self.config_text().encode()).hexdigest()


def description_lines(description: ConfigValue | None) -> list[str]:
    """The comment lines ``write_pct_config`` writes for a description: Perl's ``split(/\\n/, $descr)``,
    which drops trailing empty fields (pve-container ``src/PVE/LXC/Config.pm`` ``write_pct_config``)."""
    if description is None:
        return []
    lines = str(description).split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def description_as_read(description: ConfigValue | None) -> str | None:
    """The description as GET config returns it: ``parse_pct_config`` rebuilds it from the ``#`` comment
    lines, each followed by ``"\\n"`` (so a one-line description ends in a newline), and leaves it out
    when there are no such lines (pve-container ``src/PVE/LXC/Config.pm`` ``parse_pct_config``)."""
    lines = description_lines(description)
    if not lines:
        return None
    return "".join(f"{line}\n" for line in lines)


def _volume_key_order(key: str) -> tuple[int, int, str]:
    family = option_family(key)
    order = {"rootfs": 0, "mp": 1, "unused": 2}.get(family, 3)
    digits = re.sub(r"\D", "", key)
    return order, int(digits) if digits else 0, key


# ------------------------------------------------------------------------------------------ HA


@dataclass
class HaResource:
    """An entry of ha/resources.cfg (``ct:<vmid>``).

    ``state`` is the *requested* state as stored (``enabled`` is kept as written; readers treat it
    as ``started``, pve-ha-manager ``src/PVE/HA/Config.pm`` ``read_and_check_resources_config``).
    ``max_restart``/``max_relocate``/``failback`` None = not in the section (PVE's defaults apply:
    1, 1, 1), so a GET answers only what the file holds, as ``$api_copy_config`` does.
    """

    sid: str
    state: str | None = "started"
    group: str | None = None
    max_restart: int | None = 1
    max_relocate: int | None = 1
    failback: bool | None = True
    comment: str | None = None

    @property
    def vmid(self) -> int:
        return int(self.sid.split(":", 1)[1])

    @property
    def type(self) -> str:
        return self.sid.split(":", 1)[0]

    @property
    def requested(self) -> str:
        """The requested state with PVE's defaults: unset and ``enabled`` mean ``started``."""
        if self.state is None or self.state == "enabled":
            return "started"
        return self.state

    @property
    def effective_failback(self) -> bool:
        return True if self.failback is None else self.failback

    def section_text(self) -> str:
        """The section as pve-common ``SectionConfig::write_config`` prints it (for the digest)."""
        lines = [f"{self.type}: {self.vmid}"]
        for key in ("comment", "failback", "group", "max_relocate", "max_restart", "state"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool):
                value = int(value)
            lines.append(f"\t{key} {value}")
        return "\n".join(lines) + "\n"


HA_RULE_TYPES = ("node-affinity", "resource-affinity")
"""pve-ha-manager ``src/PVE/HA/Rules.pm`` plugin types, in registration order (``PVE::HA::Config``
registers NodeAffinity, then ResourceAffinity)."""


@dataclass
class HaRule:
    """An entry of ha/rules.cfg (PVE 9, pve-ha-manager ``src/PVE/HA/Rules.pm`` and its plugins).

    ``resources`` are HA resource ids; ``nodes`` maps a node to its priority (``node`` without
    ``:<pri>`` is priority 0, ``PVE::HA::Tools::parse_node_priority``); ``strict`` belongs to
    ``node-affinity``, ``affinity`` (``positive``/``negative``) to ``resource-affinity``. ``disable``
    and ``strict`` None = not written in the section. ``order`` is the section's position
    (``$rules->{order}``).
    """

    rule: str
    type: str
    resources: set[str]
    order: int
    nodes: dict[str, int] = field(default_factory=dict)
    strict: bool | None = None
    affinity: str | None = None
    disable: bool | None = None
    comment: str | None = None

    @property
    def enabled(self) -> bool:
        """``foreach_rule(..., exclude_disabled_rules => 1)`` skips a rule when ``disable`` exists."""
        return self.disable is None

    def nodes_text(self) -> str:
        """NodeAffinity ``encode_plugin_value``: sorted, ``node:pri`` only for a non-zero priority."""
        return ",".join(f"{node}:{pri}" if pri else node for node, pri in sorted(self.nodes.items()))

    def resources_text(self) -> str:
        """``encode_value`` of ``resources``: sorted, comma-separated."""
        return ",".join(sorted(self.resources))

    def section_text(self) -> str:
        lines = [f"{self.type}: {self.rule}"]
        values: dict[str, object] = {
            "affinity": self.affinity,
            "comment": self.comment,
            "disable": None if self.disable is None else int(self.disable),
            "nodes": self.nodes_text() if self.nodes else None,
            "resources": self.resources_text(),
            "strict": None if self.strict is None else int(self.strict),
        }
        lines.extend(f"\t{key} {value}" for key, value in values.items() if value is not None)
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ cluster


@dataclass(frozen=True)
class Timing:
    """Simulated durations of worker tasks (seconds), before time scaling."""

    create_seconds: float = 6.0
    start_seconds: float = 2.0
    stop_seconds: float = 1.0
    shutdown_seconds: float = 4.0
    reboot_seconds: float = 6.0
    destroy_seconds: float = 2.0
    migrate_base_seconds: float = 4.0
    migrate_mib_per_second: float = 400.0
    template_seconds: float = 1.0
    """``vztemplate``: ``template_create`` renames each volume to its base name (``lvrename``, ``zfs
    rename`` + snapshot), a matter of a second."""
    clone_seconds: float = 1.0
    """``vzclone``: the fixed part (locks, config, ``post_clone_hook``); a linked clone (a thin
    snapshot / ZFS or RBD clone of the base volume) takes only this."""
    clone_mib_per_second: float = 400.0
    """``vzclone``, full clone: ``copy_volume`` allocates a new volume and copies the source into
    it; the copy takes the volume's size at this rate (``bwlimit`` caps it)."""
    ha_crm_round_seconds: float = 10.0
    """The CRM's loop (pve-ha-manager ``src/PVE/HA/CRM.pm`` works every ~10 s)."""
    ha_fence_delay_seconds: float = 60.0
    """How long a node must be gone before its services go to ``fence`` (pve-ha-manager
    ``src/PVE/HA/NodeStatus.pm`` ``$fence_delay = 60``)."""
    ha_fence_seconds: float = 120.0
    """When, after the node left, the CRM gets the dead node's agent lock (fencing acknowledged) and
    recovers its services: pmxcfs locks expire after 120 s (pve-ha-manager ``src/PVE/HA/Env/PVE2.pm``
    "hardcoded lock lifetime limit from pmxcfs"); the docs speak of failover "of about 2 minutes"."""


@dataclass
class ClusterState:
    """Everything PVE keeps about the cluster except users/ACLs/pools and task logs."""

    name: str
    pve_version: str
    repoid: str
    nodes: dict[str, NodeState] = field(default_factory=dict)
    storages: dict[str, StorageState] = field(default_factory=dict)
    templates: dict[str, TemplateVolume] = field(default_factory=dict)
    containers: dict[int, ContainerState] = field(default_factory=dict)
    ha_resources: dict[str, HaResource] = field(default_factory=dict)
    ha_groups: dict[str, tuple[tuple[str, ...], bool]] = field(default_factory=dict)
    """HA group -> (nodes with optional ``:priority``, restricted)."""
    ha_rules: dict[str, HaRule] = field(default_factory=dict)
    """ha/rules.cfg: rule id -> rule (PVE 9 node-affinity / resource-affinity rules)."""
    timing: Timing = field(default_factory=Timing)
    config_version: int = 1
    linked_clones: dict[str, str] = field(default_factory=dict)
    """Linked-clone volume id -> the base volume id it was cloned from (``vdisk_clone``): the
    clone shares the base's blocks. LVM-thin does not show it in the volume name."""

    # -------------------------------------------------------------- containers

    @staticmethod
    def config_path(vmid: int, node: str) -> str:
        return f"nodes/{node}/lxc/{vmid}.conf"

    def load_config(self, vmid: int, node: str) -> ContainerState:
        """``load_config`` on ``node``: the CT whose config file lives there, or PVE's 500."""
        ct = self.containers.get(vmid)
        if ct is None or ct.node != node:
            raise internal(f"Configuration file '{self.config_path(vmid, node)}' does not exist")
        return ct

    def running_on(self, vmid: int, node: str) -> bool:
        """``check_running`` on ``node``: only a CT running *there* counts."""
        ct = self.containers.get(vmid)
        return ct is not None and ct.node == node and ct.running

    def check_vmid_unused(self, vmid: int) -> None:
        """``PVE::Cluster::check_vmid_unused`` (CT variant; the simulator has no QEMU guests)."""
        ct = self.containers.get(vmid)
        if ct is not None:
            raise internal(f"CT {vmid} already exists on node '{ct.node}'")

    @staticmethod
    def check_lock(ct: ContainerState) -> None:
        """``check_lock``: ``CT is locked (<lock>)``."""
        if ct.lock:
            raise internal(f"CT is locked ({ct.lock})")

    def iter_containers(self) -> Iterator[ContainerState]:
        return iter(self.containers.values())

    def ha_sid(self, vmid: int) -> str:
        return f"ct:{vmid}"

    def is_ha_managed(self, vmid: int) -> bool:
        """``vm_is_ha_managed``: configured and not ``ignored`` (an ignored resource behaves as if it
        were not HA managed: pve-ha-manager ``src/PVE/HA/Config.pm`` ``$service_check_ha_state``)."""
        resource = self.ha_resources.get(self.ha_sid(vmid))
        return resource is not None and resource.state != "ignored"

    def ha_resources_digest(self) -> str:
        """SHA1 of ha/resources.cfg as ``write_config`` orders it (sections sorted by id)."""
        text = "\n".join(self.ha_resources[sid].section_text() for sid in sorted(self.ha_resources))
        return hashlib.sha1(text.encode()).hexdigest()

    def ha_rules_digest(self) -> str:
        """SHA1 of ha/rules.cfg (sections in their order)."""
        rules = sorted(self.ha_rules.values(), key=lambda r: (r.order, r.rule))
        return hashlib.sha1("\n".join(r.section_text() for r in rules).encode()).hexdigest()

    # -------------------------------------------------------------- storages

    def storage_config(self, sid: str) -> StorageState:
        """``storage_config``: ``storage '<sid>' does not exist``."""
        storage = self.storages.get(sid)
        if storage is None:
            raise internal(f"storage '{sid}' does not exist")
        return storage

    def storage_check_enabled(self, sid: str, node: str | None) -> StorageState:
        """``storage_check_enabled``: exists, not disabled, available on the node."""
        storage = self.storage_config(sid)
        if not storage.enabled:
            raise internal(f"storage '{sid}' is disabled")
        if node is not None and not storage.available_on(node):
            raise internal(f"storage '{sid}' is not available on node '{node}'")
        return storage

    def next_volume_name(self, storage: StorageState, vmid: int, node: str) -> str:
        """A free ``vm-<vmid>-disk-N`` style name on ``storage`` (on ``node`` for local storage)."""
        used: set[str] = set()
        for ct in self.containers.values():
            if ct.vmid != vmid:
                continue
            for volume in ct.volumes():
                if volume.storage == storage.sid:
                    used.add(volume.volid)
        index = 0
        while f"{storage.sid}:{storage.volume_name(vmid, index)}" in used:
            index += 1
        return f"{storage.sid}:{storage.volume_name(vmid, index)}"

    def volids_on(self, storage: StorageState, node: str) -> list[str]:
        """The CT volumes on ``storage`` as ``node`` sees it (every CT's for shared storage, else
        the node's CTs'): what the configs and their pending sections reference -- the simulator has
        no volume that no config references."""
        found: list[str] = []
        for ct in self.containers.values():
            if not storage.shared and ct.node != node:
                continue
            for key, value in (*ct.config.items(), *ct.pending.items()):
                if option_family(key) not in ("rootfs", "mp", "unused"):
                    continue
                volid = parse_property_string(str(value), "volume").get("volume", "")
                if volid.startswith(f"{storage.sid}:") and volid not in found:
                    found.append(volid)
        return found

    def free_volume_name(self, storage: StorageState, vmid: int, node: str) -> str:
        """pve-storage ``find_free_diskname``: the name a new volume of ``vmid`` gets on ``storage``
        (as ``node`` sees it), with the lowest disk number no volume of that VMID uses there
        (``get_next_vm_diskname`` counts ``vm-``, ``base-``, ``subvol-`` and ``basevol-`` names;
        a linked clone ``basevol-100-disk-0/subvol-101-disk-0`` counts for 101)."""
        taken: set[int] = set()
        for other in self.volids_on(storage, node):
            match = _DISK_NUMBER_RE.match(other.partition(":")[2].rpartition("/")[2])
            if match is not None and int(match.group(1)) == vmid:
                taken.add(int(match.group(2)))
        index = 0
        while index in taken:
            index += 1
        return storage.volume_name(vmid, index)

    def rename_volume(self, volid: str, target_vmid: int, node: str) -> str:
        """pve-storage ``src/PVE/Storage.pm`` ``rename_volume($cfg, $volid, $target_vmid)``: the
        volume gets :meth:`free_volume_name` of ``target_vmid`` on its storage and keeps its size
        and data. The plugins' ``rename_volume`` return ``<sid>:vm-<vmid>-disk-<N>``
        (``LVMPlugin.pm``, inherited by LVM-thin), ``<sid>:[<base>/]subvol-<vmid>-disk-<N>``
        (``ZFSPoolPlugin.pm``), ``<sid>:[<base>/]vm-<vmid>-disk-<N>`` (``RBDPlugin.pm``: a linked
        clone keeps naming its base), ``<sid>:<vmid>/vm-<vmid>-disk-<N>.raw`` (``Plugin.pm``,
        ``BTRFSPlugin.pm``). A linked clone stays one under its new name. Returns the new volume ID."""
        sid, volname = volid.split(":", 1)
        storage = self.storage_config(sid)
        free = self.free_volume_name(storage, target_vmid, node)
        base, sep, _ = volname.rpartition("/")
        new_volid = f"{sid}:{base}{sep}{free}" if storage.type in ("zfspool", "zfs", "rbd") else f"{sid}:{free}"
        if volid in self.linked_clones:
            self.linked_clones[new_volid] = self.linked_clones.pop(volid)
        return new_volid

    def linked_rootfs_base(self, ct: ContainerState) -> int | None:
        """The VMID of the template whose base volume ``ct``'s rootfs is a linked clone of (it still
        is the template's rootfs), else None: the blocks the two share are stored once."""
        if not self.linked_clones:
            return None
        rootfs = ct.rootfs_volume()
        base = self.linked_clones.get(rootfs.volid) if rootfs is not None else None
        if base is None:
            return None
        storage = self.storages.get(rootfs.storage) if rootfs is not None else None
        for other in self.containers.values():
            if other.node != ct.node and not (storage is not None and storage.shared):
                continue  # a local volume moved to another node (migration) was copied in full
            other_rootfs = other.rootfs_volume()
            if other_rootfs is not None and other_rootfs.volid == base:
                return other.vmid
        return None

    def forget_linked_clones_of(self, vmid: int) -> None:
        """The CT is gone: its volumes (owned by ``vmid``) are no linked clones any more."""
        for volid in [v for v in self.linked_clones if volume_owner(v) == vmid]:
            del self.linked_clones[volid]

    def node_names(self) -> list[str]:
        return list(self.nodes)

    def node(self, name: str) -> NodeState | None:
        return self.nodes.get(name)


def lock_error(lock: str) -> PveApiError:
    return internal(f"CT is locked ({lock})")
