"""Ownership marks: how a CT proves it belongs to one ContainerPolicy.

A CT is ours only when three independent marks agree (DESIGN.md principle 6):

1. its VMID lies in the policy's ``vmidRange``;
2. it carries the tags ``pve-operator`` and ``ctp-<policy hash>`` (visible in the one-call cluster
   snapshot, so candidates are found without per-CT requests);
3. its description holds an ownership record naming the policy's UID (read from the CT's config
   before anything destructive, because tags are easy to copy by hand).

A CT missing any mark is foreign: never modified, stopped or destroyed, even inside our range.
PVE normalises tags (lower-case, sorted, ``;``-joined), so marks are lower-case and compared as sets.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

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

    def to_line(self) -> str:
        return (
            f"{RECORD_PREFIX}policy={self.policy_namespace}/{self.policy_name};uid={self.policy_uid};"
            f"index={self.index};created={self.created_at}"
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
    return OwnershipRecord(policy, name, fields["uid"], index, fields["created"])


def is_owned(
    *,
    vmid: int,
    tags: Iterable[str],
    description: str | None,
    policy_uid: str,
    vmid_range: range,
) -> bool:
    """All three marks agree: range, tags and the description record's UID."""
    record = parse_record(description)
    return (
        vmid in vmid_range
        and has_ownership_tags(tags, policy_uid)
        and record is not None
        and record.policy_uid == policy_uid
    )
