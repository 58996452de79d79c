"""``kubectl pve``: the operator's kubectl plugin (the ``kubectl-pve`` script on PATH).

Commands (each takes ``-n/--namespace``, ``--context``, ``--kubeconfig`` and ``-o table|json|yaml``)::

    kubectl pve plan --pool lab          the plan the operator would make now (changes nothing)
    kubectl pve status [--pool lab]      pools and policies at a glance, from their status subresources
    kubectl pve pin CT [--pool lab]      tag one CT pve-operator-pinned: never migrated or offloaded
    kubectl pve unpin CT [--pool lab]    remove that tag
    kubectl pve drain NODE --pool lab    spec.nodes[NODE].maintenance=true: the operator empties the node
    kubectl pve uncordon NODE --pool lab spec.nodes[NODE].maintenance=false

It talks to the Kubernetes API with the kubernetes client (never by running kubectl). ``pin`` and ``unpin``
reach Proxmox VE through the pool's own connection (spec.endpoint, TLS settings and the credentials
Secret, exactly as the operator builds it), so they need ``get`` on that Secret; they change a CT only
after its three ownership marks prove it belongs to a ContainerPolicy of the pool, and refuse otherwise.

Errors are one line on stderr with exit code 1; usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from pve_operator.api.v1alpha1 import GROUP, VERSION, ProxmoxServerPoolSpec
from pve_operator.planning.balancing import PINNED_TAG
from pve_operator.planning.ownership import (
    carries_ownership_marks,
    normalize_tags,
    ownership_tags,
    parse_record,
)

PROG = "kubectl pve"
POOLS = "proxmoxserverpools"
POLICIES = "containerpolicies"
OUTPUTS = ("table", "json", "yaml")
_INCLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

EPILOG = """\
examples:
  kubectl pve status -n pve-lab                 pools and policies at a glance
  kubectl pve plan --pool lab -n pve-lab        what the operator would do now (changes nothing)
  kubectl pve pin 3104 -n pve-lab               never migrate or offload CT 3104
  kubectl pve drain srv-px2 --pool lab          empty srv-px2 (maintenance), uncordon to undo
"""


class CommandError(Exception):
    """What the user is told on one line, with exit code 1."""


# -- Kubernetes ---------------------------------------------------------------------------------


def load_config(kubeconfig: str | None, context: str | None) -> str:
    """Load the client configuration the way kubectl does; return the context's namespace (or default).

    ``--kubeconfig`` / ``--context`` when given, else $KUBECONFIG or ~/.kube/config, else (inside a pod)
    the service account.
    """
    try:
        kube_config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError) as exc:
        if kubeconfig or context:
            raise CommandError(
                f"cannot use kubeconfig {kubeconfig or '(default)'} context {context or '(current)'}: {exc}"
            ) from None
        try:
            kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kube_config.ConfigException:
            raise CommandError(
                "no Kubernetes configuration: set KUBECONFIG, pass --kubeconfig, or run inside a pod"
            ) from None
        try:
            with open(_INCLUSTER_NAMESPACE) as handle:
                return handle.read().strip() or "default"
        except OSError:
            return "default"
    try:
        contexts, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (kube_config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _as_dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CommandError(f"unexpected answer from the Kubernetes API: {type(value).__name__}")
    return value


def get_pool(namespace: str, name: str) -> dict[str, Any]:
    try:
        return _as_dict(
            kube_client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, POOLS, name)
        )
    except ApiException as exc:
        if exc.status == 404:
            raise CommandError(f"ProxmoxServerPool {namespace}/{name} not found") from None
        raise


def list_objects(namespace: str, plural: str) -> list[dict[str, Any]]:
    listed = _as_dict(kube_client.CustomObjectsApi().list_namespaced_custom_object(GROUP, VERSION, namespace, plural))
    return sorted((_as_dict(item) for item in listed.get("items") or ()), key=lambda o: str(o["metadata"]["name"]))


def pool_spec(body: Mapping[str, Any]) -> ProxmoxServerPoolSpec:
    name = body.get("metadata", {}).get("name")
    try:
        return ProxmoxServerPoolSpec.model_validate(body.get("spec") or {})
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise CommandError(f"ProxmoxServerPool {name}: its spec is not valid: {first}") from None


# -- output -------------------------------------------------------------------------------------


def emit(document: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")


def _table(rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    """Left-aligned columns, two spaces apart, like kubectl get."""
    text = [["-" if cell is None or cell == "" else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(text[0]))]
    return [indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in text]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _condition(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((dict(c) for c in status.get("conditions") or () if c.get("type") == kind), None)


def _condition_text(condition: Mapping[str, Any] | None) -> str:
    if condition is None:
        return "Unknown"
    reason = f" ({condition.get('reason')})" if condition.get("reason") else ""
    return f"{condition.get('status')}{reason}"


# -- plan ---------------------------------------------------------------------------------------


@contextmanager
def _replaced(owner: Any, attribute: str, value: Any) -> Iterator[None]:
    original = getattr(owner, attribute)
    setattr(owner, attribute, value)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def cmd_plan(args: argparse.Namespace) -> int:
    """``python -m pve_operator plan`` itself (``plan_command.run``), on the configuration chosen here.

    ``plan_command.run`` loads the default configuration and prints text; the plugin has already loaded
    the one of ``--kubeconfig``/``--context``, so that loader is bypassed, and for ``-o json|yaml`` the
    printer is swapped for one that keeps the plan. The computation is the command's, unchanged.
    """
    from pve_operator import plan_command

    get_pool(args.namespace, args.pool)  # a missing pool is this command's one-line error
    argv = ["--pool", args.pool, "-n", args.namespace] + (["--as-sampled"] if args.as_sampled else [])
    captured: dict[str, Any] = {}

    def keep(name: str, pool: ProxmoxServerPoolSpec, snapshot: Any, plan: Any, metric: Any, managed: int) -> None:
        captured.update(name=name, pool=pool, snapshot=snapshot, plan=plan, metric=metric, managed=managed)

    with _replaced(plan_command, "load_kubernetes_config", lambda: None):
        if args.output == "table":
            return 0 if plan_command.run(argv) == 0 else 1
        with _replaced(plan_command, "_print_plan", keep):
            if plan_command.run(argv) != 0:
                return 1
    emit(plan_document(args.namespace, **captured), args.output)
    return 0


def plan_document(
    namespace: str, *, name: str, pool: ProxmoxServerPoolSpec, snapshot: Any, plan: Any, metric: Any, managed: int
) -> dict[str, Any]:
    from pve_operator.planning.actions import describe
    from pve_operator.planning.model import Metric

    nodes = []
    for node in pool.nodes:
        usage = snapshot.nodes.get(node.name)
        entry: dict[str, Any] = {"name": node.name, "inSnapshot": usage is not None, "maintenance": node.maintenance}
        if usage is not None:
            entry.update(
                online=usage.online,
                cpuPercent=round(usage.used_fraction(Metric.CPU) * 100, 1),
                memoryPercent=round(usage.used_fraction(Metric.MEMORY) * 100, 1),
                diskPercent=round(usage.used_fraction(Metric.DISK) * 100, 1),
                containers=len(snapshot.containers_on(node.name)),
            )
        nodes.append(entry)
    actions = []
    for action in plan.actions:
        fields = {_camel(k): v for k, v in vars(action).items()}
        actions.append({"kind": fields.pop("kind"), "summary": describe(action, metric), **fields})
    t = pool.thresholds
    return {
        "pool": name,
        "namespace": namespace,
        "metric": metric.value,
        "thresholds": {
            "creationCeilingPercent": t.creation_ceiling_percent,
            "migrateAbovePercent": t.migrate_above_percent,
            "offloadAbovePercent": t.offload_above_percent,
            "restoreBelowPercent": t.restore_below_percent,
            "sustainedSamples": t.sustained_samples,
        },
        "modes": {"balancing": pool.balancing.mode.value, "offload": pool.offload.mode.value},
        "managedContainers": managed,
        "nodes": nodes,
        "actions": actions,
        "refusals": [
            {
                "kind": r.kind.value,
                "stage": getattr(r.stage, "value", str(r.stage)),
                "reason": r.reason,
                "vmid": r.vmid,
                "node": r.node,
            }
            for r in plan.refusals
        ],
    }


# -- status -------------------------------------------------------------------------------------


def _load_against(node: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[float | None, str]:
    """The node's figure in the pool's metric, and where it stands against the thresholds."""
    thresholds = spec.get("thresholds") or {}
    metric = str(thresholds.get("metric") or "memory")
    figures = {m: node.get(f"{m}Percent") for m in ("cpu", "memory", "disk")}
    if metric == "max":
        known = [v for v in figures.values() if v is not None]
        value = max(known) if known else None
    elif metric == "weighted":
        from pve_operator.api.v1alpha1 import MetricWeights
        from pve_operator.planning.model import WeightedMetric

        weights = MetricWeights.model_validate(thresholds.get("metricWeights") or {})
        measure = WeightedMetric(memory=weights.memory, cpu=weights.cpu, disk=weights.disk)
        parts = [(figures[m.value], weight) for m, weight in measure.parts]
        unknown = any(figure is None and weight > 0 for figure, weight in parts)
        value = None if unknown else measure.combine(*(float(figure or 0.0) for figure, _ in parts))
    else:
        value = figures.get(metric)
    if not node.get("online") or value is None:
        return None, "offline"
    value = float(value)
    offload = float(thresholds.get("offloadAbovePercent", 90))
    migrate = float(thresholds.get("migrateAbovePercent", 75))
    ceiling = float(thresholds.get("creationCeilingPercent", 80))
    restore = float(thresholds.get("restoreBelowPercent", 60))
    if value > offload:
        return value, f"above offload ({offload:g}%)"
    if value > migrate:
        return value, f"above migrate ({migrate:g}%)"
    if value >= ceiling:
        return value, f"at creation ceiling ({ceiling:g}%)"
    if value < restore:
        return value, f"ok (below restore {restore:g}%)"
    return value, "ok"


def pool_summary(body: Mapping[str, Any], tail: int) -> dict[str, Any]:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    maintenance = {str(n.get("name")): bool(n.get("maintenance", False)) for n in spec.get("nodes") or ()}
    seen = {str(n.get("name")): n for n in status.get("nodes") or ()}
    nodes = []
    for name in list(maintenance) + [n for n in seen if n not in maintenance]:
        node = seen.get(name, {"name": name})
        value, standing = _load_against(node, spec)
        nodes.append(
            {
                "name": name,
                "inPool": name in maintenance,
                "maintenance": maintenance.get(name, False),
                "online": bool(node.get("online", False)),
                "cpuPercent": node.get("cpuPercent"),
                "memoryPercent": node.get("memoryPercent"),
                "diskPercent": node.get("diskPercent"),
                "managedContainers": node.get("managedContainers", 0),
                "loadPercent": value,
                "load": standing if name in seen else "not sampled yet",
            }
        )
    recent = list(status.get("recentActions") or ())
    thresholds = spec.get("thresholds") or {}
    return {
        "name": body["metadata"]["name"],
        "namespace": body["metadata"].get("namespace"),
        "ready": _condition(status, "Ready"),
        "degraded": _condition(status, "Degraded"),
        "pveVersion": status.get("pveVersion"),
        "lastSampleTime": status.get("lastSampleTime"),
        "metric": thresholds.get("metric", "memory"),
        "thresholds": {k: v for k, v in thresholds.items() if k != "metric"},
        "modes": {
            "balancing": (spec.get("balancing") or {}).get("mode", "Automatic"),
            "offload": (spec.get("offload") or {}).get("mode", "Automatic"),
        },
        "nodes": nodes,
        "inFlight": list(status.get("inFlight") or ()),
        "recentActions": recent[-tail:] if tail > 0 else [],
        "recentActionsTotal": len(recent),
        "recommendations": len(status.get("recommendations") or ()),
        "offloaded": len(status.get("offloaded") or ()),
    }


def policy_status_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    annotations = body.get("metadata", {}).get("annotations") or {}
    return {
        "name": body["metadata"]["name"],
        "namespace": body["metadata"].get("namespace"),
        "pool": (spec.get("poolRef") or {}).get("name"),
        "pinned": str(annotations.get(f"{GROUP}/pinned", "")).lower() == "true",
        "paused": bool(spec.get("paused", False)),
        "replicas": status.get("replicas", 0),
        "desiredReplicas": status.get("desiredReplicas", spec.get("replicas")),
        "readyReplicas": status.get("readyReplicas", 0),
        "offloadedReplicas": status.get("offloadedReplicas", 0),
        "migratingReplicas": status.get("migratingReplicas", 0),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k) is not None}
            for c in status.get("conditions") or ()
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    pools = [get_pool(args.namespace, args.pool)] if args.pool else list_objects(args.namespace, POOLS)
    policies = [
        p
        for p in list_objects(args.namespace, POLICIES)
        if not args.pool or (p.get("spec") or {}).get("poolRef", {}).get("name") == args.pool
    ]
    document = {
        "namespace": args.namespace,
        "pools": [pool_summary(p, args.tail) for p in pools],
        "policies": [policy_status_summary(p) for p in policies],
    }
    if args.output != "table":
        emit(document, args.output)
        return 0
    print("\n".join(status_lines(document)))
    return 0


def status_lines(document: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if not document["pools"]:
        lines.append(f"No ProxmoxServerPool in namespace {document['namespace']}.")
    for pool in document["pools"]:
        online = sum(1 for n in pool["nodes"] if n["online"] and n["inPool"])
        in_pool = sum(1 for n in pool["nodes"] if n["inPool"])
        lines.append(
            f"POOL {pool['name']}  Ready={_condition_text(pool['ready'])}  Degraded={_condition_text(pool['degraded'])}"
            f"  PVE {pool['pveVersion'] or '?'}  nodes {online}/{in_pool} online"
            f"  sampled {pool['lastSampleTime'] or 'never'}"
        )
        for label, condition in (("Ready", pool["ready"]), ("Degraded", pool["degraded"])):
            if condition and condition.get("message") and (label == "Ready") != (condition.get("status") == "True"):
                lines.append(f"  {label}: {condition['message']}")
        t = pool["thresholds"]
        lines.append(
            f"  {pool['metric']} thresholds: ceiling {t.get('creationCeilingPercent', 80)}%, migrate >"
            f"{t.get('migrateAbovePercent', 75)}%, offload >{t.get('offloadAbovePercent', 90)}%, restore <"
            f"{t.get('restoreBelowPercent', 60)}%; balancing {pool['modes']['balancing']}, "
            f"offload {pool['modes']['offload']}"
        )
        rows: list[list[object]] = [["NODE", "ONLINE", "MAINTENANCE", "CPU%", "MEM%", "DISK%", "CTS", "LOAD"]]
        for node in pool["nodes"]:
            rows.append(
                [
                    node["name"] if node["inPool"] else f"{node['name']} (not in spec)",
                    "yes" if node["online"] else "no",
                    "yes" if node["maintenance"] else "no",
                    node["cpuPercent"],
                    node["memoryPercent"],
                    node["diskPercent"],
                    node["managedContainers"],
                    node["load"],
                ]
            )
        lines += _table(rows, "  ")
        if pool["inFlight"]:
            lines.append(f"  In flight ({len(pool['inFlight'])}):")
            rows = [["VMID", "ACTION", "POLICY", "FROM", "TO", "SINCE", "REASON"]]
            rows += [
                [
                    o.get("vmid"),
                    o.get("action"),
                    o.get("policy"),
                    o.get("sourceNode"),
                    o.get("targetNode"),
                    o.get("startedAt"),
                    o.get("reason"),
                ]
                for o in pool["inFlight"]
            ]
            lines += _table(rows, "    ")
        else:
            lines.append("  In flight: none")
        if pool["recentActions"]:
            lines.append(f"  Last actions ({len(pool['recentActions'])} of {pool['recentActionsTotal']}):")
            rows = [["TIME", "ACTION", "VMID", "FROM", "TO", "RESULT", "DETAILS"]]
            rows += [
                [
                    a.get("time"),
                    a.get("action"),
                    a.get("vmid"),
                    a.get("sourceNode"),
                    a.get("targetNode"),
                    a.get("result"),
                    a.get("message") or a.get("reason"),
                ]
                for a in pool["recentActions"]
            ]
            lines += _table(rows, "    ")
        else:
            lines.append("  Last actions: none")
        if pool["recommendations"] or pool["offloaded"]:
            lines.append(f"  Recommendations: {pool['recommendations']}; offloaded CTs: {pool['offloaded']}")
        lines.append("")
    if not document["policies"]:
        lines.append(f"No ContainerPolicy in namespace {document['namespace']}.")
        return lines
    rows = [["POLICY", "POOL", "REPLICAS", "DESIRED", "READY", "OFFLOADED", "MIGRATING", "CONDITIONS"]]
    for policy in document["policies"]:
        flags = [f for f, on in (("pinned", policy["pinned"]), ("paused", policy["paused"])) if on]
        conditions = (
            ", ".join(
                f"{c['type']}={c['status']}" + (f" ({c['reason']})" if c.get("reason") else "")
                for c in policy["conditions"]
            )
            or "none yet"
        )
        rows.append(
            [
                policy["name"] + (f" [{','.join(flags)}]" if flags else ""),
                policy["pool"],
                policy["replicas"],
                policy["desiredReplicas"],
                policy["readyReplicas"],
                policy["offloadedReplicas"],
                policy["migratingReplicas"],
                conditions,
            ]
        )
    lines += _table(rows)
    for policy in document["policies"]:
        for c in policy["conditions"]:
            unhealthy = (c["type"] == "Ready") != (c["status"] == "True") and c["type"] in ("Ready", "Degraded")
            if unhealthy and c.get("message"):
                lines.append(f"  {policy['name']} {c['type']}={c['status']}: {c['message']}")
    return lines


# -- pin / unpin --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    pool: str
    spec: ProxmoxServerPoolSpec
    client: Any
    node: str


def _locate(namespace: str, pool_name: str | None, vmid: int, runtime: Any) -> Located:
    """The pool whose Proxmox VE cluster has CT ``vmid``, and the node it is on now."""
    from pve_operator.runtime import ConfigurationError

    bodies = [get_pool(namespace, pool_name)] if pool_name else list_objects(namespace, POOLS)
    if not bodies:
        raise CommandError(f"no ProxmoxServerPool in namespace {namespace}")
    found: list[Located] = []
    for body in bodies:
        name = str(body["metadata"]["name"])
        spec = pool_spec(body)
        try:
            client = runtime.connection(namespace, name, spec).client
        except ConfigurationError as exc:
            if exc.reason == "SecretForbidden":
                raise CommandError(
                    f"you may not read Secret {namespace}/{spec.credentials_secret_ref.name}: pin and unpin reach "
                    f"Proxmox VE with pool {name}'s credentials"
                ) from None
            raise CommandError(f"pool {name}: {exc.message}") from None
        node = client.locate_container(vmid)
        if node is not None:
            found.append(Located(name, spec, client, node))
    if not found:
        where = f"pool {pool_name}'s" if pool_name else "any pool's"
        raise CommandError(f"CT {vmid} does not exist in {where} Proxmox VE cluster (namespace {namespace})")
    if len(found) > 1:
        names = ", ".join(f.pool for f in found)
        raise CommandError(f"CT {vmid} exists in the clusters of pools {names}: choose one with --pool")
    return found[0]


def prove_owner(
    vmid: int, config: Mapping[str, Any], pool: str, policies: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any]:
    """The ContainerPolicy of ``pool`` whose three ownership marks CT ``vmid`` carries; refuse otherwise.

    The plugin cannot check the record's signature (only the operator reads its key): it acts with its
    user's own PVE rights, so this check keeps users from changing foreign CTs by mistake, and the
    operator itself never acts on a CT whose signature does not verify."""
    tags = normalize_tags(str(config.get("tags") or ""))
    description = str(config.get("description") or "")
    in_range = []
    for policy in policies:
        spec = policy.get("spec") or {}
        if (spec.get("poolRef") or {}).get("name") != pool:
            continue
        vmid_range = spec.get("vmidRange") or {}
        span = range(int(vmid_range.get("start", 0)), int(vmid_range.get("end", -1)) + 1)
        uid = str(policy["metadata"]["uid"])
        if carries_ownership_marks(vmid=vmid, tags=tags, description=description, policy_uid=uid, vmid_range=span):
            return policy
        if vmid in span:
            in_range.append((policy, uid))
    refusal = f"refusing: CT {vmid} is not the operator's"
    if not in_range:
        raise CommandError(f"{refusal}: it lies in no vmidRange of a ContainerPolicy of pool {pool}")
    reasons = []
    record = parse_record(description)
    for policy, uid in in_range:
        missing = sorted(ownership_tags(uid) - tags)
        why = []
        if missing:
            why.append(f"tags {', '.join(missing)} missing")
        if record is None:
            why.append("no ownership record in its description")
        elif record.policy_uid != uid:
            why.append(f"its description's ownership record names another policy ({record.policy_name})")
        reasons.append(f"{policy['metadata']['name']}: {'; '.join(why)}")
    raise CommandError(f"{refusal} ({' / '.join(reasons)}); the operator and this plugin never change foreign CTs")


def cmd_pin(args: argparse.Namespace) -> int:
    from pve_operator.execution.pool_input import PINNED_ANNOTATION
    from pve_operator.runtime import OperatorRuntime

    pin = args.command == "pin"
    vmid: int = args.ct
    runtime = OperatorRuntime()
    try:
        where = _locate(args.namespace, args.pool, vmid, runtime)
        config = where.client.container_config(where.node, vmid)
        policy = prove_owner(vmid, config, where.pool, list_objects(args.namespace, POLICIES))
        tags = normalize_tags(str(config.get("tags") or ""))
        wanted = tags | {PINNED_TAG} if pin else tags - {PINNED_TAG}
        changed = wanted != tags
        if changed:
            params: dict[str, Any] = {"tags": ";".join(sorted(wanted))}
            if config.get("digest"):
                params["digest"] = config["digest"]  # PVE refuses the write if the config changed meanwhile
            where.client.update_container_config(where.node, vmid, params)
    finally:
        runtime.close()
    annotations = policy["metadata"].get("annotations") or {}
    by_policy = str(annotations.get(PINNED_ANNOTATION, "")).lower() == "true"
    document = {
        "vmid": vmid,
        "pool": where.pool,
        "node": where.node,
        "policy": policy["metadata"]["name"],
        "pinned": pin or by_policy,
        "pinnedByTag": pin,
        "pinnedByPolicy": by_policy,
        "changed": changed,
        "tags": sorted(wanted),
    }
    if args.output != "table":
        emit(document, args.output)
        return 0
    state = "pinned" if pin else "unpinned"
    prefix = f"CT {vmid} (policy {policy['metadata']['name']}, node {where.node}, pool {where.pool})"
    if not changed:
        print(f"{prefix} was already {state}: nothing changed")
    elif pin:
        print(f"{prefix} pinned: tag {PINNED_TAG} set; the operator will not migrate or offload it")
    else:
        print(f"{prefix} unpinned: tag {PINNED_TAG} removed")
    if not pin and by_policy:
        print(f"note: ContainerPolicy {policy['metadata']['name']} has {PINNED_ANNOTATION}=true: its CTs stay pinned")
    return 0


# -- drain / uncordon ---------------------------------------------------------------------------


def cmd_maintenance(args: argparse.Namespace) -> int:
    on = args.command == "drain"
    body = get_pool(args.namespace, args.pool)
    nodes = list((body.get("spec") or {}).get("nodes") or ())
    index = next((i for i, n in enumerate(nodes) if n.get("name") == args.node), None)
    if index is None:
        known = ", ".join(str(n.get("name")) for n in nodes) or "none"
        raise CommandError(f"node {args.node} is not in pool {args.namespace}/{args.pool} (its nodes: {known})")
    changed = bool(nodes[index].get("maintenance", False)) != on
    if changed:
        patch = [
            # The test makes the patch fail, rather than flag another node, if the list changed meanwhile.
            {"op": "test", "path": f"/spec/nodes/{index}/name", "value": args.node},
            {"op": "add", "path": f"/spec/nodes/{index}/maintenance", "value": on},
        ]
        try:
            kube_client.CustomObjectsApi().patch_namespaced_custom_object(
                GROUP, VERSION, args.namespace, POOLS, args.pool, patch, _content_type="application/json-patch+json"
            )
        except ApiException as exc:
            if exc.status == 422 and "test" in str(exc.body or "").lower():
                raise CommandError(
                    f"pool {args.namespace}/{args.pool}'s nodes changed while it was patched: run the command again"
                ) from None
            raise
    others = [n for i, n in enumerate(nodes) if i != index and not n.get("maintenance", False) and n.get("weight", 1)]
    document = {
        "pool": args.pool,
        "namespace": args.namespace,
        "node": args.node,
        "maintenance": on,
        "changed": changed,
    }
    if args.output != "table":
        emit(document, args.output)
        return 0
    where = f"node {args.node} of pool {args.namespace}/{args.pool}"
    if not changed:
        print(f"{where} was already {'in maintenance' if on else 'out of maintenance'}: nothing changed")
    elif on:
        print(f"{where} drained: maintenance on; the operator migrates its CTs away and places nothing new on it")
        if not others:
            print("warning: no other node of the pool takes new CTs now")
    else:
        print(f"{where} uncordoned: maintenance off; the operator may place CTs on it again")
    return 0


# -- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    def common(parser: argparse.ArgumentParser, top: bool) -> None:
        # Accepted before and after the command; given after it, a value wins (SUPPRESS keeps the
        # subcommand from resetting one given before it to the default).
        default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
        parser.add_argument(
            "-n",
            "--namespace",
            default=default(None),
            help="namespace (default: the context's namespace, else default)",
        )
        parser.add_argument("--context", default=default(None), help="kubeconfig context to use")
        parser.add_argument("--kubeconfig", default=default(None), help="kubeconfig file to use")
        parser.add_argument("-o", "--output", choices=OUTPUTS, default=default("table"), help="output format")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The pve-operator's kubectl plugin: plans, status, pins and node maintenance.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(parser, True)
    sub = parser.add_subparsers(dest="command", metavar="{plan,status,pin,unpin,drain,uncordon}", required=True)

    plan = sub.add_parser(
        "plan",
        help="the plan the operator would make now (changes nothing)",
        description="The plan the operator would make now: one snapshot of the pool's Proxmox "
        "VE cluster, the planner the operator runs, the actions and refusals. Changes nothing.",
    )
    plan.add_argument("--pool", required=True, help="ProxmoxServerPool name")
    plan.add_argument("--as-sampled", action="store_true", help="do not treat the current sample as sustained")
    plan.set_defaults(handler=cmd_plan)

    status = sub.add_parser(
        "status",
        help="pools and policies at a glance",
        description="Pools and policies at a glance, from their status: per pool Ready and "
        "Degraded, node usage against the thresholds, operations in flight and the last "
        "actions; per policy its replica counts and conditions.",
    )
    status.add_argument("--pool", help="only this pool and its policies")
    status.add_argument("--tail", type=int, default=5, help="last actions shown per pool (default: 5)")
    status.set_defaults(handler=cmd_status)

    for name, verb in (("pin", "never migrate or offload"), ("unpin", "let the operator migrate and offload")):
        p = sub.add_parser(
            name,
            help=f"{verb} one CT (tag {PINNED_TAG})",
            description=f"{verb.capitalize()} one CT of the operator's, by setting or removing "
            f"its tag {PINNED_TAG} in Proxmox VE through the pool's connection. The CT must carry "
            "the operator's ownership marks; any other CT is refused.",
        )
        p.add_argument("ct", type=int, metavar="CT", help="VMID of the CT")
        p.add_argument("--pool", help="ProxmoxServerPool (default: the pool whose cluster has the CT)")
        p.set_defaults(handler=cmd_pin)

    for name, what in (("drain", "set"), ("uncordon", "clear")):
        p = sub.add_parser(
            name,
            help=f"{what} spec.nodes[].maintenance of a node",
            description=f"{what.capitalize()} the maintenance flag of NODE in the pool's "
            "spec.nodes: "
            + (
                "the operator migrates its CTs away and places nothing new there."
                if name == "drain"
                else "the node takes CTs again."
            ),
        )
        p.add_argument("node", metavar="NODE", help="node name as in spec.nodes")
        p.add_argument("--pool", required=True, help="ProxmoxServerPool name")
        p.set_defaults(handler=cmd_maintenance)

    for p in sub.choices.values():
        common(p, False)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _api_error(exc: ApiException) -> str:
    message = exc.reason or ""
    with suppress(ValueError, AttributeError):
        message = json.loads(exc.body or "{}").get("message") or message
    return f"Kubernetes API: {exc.status} {message}"


def _fail(message: str) -> NoReturn:
    print(f"error: {_one_line(message)}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from pve_operator.pve.errors import PveError
    from pve_operator.runtime import ConfigurationError

    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        context_namespace = load_config(args.kubeconfig, args.context)
        args.namespace = args.namespace or context_namespace
        return handler(args)
    except CommandError as exc:
        _fail(str(exc))
    except ApiException as exc:
        _fail(_api_error(exc))
    except ConfigurationError as exc:
        _fail(exc.message)
    except PveError as exc:
        _fail(f"Proxmox VE: {exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, never a traceback: this is a user's command
        _fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
