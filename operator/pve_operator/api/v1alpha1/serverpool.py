"""``ProxmoxServerPool``: one Proxmox VE cluster and the rules that govern the nodes the operator uses.

The spec says how to reach the cluster (endpoint, credentials Secret, TLS), which nodes the operator
may place CTs on and with what weights, when a node counts as loaded (thresholds), and whether the
operator moves CTs on its own (balancing, offload). The status reports what the operator last saw
of the nodes and what it did about them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Self
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from .common import (
    CONDITIONS_SCHEMA,
    LABEL_KEY,
    MAX_RECENT_ACTIONS,
    MAX_RECOMMENDATIONS,
    ActionKind,
    ApiModel,
    CelRule,
    Condition,
    CustomResource,
    KeyReference,
    LabelKey,
    LabelValue,
    LocalObjectReference,
    Percent,
    PrinterColumn,
    PveNodeName,
    Recommendation,
    RecordedAction,
    StatusModel,
    Timestamp,
    Vmid,
    kube_schema,
)

DEFAULT_PVE_PORT = 8006
"""Port of pveproxy, used when the endpoint URL has none."""


class UsageMetric(StrEnum):
    """Which usage figure of a node the thresholds compare."""

    MEMORY = "memory"
    CPU = "cpu"
    DISK = "disk"
    MAX = "max"
    """The highest of the three, in percent."""
    WEIGHTED = "weighted"
    """A weighted mean of the three (weights in thresholds.metricWeights), in percent."""


class BalancingObjective(StrEnum):
    """What balancing aims for once every node is under thresholds.migrateAbovePercent."""

    RELIEVE = "Relieve"
    """Only bring nodes back under migrateAbovePercent (and drain maintenance nodes), with the fewest
    migrations; nodes inside the band are left alone."""

    LEVEL = "Level"
    """Relieve first, then lower the pool's peak usage with few migrations (each one a restart of a
    running CT): moves off the hottest node while a move still lowers it by minGainPercent."""


class AutomationMode(StrEnum):
    """How far the operator acts on its own."""

    AUTOMATIC = "Automatic"
    """Decide and act."""

    RECOMMEND = "Recommend"
    """Decide and list the actions in ``status.recommendations``, but change nothing."""

    OFF = "Off"
    """Neither decide nor act."""


# ---------------------------------------------------------------------------------------------
# Spec

_ENDPOINT_IS_HTTPS = CelRule(
    rule=(
        "isURL(self) && url(self).getScheme() == 'https' && url(self).getHostname() != ''"
        " && !self.contains('@') && !self.contains('?') && !self.contains('#')"
    ),
    message="endpoint must be an https:// URL with a host and no user, query or fragment, "
    "e.g. https://pve.example.com:8006",
)


class EndpointAddress(NamedTuple):
    """Where the Proxmox VE API listens, split for clients that take host and port separately."""

    host: str
    """Host name or IP address (IPv6 without brackets)."""

    port: int
    """TCP port; 8006 when the URL has none."""

    path_prefix: str
    """Path before ``/api2/json`` when pveproxy sits behind a reverse proxy under a path; else ''."""


API_PATH = "/api2/json"
"""Path of the JSON API under the endpoint; clients append it, so an endpoint that ends in it loses it."""


def parse_endpoint(endpoint: str) -> EndpointAddress:
    """Split an endpoint URL (``https://pve.example.com:8006``) into host, port and path prefix.

    An endpoint copied with the API path (``https://pve:8006/api2/json``) means the same as without it: the
    prefix drops a trailing ``/api2/json``, which every client appends itself.

    Raises ``ValueError`` with the rule's message when the URL is not a plain https URL.
    """
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{_ENDPOINT_IS_HTTPS.message} ({error})") from None
    _ENDPOINT_IS_HTTPS.require(
        parts.scheme == "https"
        and bool(parts.hostname)
        and not parts.username
        and not parts.query
        and not parts.fragment
        and "?" not in endpoint
        and "#" not in endpoint
        and not any(c.isspace() for c in endpoint),
        f"got {endpoint!r}",
    )
    assert parts.hostname is not None
    return EndpointAddress(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PVE_PORT,
        path_prefix=parts.path.rstrip("/").removesuffix(API_PATH).rstrip("/"),
    )


_ONE_CA_SOURCE = CelRule(
    rule="!(has(self.caSecretRef) && has(self.caConfigMapRef))",
    message="set at most one of tls.caSecretRef and tls.caConfigMapRef",
)
_ONE_TRUST_MODE = CelRule(
    rule="!(has(self.fingerprintSHA256) && (self.insecureSkipVerify || has(self.caSecretRef) || "
    "has(self.caConfigMapRef)))",
    message="tls.fingerprintSHA256 pins the certificate by itself: do not combine it with insecureSkipVerify "
    "or a CA reference",
)
_NO_SKIP_WITH_CA = CelRule(
    rule="!(self.insecureSkipVerify && (has(self.caSecretRef) || has(self.caConfigMapRef)))",
    message="tls.insecureSkipVerify cannot be combined with a CA reference: "
    "either verify against the CA or skip verification",
)


class TLSConfig(ApiModel):
    """How the operator verifies the Proxmox VE API's certificate.

    Without a CA reference the system trust store is used, which fails for Proxmox VE's
    self-signed certificates: reference the cluster CA (``/etc/pve/pve-root-ca.pem`` on any node).
    """

    model_config = ConfigDict(json_schema_extra=kube_schema(_ONE_CA_SOURCE, _NO_SKIP_WITH_CA, _ONE_TRUST_MODE))

    insecure_skip_verify: bool = False
    """Skip certificate verification. Only for throwaway labs: anyone on the path can read the API token."""

    ca_secret_ref: KeyReference | None = None
    """Secret key holding the PEM CA bundle that signed the API's certificate (default key ``ca.crt``)."""

    ca_config_map_ref: KeyReference | None = None
    """ConfigMap key holding the PEM CA bundle that signed the API's certificate (default key ``ca.crt``)."""

    fingerprint_sha256: str | None = Field(
        None,
        alias="fingerprintSHA256",
        max_length=95,
        pattern=r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{64}$",
    )
    """SHA-256 fingerprint of the API's certificate, as Proxmox VE shows it (``AB:CD:...``, 32 pairs;
    Datacenter > node > Certificates, or ``pvenode cert info``): the certificate is trusted exactly when it
    has this fingerprint, whoever signed it. The safe alternative to insecureSkipVerify for self-signed
    certificates; a certificate renewal changes it."""

    @model_validator(mode="after")
    def _one_trust_source(self) -> Self:
        _ONE_CA_SOURCE.require(not (self.ca_secret_ref is not None and self.ca_config_map_ref is not None))
        has_ca = self.ca_secret_ref is not None or self.ca_config_map_ref is not None
        _NO_SKIP_WITH_CA.require(not (self.insecure_skip_verify and has_ca))
        _ONE_TRUST_MODE.require(not (self.fingerprint_sha256 and (self.insecure_skip_verify or has_ca)))
        return self

    @property
    def ca_reference(self) -> tuple[str, KeyReference] | None:
        """``("Secret" | "ConfigMap", reference)`` of the CA bundle, or None for the system trust store."""
        if self.ca_secret_ref is not None:
            return "Secret", self.ca_secret_ref
        if self.ca_config_map_ref is not None:
            return "ConfigMap", self.ca_config_map_ref
        return None


HOSTNAME_LABEL = "kubernetes.io/hostname"
"""The label every pool node has implicitly, set to its name (``topologyKey: kubernetes.io/hostname``
spreads over single nodes, as it does over Kubernetes nodes)."""

_LABEL_KEYS = CelRule(
    rule=f"self.all(k, k.matches('{LABEL_KEY}'))",
    message="labels keys must be Kubernetes label keys: an optional DNS subdomain prefix and '/', then letters, "
    "digits, '-', '_' or '.' starting and ending with a letter or digit, e.g. topology.pve/rack",
)
_HOSTNAME_LABEL_IMPLICIT = CelRule(
    rule=f"!('{HOSTNAME_LABEL}' in self)",
    message=f"labels must not set {HOSTNAME_LABEL}: every node has it implicitly, set to its name",
)


class PoolNode(ApiModel):
    """A Proxmox VE node the operator may place CTs on."""

    name: PveNodeName
    """Node name as Proxmox VE knows it (``pvecm nodes``), e.g. ``srv-px1``."""

    weight: int = Field(1, ge=0, le=1000)
    """Placement weight: a node of weight 2 gets twice the CTs of a node of weight 1. 0 places nothing new
    on the node but leaves its CTs where they are."""

    maintenance: bool = False
    """Drain the node: migrate the operator's CTs away and place nothing new on it."""

    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=32, json_schema_extra=kube_schema(_LABEL_KEYS, _HOSTNAME_LABEL_IMPLICIT)
    )
    """Topology labels of the node (Kubernetes label syntax), e.g. {topology.pve/rack: r1, zone: a}: the
    domains of a ContainerPolicy's placement.topologySpreadConstraints and what its placement.nodeAffinity
    matches. Every node also has kubernetes.io/hostname set to its name, implicitly."""

    @field_validator("labels")
    @classmethod
    def _no_hostname_label(cls, labels: dict[str, str]) -> dict[str, str]:
        _HOSTNAME_LABEL_IMPLICIT.require(HOSTNAME_LABEL not in labels)
        return labels


_NODE_WEIGHT_POSITIVE = CelRule(
    # An empty list is minItems' to report; saying "no weight above 0" too would list it twice.
    rule="size(self) == 0 || self.exists(n, n.weight > 0)",
    message="at least one node in nodes must have a weight above 0",
)

_RESTORE_BELOW_MIGRATE = CelRule(
    rule="self.restoreBelowPercent < self.migrateAbovePercent",
    message="thresholds.restoreBelowPercent must be less than thresholds.migrateAbovePercent",
    field_path=".restoreBelowPercent",
)
_MIGRATE_BELOW_OFFLOAD = CelRule(
    rule="self.migrateAbovePercent < self.offloadAbovePercent",
    message="thresholds.migrateAbovePercent must be less than thresholds.offloadAbovePercent",
    field_path=".migrateAbovePercent",
)
_CEILING_NOT_ABOVE_OFFLOAD = CelRule(
    rule="self.creationCeilingPercent <= self.offloadAbovePercent",
    message="thresholds.creationCeilingPercent must not exceed thresholds.offloadAbovePercent",
    field_path=".creationCeilingPercent",
)


_WEIGHTS_ONLY_FOR_WEIGHTED = CelRule(
    rule="!has(self.metricWeights) || self.metric == 'weighted'",
    message="thresholds.metricWeights is used only with thresholds.metric weighted",
    field_path=".metricWeights",
)
_SOME_WEIGHT = CelRule(
    rule="self.memory + self.cpu + self.disk > 0",
    message="thresholds.metricWeights must give at least one of memory, cpu, disk a weight above 0",
)


class MetricWeights(ApiModel):
    """How much each resource counts in ``metric: weighted``: the node's figure is
    ``(memory * mem% + cpu * cpu% + disk * disk%) / (memory + cpu + disk)``. Only the ratios matter:
    ``{memory: 100, cpu: 50}`` counts memory twice as much as CPU. PVE 9's dynamic CRS uses CPU and memory
    equally (the default here). CPU is the node's average over the last sustainedSamples samples, not one
    sample, so a short burst does not move CTs."""

    model_config = ConfigDict(json_schema_extra=kube_schema(_SOME_WEIGHT))

    memory: int = Field(100, ge=0, le=100)
    """Weight of memory use."""

    cpu: int = Field(100, ge=0, le=100)
    """Weight of CPU use (averaged over the sample window)."""

    disk: int = Field(0, ge=0, le=100)
    """Weight of root disk use."""

    @model_validator(mode="after")
    def _some_weight(self) -> Self:
        _SOME_WEIGHT.require(self.memory + self.cpu + self.disk > 0)
        return self


class PressureMetric(StrEnum):
    """Which pressure stall figure of a node the pressure trigger reads (Proxmox VE 9 and later)."""

    MEMORY_PRESSURE = "MemoryPressure"
    """``pressurememorysome`` of the node's RRD: share of time at least one task waited for memory."""
    CPU_PRESSURE = "CpuPressure"
    """``pressurecpusome`` of the node's RRD: share of time at least one runnable task waited for a CPU."""


class PressureThreshold(ApiModel):
    """A trigger on the kernel's pressure stall information (PSI), which Proxmox VE 9 records per node:
    a node whose tasks stall above ``abovePercent`` of the time for sustainedSamples samples has CTs
    migrated away even while its usage is under migrateAbovePercent, until its use of the stalled
    resource (CPU or memory) is ``reliefPercent`` points lower; nodes under pressure receive no CTs.
    Utilisation says how full a node is, pressure whether its workloads suffer (ProxLB's psi mode and
    cv4pve-admin's DRS offer the same signal). Nodes of Proxmox VE 8 do not record pressure: the pool
    reports it and the trigger does nothing there."""

    metric: PressureMetric
    """MemoryPressure or CpuPressure."""

    above_percent: int = Field(20, ge=1, le=100)
    """Pressure (PSI "some", one-minute average, percent of time stalled) above which a node counts as
    under pressure."""

    relief_percent: int = Field(10, ge=1, le=100)
    """How many percentage points of its use of the stalled resource (CPU for CpuPressure, memory for
    MemoryPressure) a node under sustained pressure sheds per decision; fresh samples then decide again."""


class Thresholds(ApiModel):
    """When a node counts as loaded. All figures are percent of the node's capacity in ``metric``.

    The order restoreBelow < migrateAbove < offloadAbove keeps the operator from undoing its own
    work: a CT is offloaded above offloadAbove, and only restored once the node is well below the
    level that would trigger migrations again.
    """

    model_config = ConfigDict(
        json_schema_extra=kube_schema(
            _RESTORE_BELOW_MIGRATE, _MIGRATE_BELOW_OFFLOAD, _CEILING_NOT_ABOVE_OFFLOAD, _WEIGHTS_ONLY_FOR_WEIGHTED
        )
    )

    metric: UsageMetric = UsageMetric.MEMORY
    """Usage figure compared with the thresholds and balanced by Relieve and Level: memory, cpu, disk, max
    (the highest of the three) or weighted (a weighted mean, weights in metricWeights)."""

    metric_weights: MetricWeights | None = None
    """With metric weighted: how much memory, CPU and disk each count (default memory 100, cpu 100,
    disk 0). Not allowed with another metric."""

    pressure: PressureThreshold | None = None
    """Optional: also relieve nodes whose workloads stall on memory or CPU (Proxmox VE 9 pressure stall
    information), whatever their usage."""

    creation_ceiling_percent: int = Field(80, ge=1, le=100)
    """No new CT is placed on a node whose usage is at or above this, in percent."""

    migrate_above_percent: int = Field(75, ge=1, le=100)
    """A node above this (for sustainedSamples samples) has CTs migrated away, in percent."""

    offload_above_percent: int = Field(90, ge=1, le=100)
    """A node above this (for sustainedSamples samples) has its lowest-priority CTs stopped, in percent."""

    restore_below_percent: int = Field(60, ge=0, le=100)
    """Offloaded CTs are started again once a node stays below this, in percent."""

    sustained_samples: int = Field(3, ge=1, le=60)
    """Consecutive samples (one per balancing.intervalSeconds) a threshold must be crossed before acting."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _RESTORE_BELOW_MIGRATE.require(
            self.restore_below_percent < self.migrate_above_percent,
            f"{self.restore_below_percent} >= {self.migrate_above_percent}",
        )
        _MIGRATE_BELOW_OFFLOAD.require(
            self.migrate_above_percent < self.offload_above_percent,
            f"{self.migrate_above_percent} >= {self.offload_above_percent}",
        )
        _CEILING_NOT_ABOVE_OFFLOAD.require(
            self.creation_ceiling_percent <= self.offload_above_percent,
            f"{self.creation_ceiling_percent} > {self.offload_above_percent}",
        )
        _WEIGHTS_ONLY_FOR_WEIGHTED.require(
            self.metric_weights is None or self.metric is UsageMetric.WEIGHTED, f"metric is {self.metric.value}"
        )
        return self


class BalancingSpec(ApiModel):
    """Migration of CTs off nodes above thresholds.migrateAbovePercent."""

    mode: AutomationMode = AutomationMode.AUTOMATIC
    """Automatic migrates; Recommend lists the migrations in status.recommendations; Off does neither."""

    interval_seconds: int = Field(30, ge=5, le=3600)
    """Seconds between two samples of node usage (and two balancing decisions)."""

    max_concurrent_migrations: int = Field(1, ge=1, le=16)
    """Migrations in flight at once across the pool."""

    cooldown_seconds: int = Field(1800, ge=0, le=604800)
    """Seconds a CT stays put after it was migrated, offloaded or restored, so it does not bounce."""

    min_improvement_percent: int = Field(10, ge=0, le=100)
    """When the planner refines its moves to lower the peak further (after every node is relieved), it
    re-targets a move only if the new target narrows the usage gap between source and target by at least
    this many percentage points, so changes that barely help are not made. Moves that bring a node back
    under migrateAbovePercent are never held back by it."""

    objective: BalancingObjective = BalancingObjective.RELIEVE
    """Relieve migrates only off nodes above migrateAbovePercent; Level also evens out the nodes under it
    (lowers the pool's peak), at the price of more restart migrations."""

    min_gain_percent: int = Field(2, ge=0, le=100)
    """Objective Level: a levelling move must narrow the usage gap between its source (the hottest node)
    and its target by at least this many percentage points, so CTs too small to matter are not moved."""

    level_tolerance_percent: int = Field(5, ge=0, le=100)
    """Objective Level: the plan stops at its first move whose peak is within this many percent of the
    lowest peak the planner found (5: at most 1.05 times it), trading the last bit of levelling for fewer
    restarts; a pool already that close plans nothing."""


class OffloadSpec(ApiModel):
    """Stopping the lowest-priority CTs on nodes above thresholds.offloadAbovePercent, and starting them
    again once a node (their own, else another one, moving them while stopped) stays below
    thresholds.restoreBelowPercent with them."""

    mode: AutomationMode = AutomationMode.AUTOMATIC
    """Automatic offloads and restores; Recommend lists them in status.recommendations; Off does neither."""


class ProxmoxServerPoolSpec(ApiModel):
    """A Proxmox VE cluster, the nodes the operator may use, and the rules for their load."""

    endpoint: str = Field(max_length=2048, json_schema_extra=kube_schema(_ENDPOINT_IS_HTTPS))
    """URL of the Proxmox VE API (any node of the cluster): https://host[:port], port 8006 when omitted. A
    trailing /api2/json is ignored (the operator appends it)."""

    credentials_secret_ref: LocalObjectReference
    """Secret (same namespace) with an API token in keys ``tokenId`` (``user@realm!name``) and
    ``tokenSecret``, or a user in keys ``username`` (``user@realm``) and ``password``. A token with
    privilege separation and a least-privilege role is recommended."""

    tls: TLSConfig = Field(default_factory=TLSConfig)
    """How the API's certificate is verified."""

    nodes: tuple[PoolNode, ...] = Field(
        max_length=64,
        # minItems is checked by `_at_least_one_node`: pydantic's min_length on a tuple also fires when
        # an item is invalid ("at least 1 item after validation, not 0"), which misleads.
        json_schema_extra={**kube_schema(_NODE_WEIGHT_POSITIVE, list_map_keys=("name",)), "minItems": 1},
    )
    """Nodes the operator may place CTs on, each with a placement weight. Names must be unique."""

    thresholds: Thresholds = Field(default_factory=Thresholds)
    """When a node counts as loaded, in percent of the node's capacity in the chosen metric. The order
    restoreBelowPercent < migrateAbovePercent < offloadAbovePercent keeps the operator from undoing its
    own work, and creationCeilingPercent <= offloadAbovePercent keeps new CTs from causing offloads."""

    balancing: BalancingSpec = Field(default_factory=BalancingSpec)
    """Migration of CTs off loaded nodes."""

    offload: OffloadSpec = Field(default_factory=OffloadSpec)
    """Stopping low-priority CTs on overloaded nodes, and starting them again later."""

    @field_validator("endpoint")
    @classmethod
    def _https_endpoint(cls, endpoint: str) -> str:
        parse_endpoint(endpoint)
        return endpoint

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, nodes: tuple[PoolNode, ...]) -> tuple[PoolNode, ...]:
        if not nodes:
            raise ValueError("nodes must have at least 1 item: the pool needs a node to place CTs on")
        names = [node.name for node in nodes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"node names in nodes must be unique: {', '.join(duplicates)} appear more than once")
        _NODE_WEIGHT_POSITIVE.require(any(node.weight > 0 for node in nodes))
        return nodes

    @property
    def address(self) -> EndpointAddress:
        """Host, port and path prefix of ``endpoint``."""
        return parse_endpoint(self.endpoint)

    def node(self, name: str) -> PoolNode | None:
        """The pool's entry for a node, or None if the node is not in the pool."""
        return next((node for node in self.nodes if node.name == name), None)

    @property
    def node_names(self) -> tuple[str, ...]:
        """Names of the pool's nodes, in spec order."""
        return tuple(node.name for node in self.nodes)


# ---------------------------------------------------------------------------------------------
# Credentials (the contents of credentialsSecretRef)


@dataclass(frozen=True)
class TokenCredentials:
    """A Proxmox VE API token. ``repr`` never shows the secret."""

    token_id: str
    """``user@realm!tokenname``."""

    token_secret: str = field(repr=False)
    """The token's UUID secret."""

    @property
    def user(self) -> str:
        """``user@realm`` part of the token ID."""
        return self.token_id.split("!", 1)[0]

    @property
    def token_name(self) -> str:
        """``tokenname`` part of the token ID."""
        return self.token_id.split("!", 1)[1]


@dataclass(frozen=True)
class PasswordCredentials:
    """A Proxmox VE user and password (ticket login). ``repr`` never shows the password."""

    username: str
    """``user@realm``."""

    password: str = field(repr=False)


# What PVE accepts (pve-access-control ``PVE::Auth::Plugin``: ``pve-userid``, ``pve-tokenid``), and what
# can travel in an HTTP header or form: a value with a line break or a non-ASCII character in a
# token would either break the Authorization header (and the error would quote it) or never match.
_REALM = r"[A-Za-z][A-Za-z0-9\.\-_]+"
_USERID = re.compile(rf"[^\s:/]+@{_REALM}")
_TOKENID = re.compile(rf"[^\s:/]+@{_REALM}![A-Za-z][A-Za-z0-9\.\-_]+")
_TOKEN_SECRET = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces (PVE's secrets are UUIDs)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_credential(key: str, value: str, rule: re.Pattern[str] | None, describe: str) -> None:
    """Raise ``ValueError`` naming ``key`` and the rule (never the value) when ``value`` breaks it."""
    if _CONTROL.search(value):
        raise ValueError(f"{key} in the credentials Secret contains a line break or another control character")
    if rule is not None and not rule.fullmatch(value):
        raise ValueError(f"{key} in the credentials Secret must be {describe}")


def credentials_from_secret(data: Mapping[str, str]) -> TokenCredentials | PasswordCredentials:
    """Read credentials from a Secret's data (already base64-decoded), as credentialsSecretRef documents.

    Raises ``ValueError`` naming the keys that are missing or malformed (never their values).
    """
    has_token = "tokenId" in data or "tokenSecret" in data
    has_password = "username" in data or "password" in data
    if has_token and has_password:
        raise ValueError("the credentials Secret must hold either tokenId+tokenSecret or username+password, not both")
    if has_token:
        missing = [key for key in ("tokenId", "tokenSecret") if not data.get(key, "").strip()]
        if missing:
            raise ValueError(f"the credentials Secret has tokenId/tokenSecret but no value for {', '.join(missing)}")
        token_id, token_secret = data["tokenId"].strip(), data["tokenSecret"].strip()
        _check_credential("tokenId", token_id, _TOKENID, "user@realm!tokenname (no spaces, colons or slashes)")
        _check_credential("tokenSecret", token_secret, _TOKEN_SECRET, "printable ASCII without spaces (a UUID)")
        return TokenCredentials(token_id=token_id, token_secret=token_secret)
    if has_password:
        missing = [key for key in ("username", "password") if not data.get(key, "")]
        if missing:
            raise ValueError(f"the credentials Secret has username/password but no value for {', '.join(missing)}")
        username = data["username"].strip()
        _check_credential("username", username, _USERID, "user@realm, e.g. root@pam")
        _check_credential("password", data["password"], None, "")
        return PasswordCredentials(username=username, password=data["password"])
    raise ValueError("the credentials Secret must hold keys tokenId and tokenSecret, or username and password")


# ---------------------------------------------------------------------------------------------
# Status


class NodeStatus(StatusModel):
    """What the operator last saw of one node of the pool."""

    name: str = Field(max_length=63)
    """Node name."""

    online: bool = False
    """Whether Proxmox VE reports the node online."""

    cpu_percent: Percent | None = None
    """CPU usage of the whole node, in percent of its cores (absent while offline)."""

    memory_percent: Percent | None = None
    """Memory usage of the whole node, in percent of its RAM (absent while offline)."""

    disk_percent: Percent | None = None
    """Disk usage in percent (absent while offline): of the node's local storages that hold CT root disks,
    or of its root file system when it has none."""

    managed_containers: int = Field(0, ge=0)
    """CTs of this pool's policies on the node, in any state."""


class InFlightOperation(StatusModel):
    """A migration, offload or restore the operator has started and not yet seen finish.

    Written to status *before* the operator acts, so an operator restarted mid-action (crash, eviction)
    finds it and finishes or repairs it: a CT it stopped for a migration is never left stopped.
    """

    vmid: Vmid
    """VMID of the CT."""

    action: ActionKind
    """Migrate, Offload or Restore."""

    policy: str | None = Field(None, max_length=253)
    """ContainerPolicy the CT belongs to."""

    source_node: str = Field(max_length=63)
    """Node the CT was on when the action started."""

    target_node: str | None = Field(None, max_length=63)
    """Node the CT is going to (Migrate, Restore)."""

    was_running: bool = False
    """Whether the CT was running when the action started (a Migrate must leave it running again)."""

    started_at: Timestamp
    """When the action started."""

    reason: str | None = Field(None, max_length=1024)
    """Why the action was planned (told again in the event when it ends)."""

    upid: str | None = Field(None, max_length=512)
    """Proxmox VE task the action is waiting for (a migration; an offload's shutdown; a restore's copy, then
    its start), looked at once per sample until it ends: the pool's cycle never waits for it."""


class OffloadedContainer(StatusModel):
    """What an offloaded CT used when it was stopped: restore counts it at this size."""

    vmid: Vmid
    """VMID of the CT."""

    node: str = Field(max_length=63)
    """Node the CT was stopped on."""

    memory_used_bytes: int = Field(ge=0)
    """Memory the CT used just before it was stopped, in bytes."""

    cpu_used_fraction: float = Field(0.0, ge=0)
    """CPU the CT used just before it was stopped, as a fraction of its own cores."""

    offloaded_at: Timestamp
    """When it was stopped."""


class HaStatus(StatusModel):
    """The operator's CTs that are HA resources of Proxmox VE, and who balances them."""

    managed_containers: int = Field(0, ge=0)
    """CTs of the pool's policies that are HA resources (their start, stop and migrate go through PVE's HA
    manager; the operator waits until the CT reaches the requested state)."""

    in_rules: int = Field(0, ge=0)
    """Of those, the CTs a PVE HA rule names (node or resource affinity, or an HA group): PVE places
    them, the operator never migrates them."""

    crs_auto_rebalance: bool = False
    """PVE's CRS auto-rebalance is on (datacenter.cfg crs: ha-auto-rebalance=1): PVE balances its HA
    resources, so the operator does not migrate its HA-managed CTs (it still offloads and restores them)."""

    message: str = Field("", max_length=1024)
    """The above in a sentence."""


class ProxmoxServerPoolStatus(StatusModel):
    """Observed state of the pool, written by the operator."""

    observed_generation: int | None = Field(None, ge=0)
    """The metadata.generation of the spec this status reflects."""

    conditions: tuple[Condition, ...] = Field((), max_length=16, json_schema_extra=CONDITIONS_SCHEMA)
    """Ready (the API is reachable and the nodes are known), Progressing, Degraded."""

    last_handled_configuration: str | None = Field(None, max_length=262144)
    """The spec the operator last acted on (JSON, written by Kopf). Kept in status, not in an annotation,
    so that ``kubectl replace`` or a GitOps tool rewriting metadata does not look like a new object."""

    pve_version: str | None = Field(None, max_length=64)
    """Proxmox VE version the API reports, e.g. 9.1.2."""

    node_summary: str | None = Field(None, max_length=32)
    """``<online>/<in the pool>`` nodes, e.g. ``2/2`` (the Nodes column of kubectl get)."""

    nodes: tuple[NodeStatus, ...] = Field((), max_length=64, json_schema_extra=kube_schema(list_map_keys=("name",)))
    """Usage of each node of the pool at the last sample."""

    last_sample_time: Timestamp | None = None
    """When node usage was last sampled."""

    ha: HaStatus | None = None
    """Present when CTs of the pool's policies are HA resources of Proxmox VE: how they are handled."""

    recommendations: tuple[Recommendation, ...] = Field((), max_length=MAX_RECOMMENDATIONS)
    """Actions the operator would take now if balancing/offload mode were Automatic (mode Recommend)."""

    recent_actions: tuple[RecordedAction, ...] = Field((), max_length=MAX_RECENT_ACTIONS)
    """The last migrations, offloads and restores on the pool's nodes, oldest first."""

    in_flight: tuple[InFlightOperation, ...] = Field(
        (), max_length=64, json_schema_extra=kube_schema(list_map_keys=("vmid",))
    )
    """Migrations, offloads and restores under way (the operator's journal; empty when idle)."""

    offloaded: tuple[OffloadedContainer, ...] = Field(
        (), max_length=1000, json_schema_extra=kube_schema(list_map_keys=("vmid",))
    )
    """CTs the operator stopped to relieve a node, with the usage they had, until they are restored."""


_READY = '.status.conditions[?(@.type=="Ready")]'

PROXMOX_SERVER_POOL = CustomResource(
    kind="ProxmoxServerPool",
    plural="proxmoxserverpools",
    singular="proxmoxserverpool",
    short_names=("pvepool", "pvepools"),
    description="ProxmoxServerPool is one Proxmox VE cluster: how to reach it, the nodes the operator may "
    "place CTs on with their weights, and the thresholds and balancing rules for those nodes.",
    spec_model=ProxmoxServerPoolSpec,
    status_model=ProxmoxServerPoolStatus,
    printer_columns=(
        PrinterColumn("Endpoint", "string", ".spec.endpoint", "URL of the Proxmox VE API"),
        PrinterColumn("Nodes", "string", ".status.nodeSummary", "Nodes online / nodes in the pool"),
        PrinterColumn("Mode", "string", ".spec.balancing.mode", "Balancing: Automatic, Recommend or Off"),
        PrinterColumn("Ready", "string", f"{_READY}.status", "API reachable and nodes known"),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the pool was created"),
        PrinterColumn("Offload", "string", ".spec.offload.mode", "Offload mode", priority=1),
        PrinterColumn("Version", "string", ".status.pveVersion", "Proxmox VE version", priority=1),
        PrinterColumn("Reason", "string", f"{_READY}.reason", "Reason of the Ready condition", priority=1),
    ),
)
"""The ProxmoxServerPool kind: names, columns and subresources of its CRD."""
