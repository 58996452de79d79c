"""A ContainerPolicy in planner and executor terms, built in one place: the blueprint every new CT is created
from (:class:`~pve_operator.pve.params.ContainerBlueprint`) and the planner's
:class:`~pve_operator.planning.reconcile.PolicyIntent`, with the options the drift sweep compares by update
class (``TEMPLATE_UPDATE_CLASSES``). Pure translation: reads nothing, neither Kubernetes nor Proxmox VE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_operator.api.v1alpha1 import (
    ContainerPolicySpec,
    ProxmoxServerPoolSpec,
    UpdateStrategyType,
    template_hash,
)
from pve_operator.planning.model import pool_measure
from pve_operator.planning.ownership import ownership_tags
from pve_operator.planning.placement import PlacementStrategy
from pve_operator.planning.reconcile import FillIntent, PolicyIntent, pve_setting
from pve_operator.planning.topology import TopologyInputs, pool_labels, rules_for
from pve_operator.pve.params import (
    CloneFrom,
    ContainerBlueprint,
    MountPoint,
    NetworkInterface,
    features_property,
    net_property,
    startup_property,
)


def blueprint_from(
    policy: ContainerPolicySpec, *, password: str | None = None, clone: CloneFrom | None = None
) -> ContainerBlueprint:
    """What every new CT of the policy is created with; ``password`` is the value of
    ``template.rootPasswordSecretRef`` (read by the caller, only when it creates)."""
    t = policy.template
    return ContainerBlueprint(
        ostemplate=t.ostemplate,
        memory_mib=t.memory_mib,
        swap_mib=t.swap_mib,
        cores=t.cores,
        rootfs_storage=t.rootfs.storage,
        rootfs_gib=t.rootfs.size_gib,
        networks=tuple(
            NetworkInterface(
                name=n.name,
                bridge=n.bridge,
                ip=n.ip,
                gateway=n.gateway,
                vlan=n.vlan,
                firewall=n.firewall,
                ip6=n.ip6,
                gateway6=n.gateway6,
                mtu=n.mtu,
                rate_mbps=n.rate_mbps,
                stable_mac=n.stable_mac,
            )
            for n in t.networks
        ),
        mount_points=tuple(
            MountPoint(
                m.storage, m.size_gib, m.path, m.backup, m.read_only, m.quota, m.acl, m.replicate, m.keep_on_recreate
            )
            for m in t.mount_points
        ),
        arch=t.arch.value if t.arch else None,
        ostype=t.ostype.value if t.ostype else None,
        hookscript=t.hookscript,
        unprivileged=t.unprivileged,
        features=features_property(
            nesting=t.features.nesting,
            keyctl=t.features.keyctl,
            fuse=t.features.fuse,
            mknod=t.features.mknod,
            mount=t.features.mount,
        ),
        tags=frozenset(t.tags),
        start_on_create=t.start_on_create,
        ssh_public_keys=t.ssh_public_keys,
        password=password,
        nameservers=t.nameservers,
        search_domain=t.search_domain,
        on_boot=t.on_boot,
        startup=_startup(policy),
        protection=t.protection,
        cpu_limit=t.cpu_limit,
        cpu_units=t.cpu_units,
        timezone=t.timezone,
        notes=t.description,
        template_hash=template_hash(t),
        clone=clone,
    )


def intent_from(
    policy: ContainerPolicySpec,
    pool: ProxmoxServerPoolSpec,
    uid: str,
    previous_desired: int,
    reserved_vmids: frozenset[int] = frozenset(),
    busy_vmids: frozenset[int] = frozenset(),
    online_nodes: frozenset[str] = frozenset(),
    clone: CloneFrom | None = None,
    rollout_paused: bool = False,
    retired_tags: frozenset[str] = frozenset(),
) -> PolicyIntent:
    weights = policy.effective_node_weights(pool)
    if clone is not None and not clone.shared:
        # A clone of a template on local storage is made on its node: no other node can receive a new CT.
        weights = {n: w if n == clone.node else 0 for n, w in weights.items()}
    rolling = policy.update_strategy.type is UpdateStrategyType.ROLLING_UPDATE
    return PolicyIntent(
        template_hash=template_hash(policy.template),
        restart_settings=restart_config_settings(policy),
        rollout_max_unavailable=policy.update_strategy.max_unavailable if rolling else None,
        rollout_max_surge=policy.update_strategy.max_surge if rolling and policy.replicas is not None else 0,
        rollout_paused=rollout_paused,
        retired_tags=retired_tags,
        topology=rules_for(policy.placement, pool_labels(pool), TopologyInputs(weights, online_nodes)),
        policy_uid=uid,
        vmid_range=policy.vmid_range.as_range(),
        memory_mib=policy.template.memory_mib,
        cores=policy.template.cores,
        rootfs_gib=policy.template.rootfs.size_gib,
        hostname_for=policy.render_hostname,
        node_weights=weights,
        replicas=policy.replicas,
        fill=FillIntent(policy.fill.until_percent / 100.0, policy.fill.max_replicas) if policy.fill else None,
        maintenance_nodes=frozenset(n.name for n in pool.nodes if n.maintenance),
        metric=pool_measure(pool.thresholds),
        ceiling_fraction=pool.thresholds.creation_ceiling_percent / 100.0,
        strategy=PlacementStrategy(policy.placement.strategy.value),
        paused=policy.paused,
        previous_desired=previous_desired,
        reserved_vmids=reserved_vmids,
        busy_vmids=busy_vmids,
        config_settings=hot_config_settings(policy),
        networks=network_settings(policy),
        notes=policy.template.description,
        tags=ownership_tags(uid) | frozenset(t.lower() for t in policy.template.tags),
        kept_volumes=tuple(f"mp{i}" for i, m in enumerate(policy.template.mount_points) if m.keep_on_recreate),
    )


def _startup(policy: ContainerPolicySpec) -> str | None:
    startup = policy.template.startup
    return startup_property(startup.order, startup.up_seconds, startup.down_seconds) if startup else None


def restart_config_settings(policy: ContainerPolicySpec) -> dict[str, str]:
    """The Restart-class options the drift sweep compares and repairs (``TEMPLATE_UPDATE_CLASSES``): PVE
    keeps them pending on a running CT until it restarts. ``features`` is Restart-class too, but only root@pam
    may change most features of an existing CT (``check_ct_modify_config_perm``): not repaired in place."""
    t = policy.template
    return {
        "nameserver": pve_setting(" ".join(t.nameservers)),
        "searchdomain": pve_setting(t.search_domain),
        "timezone": pve_setting(t.timezone),
    }


def hot_config_settings(policy: ContainerPolicySpec) -> dict[str, str]:
    """The hot options (``TEMPLATE_UPDATE_CLASSES``) the drift sweep compares with a CT's config, as PVE
    keys and :func:`pve_setting` values (memory and cores come from the snapshot instead)."""
    t = policy.template
    return {
        "swap": pve_setting(t.swap_mib),
        "onboot": pve_setting(1 if t.on_boot else 0),
        "protection": pve_setting(1 if t.protection else 0),
        "startup": pve_setting(_startup(policy)),
        "cpulimit": pve_setting(t.cpu_limit),
        "cpuunits": pve_setting(t.cpu_units),
    }


def network_settings(policy: ContainerPolicySpec) -> tuple[str, ...]:
    """``net0``, ``net1``, ... as the policy creates them, without the MAC: what the drift sweep compares
    (Hot: PVE hot-plugs a NIC change on a running CT)."""
    return tuple(net_property(nic) for nic in blueprint_from(policy).networks)


def template_tags(policy: ContainerPolicySpec) -> frozenset[str]:
    """template.tags as PVE stores them (lower case)."""
    return frozenset(t.lower() for t in policy.template.tags)


def retired_tags(policy: ContainerPolicySpec, status: Mapping[str, Any]) -> frozenset[str]:
    """Tags template.tags listed before (status.templateTags) or still being taken off (status.retiredTags)
    that it no longer lists. A status without templateTags (written before it existed) retires nothing."""
    current = template_tags(policy)
    if "templateTags" not in status:
        return frozenset()
    earlier = frozenset(str(t) for t in status.get("templateTags") or ())
    return (earlier | frozenset(str(t) for t in status.get("retiredTags") or ())) - current
