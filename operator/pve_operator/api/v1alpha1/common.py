"""Building blocks shared by both kinds of ``pve.ctoperator.io/v1alpha1``.

What lives here:

* the base models (``ApiModel`` for specs, ``StatusModel`` for status) with the wire conventions:
  camelCase JSON names, snake_case Python attributes, attribute docstrings as schema descriptions;
* ``CelRule``: a CEL rule written once and used twice, as ``x-kubernetes-validations`` in the CRD
  and as the message of the matching pydantic check, so the API server and the operator reject the
  same input with the same words;
* references to Secrets and ConfigMaps, the ``metav1.Condition`` shape and ``set_condition``;
* the records of planned and executed actions shown in status;
* ``CustomResource``: the names, printer columns and subresources a kind's CRD declares.

Pure data and pure functions only: no Kubernetes client, no clock reads (``now`` is an argument).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "pve.ctoperator.io"
"""API group of every kind in this package."""

VERSION = "v1alpha1"
"""API version of the kinds in this package (the storage version)."""

API_VERSION = f"{GROUP}/{VERSION}"
"""``apiVersion`` of the objects: ``pve.ctoperator.io/v1alpha1``."""

CATEGORY = "proxmox"
"""CRD category of both kinds: ``kubectl get proxmox`` lists pools and policies together."""

# Regular expressions used both by pydantic (Rust regex) and by the API server (Go RE2, inside
# `pattern` and CEL `matches()`): no look-around, no back-references, and no backslashes so they
# can sit inside CEL string literals unchanged.
DNS1123_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1123 label (RFC 1123 host name label), at most 63 characters: ``ct-web-01``."""

DNS1123_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain, the form of Kubernetes object names: ``lab``, ``pve.credentials``."""

CONFIG_KEY = "^[-._a-zA-Z0-9]+$"
"""A key of a Secret's or ConfigMap's data: ``ca.crt``, ``tokenSecret``."""

LABEL_KEY = (
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
"""A Kubernetes label key (a qualified name): an optional DNS subdomain prefix and ``/``, then a name of
letters, digits, ``-``, ``_``, ``.`` starting and ending with a letter or digit: ``topology.pve/rack``, ``zone``."""

LABEL_VALUE = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
"""A Kubernetes label value: empty, or letters, digits, ``-``, ``_``, ``.`` starting and ending with a letter
or digit, at most 63 characters: ``r1``, ``eu-west-1a``."""

LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY)]
"""A label key; 317 = a 253-character prefix, ``/`` and a 63-character name."""

LabelValue = Annotated[
    str,
    Field(
        max_length=63,
        pattern=LABEL_VALUE,
        description="The label's value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a "
        "letter or digit (or empty).",
    ),
]

_CONDITION_TYPE = (
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
_CONDITION_REASON = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

MAX_VMID = 999_999_999
"""Largest VMID Proxmox VE accepts (``pve-vmid``: 100..999999999)."""

MIN_VMID = 100
"""Smallest VMID Proxmox VE accepts; 0..99 are reserved."""


# ---------------------------------------------------------------------------------------------
# CEL rules and schema extras


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry, and the message pydantic raises for the same rule.

    ``rule`` is evaluated by the API server with ``self`` bound to the schema node the rule is
    attached to (and ``oldSelf`` on updates for transition rules). ``message`` is what both the API
    server and the pydantic check report, so it names the fields involved.
    """

    rule: str
    """The CEL expression; true means valid."""

    message: str
    """Human-readable error, naming the fields and the rule (shown after the field path)."""

    field_path: str | None = None
    """Path (from ``self``, e.g. ``.replicas``) the API server reports the error under."""

    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", None] = None
    """Error type the API server reports; None means its default, FieldValueInvalid."""

    def to_schema(self) -> dict[str, str]:
        """The rule as an ``x-kubernetes-validations`` item."""
        item = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            item["fieldPath"] = self.field_path
        if self.reason is not None:
            item["reason"] = self.reason
        return item

    def require(self, holds: bool, detail: str = "") -> None:
        """Raise ``ValueError(message)`` (with an optional detail) when ``holds`` is false.

        Used by the pydantic validators that mirror this rule, so the operator rejects what the API
        server rejects, with the same message.
        """
        if not holds:
            raise ValueError(f"{self.message} ({detail})" if detail else self.message)


def kube_schema(
    *rules: CelRule,
    list_map_keys: Sequence[str] = (),
    list_type: Literal["atomic", "set", "map"] | None = None,
) -> dict[str, Any]:
    """Kubernetes schema extensions for ``Field(json_schema_extra=...)`` or a model's config.

    ``list_map_keys`` makes an array a list-map: the API server rejects two items with the same
    keys ("Duplicate value") and server-side apply merges items by key. ``list_type="set"`` is the
    Kubernetes spelling of ``uniqueItems``.
    """
    extra: dict[str, Any] = {}
    if rules:
        extra["x-kubernetes-validations"] = [rule.to_schema() for rule in rules]
    if list_map_keys:
        extra["x-kubernetes-list-type"] = "map"
        extra["x-kubernetes-list-map-keys"] = list(list_map_keys)
    elif list_type is not None:
        extra["x-kubernetes-list-type"] = list_type
    return extra


def immutable(field_name: str, advice: str) -> CelRule:
    """A transition rule that forbids changing a field once set (``self == oldSelf``)."""
    return CelRule(
        rule="self == oldSelf",
        message=f"{field_name} is immutable: {advice}",
        reason="FieldValueForbidden",
    )


# ---------------------------------------------------------------------------------------------
# Base models


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, snake_case in Python, unknown fields refused.

    The operator validates the ``spec`` dicts Kopf hands it with these models, so a field the API
    server would never store (a typo in a unit test, a field from a newer CRD than this operator
    knows) is reported instead of silently ignored.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=True,
    )

    def to_dict(self, *, exclude_none: bool = True) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON types (timestamps as RFC 3339 strings).

        Optional fields that are unset are left out, as the API server stores them.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)


class StatusModel(ApiModel):
    """Base of the status models: like ``ApiModel`` but tolerant of fields it does not know.

    Status is written by the operator; an operator reading a status written by a newer version of
    itself ignores the fields it does not know instead of failing the whole reconciliation.
    """

    model_config = ConfigDict(extra="ignore")


TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""RFC 3339 in UTC with whole seconds, as Kubernetes writes ``metav1.Time``: every time in status."""


def format_timestamp(value: datetime) -> str:
    """``value`` as status writes times (``2026-12-03T07:41:17Z``)."""
    return value.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def format_epoch(epoch: float) -> str:
    """Epoch seconds as status writes times."""
    return format_timestamp(datetime.fromtimestamp(epoch, UTC))


def parse_epoch(value: object) -> float | None:
    """Epoch seconds of a time status wrote, or None when ``value`` is empty or not such a time."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


Timestamp = Annotated[AwareDatetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]
"""A point in time, timezone-aware; on the wire RFC 3339 in UTC with seconds (``metav1.Time``)."""


def describe_validation_error(error: ValidationError, *, root: str = "spec") -> str:
    """One line per problem, ``<root>.<field path>: <message>``, for conditions and events.

    Example: ``spec.thresholds: restoreBelowPercent must be less than migrateAbovePercent``.
    """
    lines = []
    for problem in error.errors(include_url=False):
        path = root
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


# ---------------------------------------------------------------------------------------------
# References to other objects (always in the namespace of the referring object)


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace as the referring object."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the object (a DNS-1123 subdomain)."""


class KeyReference(ApiModel):
    """One key of a Secret or ConfigMap in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """Name of the Secret or ConfigMap."""

    key: str = Field("ca.crt", min_length=1, max_length=253, pattern=CONFIG_KEY)
    """Key within the object's data that holds the value (a PEM bundle for CAs)."""


# ---------------------------------------------------------------------------------------------
# Conditions (metav1.Condition)


class ConditionStatus(StrEnum):
    """Status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """The condition types the operator sets on both kinds (Argo CD's health check reads them)."""

    READY = "Ready"
    """Summary: the object is reconciled and its Proxmox side matches it."""

    PROGRESSING = "Progressing"
    """True while the operator is changing things (creating, migrating, offloading, restoring)."""

    DEGRADED = "Degraded"
    """True while something persistently fails (Proxmox unreachable, invalid spec, refused work)."""


class ConditionReason(StrEnum):
    """Every reason the operator writes into a condition, on either kind (docs/troubleshooting.md
    explains each; a unit test keeps the two lists equal)."""

    # -- reaching Proxmox VE and reading the pool's configuration (both kinds) --
    CONNECTED = "Connected"
    UNREACHABLE = "Unreachable"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    NOT_PROXMOX = "NotProxmox"
    PROXMOX_ERROR = "ProxmoxError"
    INTERNAL_ERROR = "InternalError"
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    SECRET_FORBIDDEN = "SecretForbidden"
    CONFIG_MAP_FORBIDDEN = "ConfigMapForbidden"
    INVALID_CREDENTIALS = "InvalidCredentials"
    CA_NOT_FOUND = "CANotFound"
    OWNERSHIP_KEY_UNAVAILABLE = "OwnershipKeyUnavailable"
    TAGS_NOT_ALLOWED = "TagsNotAllowed"
    FEATURES_NOT_ALLOWED = "FeaturesNotAllowed"
    # -- the pool's nodes --
    AS_EXPECTED = "AsExpected"
    NODE_OFFLINE = "NodeOffline"
    NODE_NOT_FOUND = "NodeNotFound"
    OUTSIDE_POOL = "OutsidePool"
    SPEC_WARNING = "SpecWarning"
    # -- a ContainerPolicy's cycle --
    POOL_NOT_FOUND = "PoolNotFound"
    POOL_INVALID = "PoolInvalid"
    RECONCILING = "Reconciling"
    RECONCILED = "Reconciled"
    WAITING_FOR_CREATION = "WaitingForCreation"
    PAUSED = "Paused"
    POOL_FULL = "PoolFull"
    UNSCHEDULABLE = "Unschedulable"
    HA_NOT_CONVERGING = "HaNotConverging"
    ROLLING_UPDATE = "RollingUpdate"
    ROLLOUT_STUCK = "RolloutStuck"
    ACTIONS_FAILED = "ActionsFailed"
    VMID_RANGE_OVERLAP = "VmidRangeOverlap"
    TEMPLATE_NOT_FOUND = "TemplateNotFound"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ALL_REPLICAS_READY = "AllReplicasReady"
    DELETION_BLOCKED = "DeletionBlocked"


class Condition(StatusModel):
    """One aspect of an object's state, in the shape of Kubernetes' ``metav1.Condition``."""

    type: str = Field(max_length=316, pattern=_CONDITION_TYPE)
    """Type of the condition in CamelCase: Ready, Progressing or Degraded."""

    status: ConditionStatus
    """True, False or Unknown."""

    observed_generation: int | None = Field(None, ge=0)
    """The ``metadata.generation`` the condition was set for; older than the object's generation means the
    condition is out of date."""

    last_transition_time: Timestamp
    """When ``status`` last changed (not when the condition was last written)."""

    reason: str = Field(min_length=1, max_length=1024, pattern=_CONDITION_REASON)
    """Machine-readable CamelCase reason for the last transition, e.g. ``Unreachable``."""

    message: str = Field("", max_length=32768)
    """Human-readable details of the transition; may be empty."""


CONDITIONS_SCHEMA = kube_schema(list_map_keys=("type",))
"""Schema extras of every ``conditions`` list: a list-map keyed by ``type``."""


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    """The condition of the given type, or None."""
    return next((c for c in conditions if c.type == condition_type), None)


def set_condition(
    conditions: Sequence[Condition],
    condition_type: str,
    status: ConditionStatus,
    *,
    reason: str,
    message: str = "",
    now: datetime,
    observed_generation: int | None = None,
) -> tuple[Condition, ...]:
    """Conditions with one condition added or replaced, keeping the list's order.

    ``lastTransitionTime`` is kept from the existing condition unless ``status`` flips (Kubernetes
    API conventions), so "Ready since" stays meaningful while reason and message evolve.
    """
    existing = find_condition(conditions, condition_type)
    changed_at = existing.last_transition_time if existing and existing.status == status else now
    updated = Condition(
        type=condition_type,
        status=status,
        observed_generation=observed_generation,
        last_transition_time=changed_at,
        reason=reason,
        message=message,
    )
    if existing is None:
        return (*conditions, updated)
    return tuple(updated if c.type == condition_type else c for c in conditions)


# ---------------------------------------------------------------------------------------------
# Actions: what the operator proposes and what it did


class ActionKind(StrEnum):
    """What the operator does (or proposes to do) to one CT."""

    CREATE = "Create"
    START = "Start"
    STOP = "Stop"
    DELETE = "Delete"
    MIGRATE = "Migrate"
    OFFLOAD = "Offload"
    RESTORE = "Restore"
    REPAIR = "Repair"
    HAND_OVER = "HandOver"
    """A rolling update hands an outdated CT's keepOnRecreate volumes to its replacement."""


class ActionResult(StrEnum):
    """Outcome of an action."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    REFUSED = "Refused"
    IN_PROGRESS = "InProgress"


Percent = Annotated[float, Field(ge=0)]
"""A usage figure in percent (0..100; a node reported above capacity may read slightly more)."""

Vmid = Annotated[int, Field(ge=MIN_VMID, le=MAX_VMID)]
"""A Proxmox VE guest ID."""

PVE_NODE_NAME = "^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
"""A Proxmox VE node name (``pve-node`` format): ``srv-px1``."""

PveNodeName = Annotated[str, Field(min_length=1, max_length=63, pattern=PVE_NODE_NAME)]
"""A Proxmox VE node name as ``pvecm nodes`` shows it (``pve-node`` format)."""


class PlannedAction(StatusModel):
    """One action on one CT, with the figures that justify it."""

    action: ActionKind
    """What is done: Create, Start, Stop, Delete, Migrate, Offload, Restore or Repair."""

    vmid: Vmid | None = None
    """VMID of the CT acted on (absent when a creation was refused before a VMID was chosen)."""

    hostname: str | None = Field(None, max_length=255)
    """Host name of the CT."""

    policy: str | None = Field(None, max_length=253)
    """Name of the ContainerPolicy (in the same namespace) the CT belongs to."""

    source_node: str | None = Field(None, max_length=63)
    """Node the CT is on before the action (Migrate, Offload, Delete, Repair)."""

    target_node: str | None = Field(None, max_length=63)
    """Node the CT is on after the action (Create, Migrate, Restore)."""

    reason: str = Field(max_length=1024)
    """Why, in words, with the figures: ``srv-px1 memory 93% > offloadAbovePercent 90 for 3 samples``."""

    source_percent_before: Percent | None = None
    """Usage of the pool's metric on the source node before the action, in percent."""

    source_percent_after: Percent | None = None
    """Usage of the pool's metric on the source node after the action (expected, for proposals), in
percent."""

    target_percent_before: Percent | None = None
    """Usage of the pool's metric on the target node before the action, in percent."""

    target_percent_after: Percent | None = None
    """Usage of the pool's metric on the target node after the action (expected, for proposals), in
percent."""


class Recommendation(PlannedAction):
    """An action the operator would take if its mode were Automatic (mode Recommend)."""

    time: Timestamp
    """When the operator proposed it."""


class RecordedAction(PlannedAction):
    """An action the operator took or refused, newest last."""

    time: Timestamp
    """When the action started (or was refused)."""

    result: ActionResult
    """Succeeded, Failed, Refused or InProgress."""

    message: str | None = Field(None, max_length=1024)
    """Details of the outcome: Proxmox's error message, or why the action was refused."""

    upid: str | None = Field(None, max_length=512)
    """Proxmox task ID (UPID) that carried out the action; its log is at /nodes/<node>/tasks/<upid>/log."""


MAX_RECENT_ACTIONS = 50
"""How many actions ``recentActions`` keeps at most; the operator drops the oldest beyond that."""

MAX_RECOMMENDATIONS = 100
"""How many proposals ``recommendations`` lists at most."""


# ---------------------------------------------------------------------------------------------
# CRD metadata


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``kubectl get`` (``additionalPrinterColumns``)."""

    name: str
    """Column header."""

    type: Literal["integer", "number", "string", "boolean", "date"]
    """Value type; ``date`` prints as an age."""

    json_path: str
    """Simple JSONPath into the object, e.g. ``.spec.poolRef.name``."""

    description: str
    """What the column shows (``kubectl get -o wide`` help and CRD readers)."""

    priority: int = 0
    """0 = shown by default; higher only with ``-o wide``."""


@dataclass(frozen=True)
class ScaleSubresource:
    """The ``scale`` subresource: what ``kubectl scale`` reads and writes."""

    spec_replicas_path: str
    """Where the desired count lives, under ``.spec``."""

    status_replicas_path: str
    """Where the observed count lives, under ``.status`` (0 when absent)."""

    label_selector_path: str | None = None
    """String selector for the HPA, under ``.status``; None when the kind has no pods to select."""


@dataclass(frozen=True)
class CustomResource:
    """Everything about a kind that its CRD declares besides the schema of spec and status.

    Handlers use it for Kopf's decorators (``group``, ``version``, ``plural``); ``crdgen`` turns it
    into the CRD manifest.
    """

    kind: str
    """CamelCase kind: ``ContainerPolicy``."""

    plural: str
    """Resource name in URLs and Kopf decorators: ``containerpolicies``."""

    singular: str
    """Lower-case singular: ``containerpolicy``."""

    description: str
    """Description of the whole object (``kubectl explain <kind>``)."""

    spec_model: type[ApiModel]
    """Model of ``spec`` (the CRD's spec schema)."""

    status_model: type[StatusModel]
    """Model of ``status`` (the CRD's status schema; written through the status subresource)."""

    short_names: tuple[str, ...] = ()
    """Abbreviations for kubectl (unique cluster-wide)."""

    categories: tuple[str, ...] = (CATEGORY,)
    """Groups for ``kubectl get <category>``."""

    printer_columns: tuple[PrinterColumn, ...] = ()
    """Columns of ``kubectl get`` besides NAME."""

    scale: ScaleSubresource | None = None
    """The scale subresource, or None for kinds ``kubectl scale`` does not apply to."""

    selectable_fields: tuple[str, ...] = ()
    """JSONPaths usable with ``kubectl get --field-selector`` (Kubernetes >= 1.32)."""

    group: str = GROUP
    version: str = VERSION
    namespaced: bool = True

    @property
    def crd_name(self) -> str:
        """``<plural>.<group>``, the CRD's metadata.name."""
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        """``<group>/<version>``, the objects' apiVersion."""
        return f"{self.group}/{self.version}"


def full_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` entirely (Python's reading of an RE2 ``matches``)."""
    return re.fullmatch(pattern, value) is not None
