"""Which CTs in a policy's range are the policy's: read from the cluster snapshot and each CT's own
config, and what a cycle reports about the others (foreign claims, creations still under way).

Side effects are reads, and one kind of write: an unsigned ownership record on a CT the policy's status
already lists is signed (once). Used by the policy cycle, the pool's balancing cycle and ``plan``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pve_operator.planning.model import ClusterSnapshot, ContainerStatus
from pve_operator.planning.ownership import (
    OFFLOADED_TAG,
    ForeignClaim,
    OwnershipKey,
    OwnershipRecord,
    Verdict,
    format_description,
    has_ownership_tags,
    normalize_tags,
    parse_record,
    verdict,
    why_not_proven,
)
from pve_operator.planning.reconcile import OwnedContainer
from pve_operator.pve.client import PveClient
from pve_operator.pve.errors import PveError, PveNotFound, PveUnreachable

log = logging.getLogger(__name__)


def discover_owned(
    client: PveClient,
    snapshot: ClusterSnapshot,
    uid: str,
    vmid_range: range,
    records: dict[int, OwnershipRecord | ForeignClaim | None],
    *,
    key: OwnershipKey,
    counted: Collection[int] = frozenset(),
) -> list[OwnedContainer]:
    """The CTs proven ours: in range, with our tags, and with our signed record in their description.

    The record of each CT in the range is read once from its config (authoritative) and cached;
    foreign CTs are cached as None so they cost one read, not one per cycle. A CT that carries our
    tags and a record naming the policy whose signature does not verify is a :class:`ForeignClaim`
    (cached too, reported as ``ForeignInRange``) — unless the policy already ``counted`` it (its
    ``status.containers``, which only the operator writes): then the record is one written before
    records were signed, or signed with a key since replaced, and it is signed now, once. A cached
    entry is dropped when its VMID leaves the cluster (a VMID can be reused), and a cached proof is
    dropped when the snapshot no longer shows our tags on the CT (someone removed them): it is read
    again. The executor re-proves ownership from the CT's own config right before every change anyway.
    """
    for vmid in [v for v in records if v not in snapshot.containers]:
        del records[vmid]
    for vmid in [v for v, r in records.items() if isinstance(r, ForeignClaim) and v in counted]:
        # Judged a claim by a caller that could not know the policy's status (the pool's cycle shares
        # this cache): the policy counts this CT, so its record may be one to sign. Read it again.
        del records[vmid]
    owned: list[OwnedContainer] = []
    read_now: dict[int, Mapping[str, Any]] = {}  # configs read this call: handed on with the CT
    for ct in snapshot.containers.values():
        if ct.vmid not in vmid_range:
            continue
        if not has_ownership_tags(ct.tags, uid):
            if ct.tags:
                records[ct.vmid] = None  # visibly not ours (e.g. released by Retain, or foreign)
                continue
            if records.get(ct.vmid) is not None:
                # Proven before, but every tag is gone now: the proof no longer holds. Read it again.
                del records[ct.vmid]
        node = snapshot.nodes.get(ct.node)
        if node is None or not node.online:
            # PVE cannot answer for a CT on an offline node: its state is unknown, and so is its proof
            # unless an earlier cycle read it. One offline node must not stop the cycle for the rest.
            unknown = replace(ct, status=ContainerStatus.UNKNOWN)
            record = records.get(ct.vmid)
            if isinstance(record, OwnershipRecord):
                owned.append(OwnedContainer(ct.vmid, record.index, record.created_at, unknown, verified=False))
            elif ct.vmid not in records and has_ownership_tags(ct.tags, uid):
                # Carries our tags; counted (so no replacement is made) but never acted on until proven.
                owned.append(OwnedContainer(ct.vmid, ct.vmid - vmid_range.start, "", unknown, verified=False))
            continue
        if ct.vmid not in records:
            if ct.lock == "create":
                continue  # PVE writes a CT's real config (and our marks) when vzcreate ends: no verdict yet
            try:
                config = client.container_config(ct.node, ct.vmid)
            except PveNotFound:
                continue  # moved or deleted since the snapshot; the next cycle sees where
            except PveUnreachable:
                continue  # its node went away since the snapshot: unknown this cycle
            if config.get("lock") == "create":
                continue
            found = _prove_or_sign(client, ct.node, ct.vmid, config, uid, vmid_range, key, counted)
            if found is _UNDECIDED:
                continue
            records[ct.vmid] = found
            read_now[ct.vmid] = config
        record = records[ct.vmid]
        if not isinstance(record, OwnershipRecord):
            continue
        owned.append(
            OwnedContainer(
                vmid=ct.vmid,
                index=record.index,
                created_at=record.created_at,
                observation=ct,
                offloaded=OFFLOADED_TAG in ct.tags,
                config=read_now.get(ct.vmid),
                template_hash=key.template_of(ct.vmid, record) if key is not None else "",
                volumes_from=key.volumes_from_of(ct.vmid, record) if key is not None else None,
            )
        )
    return owned


#: :func:`_prove_or_sign` could not decide this cycle (signing an unsigned record failed): no verdict cached.
_UNDECIDED = ForeignClaim(0, "", "undecided")


def _prove_or_sign(
    client: PveClient,
    node: str,
    vmid: int,
    config: Mapping[str, Any],
    uid: str,
    vmid_range: range,
    key: OwnershipKey,
    counted: Collection[int],
) -> OwnershipRecord | ForeignClaim | None:
    """What CT ``vmid``'s config proves: our record, a claim that proves nothing, or nothing."""
    description = str(config.get("description") or "")
    found = verdict(
        vmid=vmid,
        tags=normalize_tags(str(config.get("tags") or "")),
        description=description,
        policy_uid=uid,
        vmid_range=vmid_range,
        key=key,
    )
    record = parse_record(description)
    if found is Verdict.NOT_OURS or record is None:
        return None
    if found is Verdict.OWNED:
        return record
    if vmid not in counted:
        log.warning("CT %s claims to be policy %s's but proves nothing: %s", vmid, uid, why_not_proven(found))
        return ForeignClaim(vmid, node, why_not_proven(found))
    signed = record.signed(vmid, key)
    try:
        client.update_container_config(node, vmid, {"description": format_description(signed, description)})
    except PveError as exc:
        log.info("CT %s: signing its ownership record failed, tried again next cycle: %s", vmid, exc)
        return _UNDECIDED
    log.info("CT %s: its ownership record (%s) is signed now", vmid, found.value)
    return signed


def creations_in_progress(snapshot: ClusterSnapshot, vmid_range: range, owned: list[OwnedContainer]) -> list[int]:
    """CTs in the range that PVE is still creating and whose owner cannot be read yet.

    They may be ours (a creation started by this operator before a crash, or one still running): creating
    more while they exist could duplicate them, so creation waits until their marks are readable.
    """
    proven = {o.vmid for o in owned}
    return sorted(
        ct.vmid
        for ct in snapshot.containers.values()
        if ct.lock == "create" and ct.vmid in vmid_range and ct.vmid not in proven
    )


def sweep_configs(
    client: PveClient, owned: Sequence[OwnedContainer], after_vmid: int, limit: int
) -> tuple[list[OwnedContainer], int]:
    """The drift sweep: read the config of up to ``limit`` CTs, the next ones after ``after_vmid`` in VMID
    order (wrapping around), so every CT is checked in turn at a bounded cost per cycle. Returns ``owned``
    with ``config`` set on those read, and the VMID to continue after next cycle. CTs that are locked, not
    verified or on an offline node are skipped; a failed read only skips the CT this cycle; a CT whose
    config discovery already read this cycle is not read again."""
    candidates = sorted(
        (o for o in owned if o.verified and o.observation is not None and not o.observation.lock),
        key=lambda o: o.vmid,
    )
    if not candidates or limit <= 0:
        return list(owned), after_vmid
    start = next((i for i, o in enumerate(candidates) if o.vmid > after_vmid), 0)
    chosen = (candidates[start:] + candidates[:start])[:limit]
    configs: dict[int, Mapping[str, Any]] = {}
    for item in chosen:
        assert item.observation is not None
        if item.config is not None:
            continue
        try:
            configs[item.vmid] = client.container_config(item.observation.node, item.vmid)
        except PveError as exc:
            log.debug("drift sweep: config of CT %s not read this cycle: %s", item.vmid, exc)
    swept = [replace(o, config=configs[o.vmid]) if o.vmid in configs else o for o in owned]
    return swept, chosen[-1].vmid
