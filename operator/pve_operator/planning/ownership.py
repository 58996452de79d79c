"""Ownership marks: how a CT proves it belongs to one ContainerPolicy.

A CT is ours only when three independent marks agree (DESIGN.md principle 6):

1. its VMID lies in the policy's ``vmidRange``;
2. it carries the tags ``pve-operator`` and ``ctp-<policy hash>`` (visible in the one-call cluster
   snapshot, so candidates are found without per-CT requests);
3. its description holds an ownership record naming the policy's UID, **signed** with the operator's
   key (read from the CT's config before anything destructive).

Tags and descriptions can be copied by anyone who may edit a CT's options in PVE, so the first two
marks and an unsigned record only *claim* ownership. The record's signature is an HMAC-SHA256 over
the VMID, the policy UID and the CT's index, with a key that only the operator reads (a Kubernetes
Secret it creates: ``OperatorRuntime.ownership_key``): a record copied onto another CT does
not verify there (another VMID), and nobody without the key can write one that does. A claim that
does not verify is foreign (:class:`ForeignClaim`, reported as ``ForeignInRange``), whatever its tags.

A CT missing any mark is foreign: never modified, stopped or destroyed, even inside our range.
PVE normalises tags (lower-case, sorted, ``;``-joined), so marks are lower-case and compared as sets.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

#: Tag on every CT the operator manages, whatever the policy.
MANAGED_TAG = "pve-operator"
#: Tag the operator adds to a CT it stopped on purpose (offload): repair leaves such CTs stopped,
#: and restore starts them when there is room again. Kept in PVE so it survives operator restarts.
OFFLOADED_TAG = "pve-operator-offloaded"
#: Prefix of the per-policy tag; the rest is a short hash of the policy's UID.
POLICY_TAG_PREFIX = "ctp-"
#: Prefix of the ownership record's line in the CT description.
RECORD_PREFIX = "pve-operator:"

_RECORD_LINE = re.compile(r"^pve-operator:(?P<fields>.*)$", re.MULTILINE)
# PVE's tag rule (pve-common `pve-tag` format), case-insensitive.
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)


def policy_tag(policy_uid: str) -> str:
    """The per-policy tag: ``ctp-`` + 10 hex digits of SHA-256(uid) (short, and unique in practice)."""
    return POLICY_TAG_PREFIX + hashlib.sha256(policy_uid.encode()).hexdigest()[:10]


def ownership_tags(policy_uid: str) -> frozenset[str]:
    return frozenset({MANAGED_TAG, policy_tag(policy_uid)})


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.match(tag))


def normalize_tags(tags: Iterable[str] | str | None) -> frozenset[str]:
    """Tags as a lower-cased set; accepts PVE's ``a;b`` string (PVE also splits on ``,`` and spaces)."""
    if tags is None:
        return frozenset()
    items = re.split(r"[;, ]+", tags) if isinstance(tags, str) else list(tags)
    return frozenset(t.strip().lower() for t in items if t and t.strip())


def has_ownership_tags(tags: Iterable[str], policy_uid: str) -> bool:
    return ownership_tags(policy_uid) <= normalize_tags(list(tags))


#: Hex digits of the HMAC-SHA256 kept in a record: 128 bits, short enough for a one-line record.
SIGNATURE_HEX_DIGITS = 32
#: Bytes of a new ownership key (HMAC-SHA256's block-size-independent recommendation: >= 32).
OWNERSHIP_KEY_BYTES = 32


@dataclass(frozen=True)
class OwnershipKey:
    """The operator's secret for signing ownership records. Never printed: its repr hides the bytes."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < OWNERSHIP_KEY_BYTES:
            raise ValueError(f"an ownership key needs at least {OWNERSHIP_KEY_BYTES} bytes")

    def sign(self, vmid: int, policy_uid: str, index: int) -> str:
        """The signature a record of CT ``vmid``, index ``index`` of policy ``policy_uid`` carries."""
        message = f"pve-operator ownership v1\0{vmid}\0{policy_uid}\0{index}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX_DIGITS]

    def sign_template(self, vmid: int, policy_uid: str, index: int, template_hash: str) -> str:
        """The signature of a record's ``template`` field (the recreate-class settings it was created with):
        a rollout recreates CTs whose template differs, so a forged value must not trigger one."""
        message = f"pve-operator template v1\0{vmid}\0{policy_uid}\0{index}\0{template_hash}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX_DIGITS]

    def template_of(self, vmid: int, record: OwnershipRecord) -> str:
        """The record's template hash when its own signature verifies, else "" (unknown)."""
        if not record.template or not record.template_signature:
            return ""
        expected = self.sign_template(vmid, record.policy_uid, record.index, record.template)
        return record.template if hmac.compare_digest(expected, record.template_signature) else ""

    def sign_volumes_from(self, vmid: int, policy_uid: str, index: int, source_vmid: int) -> str:
        """The signature of a record's ``from`` field (the CT whose kept volumes this CT receives): the
        handover destroys that CT, so a forged value must not name one."""
        message = f"pve-operator volumes-from v1\0{vmid}\0{policy_uid}\0{index}\0{source_vmid}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX_DIGITS]

    def volumes_from_of(self, vmid: int, record: OwnershipRecord) -> int | None:
        """The record's ``from`` VMID when its own signature verifies, else None."""
        if record.volumes_from is None or not record.volumes_from_signature:
            return None
        expected = self.sign_volumes_from(vmid, record.policy_uid, record.index, record.volumes_from)
        return record.volumes_from if hmac.compare_digest(expected, record.volumes_from_signature) else None

    def verifies(self, vmid: int, record: OwnershipRecord) -> bool:
        expected = self.sign(vmid, record.policy_uid, record.index)
        return bool(record.signature) and hmac.compare_digest(expected, record.signature)


@dataclass(frozen=True)
class OwnershipRecord:
    """What the operator writes into a CT's description when it creates the CT."""

    policy_namespace: str
    policy_name: str
    policy_uid: str
    #: The CT's index within the policy (drives its hostname and scale-down order).
    index: int
    #: RFC 3339 UTC time of creation, as the operator's clock said.
    created_at: str
    #: :meth:`OwnershipKey.sign` over (vmid, policy_uid, index); empty in records written before signing.
    signature: str = ""
    #: Hash of the recreate-class template settings the CT was created with (``template_hash``); empty
    #: in records written before rolling updates.
    template: str = ""
    #: :meth:`OwnershipKey.sign_template` over (vmid, policy_uid, index, template).
    template_signature: str = ""
    #: The outdated CT whose keepOnRecreate volumes this CT was created to receive (a rolling update's
    #: handover); None for every other CT.
    volumes_from: int | None = None
    #: :meth:`OwnershipKey.sign_volumes_from` over (vmid, policy_uid, index, volumes_from).
    volumes_from_signature: str = ""

    def to_line(self) -> str:
        line = (
            f"{RECORD_PREFIX}policy={self.policy_namespace}/{self.policy_name};uid={self.policy_uid};"
            f"index={self.index};created={self.created_at}"
        )
        if self.template:
            line += f";template={self.template};tsig={self.template_signature}"
        if self.volumes_from is not None:
            line += f";from={self.volumes_from};fsig={self.volumes_from_signature}"
        return f"{line};sig={self.signature}" if self.signature else line

    def signed(self, vmid: int, key: OwnershipKey) -> OwnershipRecord:
        return replace(self, signature=key.sign(vmid, self.policy_uid, self.index))

    def with_template(self, vmid: int, key: OwnershipKey, template_hash: str) -> OwnershipRecord:
        """The record stamped with a (signed) template hash."""
        return replace(
            self,
            template=template_hash,
            template_signature=key.sign_template(vmid, self.policy_uid, self.index, template_hash),
        )

    def receiving_volumes_from(self, vmid: int, key: OwnershipKey, source_vmid: int) -> OwnershipRecord:
        """The record of a CT created to receive ``source_vmid``'s kept volumes (signed)."""
        return replace(
            self,
            volumes_from=source_vmid,
            volumes_from_signature=key.sign_volumes_from(vmid, self.policy_uid, self.index, source_vmid),
        )


def format_description(record: OwnershipRecord, user_text: str = "") -> str:
    """The description to send on create: the user's text (if any), then the record on its own line."""
    user_text = remove_record(user_text).rstrip()
    return f"{user_text}\n{record.to_line()}" if user_text else record.to_line()


def remove_record(description: str) -> str:
    """The description without our record (used when a Retain deletion releases a CT)."""
    return _RECORD_LINE.sub("", description).strip("\n")


def parse_record(description: str | None) -> OwnershipRecord | None:
    """The ownership record in a description, or None when absent or malformed (malformed = not ours)."""
    if not description:
        return None
    match = _RECORD_LINE.search(description)
    if match is None:
        return None
    fields: dict[str, str] = {}
    for part in match.group("fields").strip().split(";"):
        key, sep, value = part.partition("=")
        if not sep:
            return None
        fields[key.strip()] = value.strip()
    policy, _, name = fields.get("policy", "").partition("/")
    try:
        index = int(fields["index"])
    except (KeyError, ValueError):
        return None
    if not (policy and name and fields.get("uid") and fields.get("created")) or index < 0:
        return None
    source = fields.get("from", "")
    return OwnershipRecord(
        policy,
        name,
        fields["uid"],
        index,
        fields["created"],
        fields.get("sig", ""),
        fields.get("template", ""),
        fields.get("tsig", ""),
        volumes_from=int(source) if source.isdigit() else None,
        volumes_from_signature=fields.get("fsig", ""),
    )


class Verdict(StrEnum):
    """What a CT's marks say about one policy's claim on it."""

    #: Range, tags and a record naming the policy agree, and the record's signature verifies.
    OWNED = "Owned"
    #: The marks agree but the record carries no signature (written before records were signed, or
    #: copied from such a record): a claim, not a proof.
    UNSIGNED = "Unsigned"
    #: The marks agree but the signature does not verify: the record was copied from another CT or
    #: written by someone without the key (or the key was replaced).
    BAD_SIGNATURE = "BadSignature"
    #: A mark is missing: the CT makes no claim for this policy.
    NOT_OURS = "NotOurs"


def verdict(
    *,
    vmid: int,
    tags: Iterable[str],
    description: str | None,
    policy_uid: str,
    vmid_range: range,
    key: OwnershipKey,
) -> Verdict:
    record = parse_record(description)
    if not carries_ownership_marks(
        vmid=vmid, tags=tags, description=description, policy_uid=policy_uid, vmid_range=vmid_range
    ):
        return Verdict.NOT_OURS
    assert record is not None
    if not record.signature:
        return Verdict.UNSIGNED
    return Verdict.OWNED if key.verifies(vmid, record) else Verdict.BAD_SIGNATURE


def is_owned(
    *,
    vmid: int,
    tags: Iterable[str],
    description: str | None,
    policy_uid: str,
    vmid_range: range,
    key: OwnershipKey,
) -> bool:
    """All three marks agree (range, tags, the record's UID) and the record's signature verifies."""
    return (
        verdict(vmid=vmid, tags=tags, description=description, policy_uid=policy_uid, vmid_range=vmid_range, key=key)
        is Verdict.OWNED
    )


def carries_ownership_marks(
    *,
    vmid: int,
    tags: Iterable[str],
    description: str | None,
    policy_uid: str,
    vmid_range: range,
) -> bool:
    """Range, tags and a record naming the policy agree; the signature is not checked.

    A claim, not a proof: only for tools that cannot read the key (``kubectl pve``, which acts with
    its user's own PVE rights) and as the first step of :func:`verdict`."""
    record = parse_record(description)
    return (
        vmid in vmid_range
        and has_ownership_tags(tags, policy_uid)
        and record is not None
        and record.policy_uid == policy_uid
    )


@dataclass(frozen=True)
class ForeignClaim:
    """A CT in a policy's range that carries its tags and a record naming it, but proves nothing:
    left untouched, not counted, and reported (``ForeignInRange``)."""

    vmid: int
    node: str
    why: str


def why_not_proven(found: Verdict) -> str:
    return {
        Verdict.UNSIGNED: "its ownership record is not signed, and the policy never counted this CT",
        Verdict.BAD_SIGNATURE: "its ownership record's signature does not verify "
        "(copied from another CT, or written without the operator's key)",
    }.get(found, "a mark is missing")
