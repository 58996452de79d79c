"""The CRDs on a real kube-apiserver, driven with the real kubectl: install, explain, samples, defaults,
rejections (with their messages), status through /status, printer columns, categories and kubectl scale."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from pve_operator.api.v1alpha1 import (
    CONTAINER_POLICY,
    PROXMOX_SERVER_POOL,
    ActionKind,
    ActionResult,
    ConditionStatus,
    ConditionType,
    ContainerPolicySpec,
    ContainerPolicyStatus,
    ContainerState,
    ContainerStatus,
    CustomResource,
    NodeDistribution,
    NodeStatus,
    ProxmoxServerPoolSpec,
    ProxmoxServerPoolStatus,
    RecordedAction,
    set_condition,
)
from tests.fixtures.crds import (
    CRD_NAMES,
    INVALID_MANIFESTS,
    SAMPLE_FILL_POLICY,
    SAMPLE_POLICY,
    SAMPLE_POOL,
    SAMPLES_DIR,
    InvalidManifest,
    load_sample,
)
from tests.fixtures.kube import KubeCluster, wait_for

pytestmark = pytest.mark.usefixtures("installed_crds")

NOW = datetime(2025, 11, 23, 12, 0, 0, tzinfo=UTC)
SAMPLE_FILES = sorted(p.name for p in SAMPLES_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def _get(kube: KubeCluster, namespace: str, resource: str, name: str) -> dict[str, Any]:
    document = kube.kubectl_json("get", "--namespace", namespace, resource, name)
    assert isinstance(document, dict)
    return document


def _table(output: str) -> list[list[str]]:
    """Rows of a kubectl table (header first), cut at the header's column starts (empty cells stay '')."""
    header, *rows = output.rstrip("\n").splitlines()
    starts = [match.start() for match in re.finditer(r"\S+(?: \S+)*", header)]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [[line[start:end].strip() for start, end in bounds] for line in (header, *rows)]


def _write_status(kube: KubeCluster, namespace: str, resource: CustomResource, name: str, status: Any) -> None:
    kube.kubectl(
        "patch",
        "--namespace",
        namespace,
        f"{resource.plural}.{resource.group}",
        name,
        "--subresource=status",
        "--type=merge",
        "--patch",
        json.dumps({"status": status.to_dict()}),
    )


def _apply_lab(kube: KubeCluster, namespace: str, *samples: str) -> None:
    for sample in samples or (SAMPLE_POOL, SAMPLE_POLICY):
        kube.apply(SAMPLES_DIR / sample, namespace=namespace)


def _pool_status() -> ProxmoxServerPoolStatus:
    return ProxmoxServerPoolStatus(
        observed_generation=1,
        conditions=set_condition((), ConditionType.READY, ConditionStatus.TRUE, reason="Connected", now=NOW),
        pve_version="9.1.2",
        node_summary="2/2",
        nodes=(
            NodeStatus(name="srv-px1", online=True, cpu_percent=12.5, memory_percent=61.0, disk_percent=22.0,
                       managed_containers=6),
            NodeStatus(name="srv-px2", online=True, cpu_percent=8.0, memory_percent=40.5, disk_percent=18.0,
                       managed_containers=3),
        ),
        last_sample_time=NOW,
    )


def _policy_status() -> ContainerPolicyStatus:
    conditions = set_condition(
        (), ConditionType.READY, ConditionStatus.FALSE, reason="Offloaded", message="1 CT offloaded", now=NOW
    )
    conditions = set_condition(conditions, ConditionType.PROGRESSING, ConditionStatus.TRUE, reason="Migrating", now=NOW)
    return ContainerPolicyStatus(
        observed_generation=1,
        conditions=conditions,
        replicas=9,
        desired_replicas=9,
        ready_replicas=7,
        offloaded_replicas=1,
        migrating_replicas=1,
        containers=(
            ContainerStatus(vmid=3100, hostname="ct-web-00", node="srv-px1", state=ContainerState.RUNNING,
                            created_at=NOW, cpu_percent=1.2, memory_percent=3.4, disk_percent=2.4),
            ContainerStatus(vmid=3101, hostname="ct-web-01", node="srv-px2", state=ContainerState.MIGRATING),
            ContainerStatus(vmid=3102, hostname="ct-web-02", node="srv-px1", state=ContainerState.OFFLOADED),
        ),
        distribution=(
            NodeDistribution(node="srv-px1", replicas=6, running=5),
            NodeDistribution(node="srv-px2", replicas=3, running=2),
        ),
        recent_actions=(
            RecordedAction(
                time=NOW,
                action=ActionKind.OFFLOAD,
                vmid=3102,
                hostname="ct-web-02",
                policy="web",
                source_node="srv-px1",
                reason="srv-px1 memory 93% > offloadAbovePercent 90 for 3 samples",
                source_percent_before=93.0,
                source_percent_after=86.5,
                result=ActionResult.SUCCEEDED,
            ),
        ),
    )


# ---------------------------------------------------------------------------------------------
# Installation and discovery


def test_crds_are_established_with_names_accepted(kube: KubeCluster) -> None:
    for name in CRD_NAMES:
        crd = kube.kubectl_json("get", "customresourcedefinition", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True", conditions
    resources = _table(kube.kubectl("api-resources", "--api-group=pve.ctoperator.io", "-o", "wide").stdout)
    by_name = {row[0]: row for row in resources[1:]}
    assert "ctp,ctpolicy,ctpolicies" in by_name["containerpolicies"]
    assert "pvepool,pvepools" in by_name["proxmoxserverpools"]
    assert all(row[-1] == "proxmox" for row in by_name.values()), by_name


def test_kubectl_explain_shows_the_descriptions(kube: KubeCluster) -> None:
    explained: dict[str, str] = {}

    def explain() -> bool:
        # The OpenAPI document is published a moment after the CRD is Established.
        result = kube.kubectl("explain", "proxmoxserverpool.spec.thresholds", check=False)
        explained["out"] = result.stdout
        return result.returncode == 0

    wait_for(explain, timeout_s=30, what="kubectl explain proxmoxserverpool.spec.thresholds")
    text = " ".join(explained["out"].split())
    assert "GROUP: pve.ctoperator.io" in text and "VERSION: v1alpha1" in text
    assert "restoreBelowPercent < migrateAbovePercent < offloadAbovePercent" in text
    assert "creationCeilingPercent <integer>" in text
    assert "No new CT is placed on a node whose usage is at or above this, in percent." in text
    assert "enum: memory, cpu, disk, max" in text

    hostname = " ".join(kube.kubectl("explain", "ctp.spec.hostnamePattern").stdout.split())
    assert "e.g. ct-web-{index:02d} gives ct-web-00, ct-web-01" in hostname


# ---------------------------------------------------------------------------------------------
# Samples and defaults


@pytest.mark.parametrize("sample", SAMPLE_FILES)
def test_sample_applies_with_server_dry_run_then_for_real(kube: KubeCluster, kube_namespace: str, sample: str) -> None:
    manifest = load_sample(sample)
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    if kind == CONTAINER_POLICY.kind:
        _apply_lab(kube, kube_namespace, SAMPLE_POOL)  # a policy goes with its pool

    dry = kube.apply(SAMPLES_DIR / sample, namespace=kube_namespace, server_dry_run=True)
    assert "(server dry run)" in dry.stdout
    missing = kube.kubectl("get", "--namespace", kube_namespace, kind, name, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr, "a dry run must not create anything"

    created = kube.apply(SAMPLES_DIR / sample, namespace=kube_namespace)
    assert "created" in created.stdout
    stored = _get(kube, kube_namespace, kind, name)
    assert stored["metadata"]["name"] == name


def test_kustomization_applies_the_lab_and_never_overwrites_the_credentials(
    kube: KubeCluster, kube_namespace: str
) -> None:
    """Seen in a review: `kubectl apply -k deploy/samples` replaced a real Secret's token with the
    sample's placeholder. The user creates the Secret; the kustomization never sends one."""
    kube.kubectl("create", "secret", "generic", "lab-pve-credentials", "--namespace", kube_namespace,
                 "--from-literal=tokenId=ctoperator@pve!operator", "--from-literal=tokenSecret=the-real-one")
    out = kube.kubectl("apply", "--namespace", kube_namespace, "-k", str(SAMPLES_DIR)).stdout
    assert "secret" not in out
    assert "proxmoxserverpool.pve.ctoperator.io/lab created" in out
    assert "containerpolicy.pve.ctoperator.io/web created" in out
    secret = kube.kubectl_json("get", "secret", "lab-pve-credentials", "--namespace", kube_namespace)
    assert base64.b64decode(secret["data"]["tokenSecret"]).decode() == "the-real-one"


def test_server_side_defaults_are_visible_on_read_and_are_the_models(kube: KubeCluster, kube_namespace: str) -> None:
    _apply_lab(kube, kube_namespace, SAMPLE_POOL, SAMPLE_POLICY, SAMPLE_FILL_POLICY)

    pool = _get(kube, kube_namespace, "proxmoxserverpool", "lab")["spec"]
    assert pool["thresholds"] == {
        "metric": "memory",
        "creationCeilingPercent": 80,
        "migrateAbovePercent": 75,
        "offloadAbovePercent": 90,
        "restoreBelowPercent": 60,
        "sustainedSamples": 3,
    }
    assert pool["balancing"] == {
        "mode": "Automatic",
        "intervalSeconds": 30,
        "maxConcurrentMigrations": 1,
        "cooldownSeconds": 1800,
        "minImprovementPercent": 10,
        "objective": "Relieve",
        "minGainPercent": 2,
        "levelTolerancePercent": 5,
    }
    assert pool["offload"] == {"mode": "Automatic"}
    assert pool["tls"] == {"insecureSkipVerify": False, "caConfigMapRef": {"name": "lab-pve-ca", "key": "ca.crt"}}
    assert [n["maintenance"] for n in pool["nodes"]] == [False, False]
    assert [n["labels"] for n in pool["nodes"]] == [{}, {}]
    # What the operator parses is exactly what the API server stored: same defaults on both sides.
    assert ProxmoxServerPoolSpec.model_validate(pool).to_dict() == pool

    for name in ("web", "batch"):
        policy = _get(kube, kube_namespace, "containerpolicy", name)["spec"]
        template = policy["template"]
        assert (template["unprivileged"], template["startOnCreate"]) == (True, True)
        assert template["features"] == {"nesting": False, "keyctl": False, "fuse": False, "mknod": False, "mount": []}
        # Issue 11's settings default to Proxmox VE's own defaults (nothing sent at create).
        assert (template["onBoot"], template["protection"], template["description"]) == (False, False, "")
        assert (template["sshPublicKeys"], template["nameservers"]) == ([], [])
        assert (template["networks"][0]["ip"], template["networks"][0]["firewall"]) == ("dhcp", False)
        assert (policy["deletionPolicy"], policy["paused"], policy["priority"] in (50, 100)) == ("Delete", False, True)
        assert policy["placement"] == {"strategy": "WeightedSpread", "nodeWeights": [], "topologySpreadConstraints": []}
        assert policy["updateStrategy"] == {"type": "RollingUpdate", "maxUnavailable": 1, "maxSurge": 0}
        assert ContainerPolicySpec.model_validate(policy).to_dict() == policy
    assert _get(kube, kube_namespace, "ctp", "web")["spec"]["template"]["swapMiB"] == 512


# ---------------------------------------------------------------------------------------------
# Rejections


@pytest.mark.parametrize("case", INVALID_MANIFESTS, ids=lambda c: c.id)
def test_api_server_refuses_invalid_manifest(kube: KubeCluster, kube_namespace: str, case: InvalidManifest) -> None:
    if case.update:
        kube.apply(yaml.safe_dump(case.original()), namespace=kube_namespace)
    result = kube.kubectl(
        "apply", "--namespace", kube_namespace, "--dry-run=server", "-f", "-",
        input=yaml.safe_dump(case.manifest()), check=False,
    )
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for expected in case.server_says:
        assert expected in result.stderr


@pytest.mark.parametrize(
    ("ip", "gateway"),
    [
        ("10.0.0.5/24", "10.0.0.1"),
        ("10.0.0.1/31", "10.0.0.0"),  # RFC 3021: both addresses of a /31 are hosts
        # Outside the subnet: Proxmox VE adds an on-link route to the gateway (routed setups); the operator
        # only warns (ContainerPolicySpec.warnings).
        ("10.0.0.5/24", "10.1.0.1"),
        ("203.0.113.10/32", "198.51.100.1"),
    ],
)
def test_api_server_accepts_gateways_proxmox_accepts(
    kube: KubeCluster, kube_namespace: str, ip: str, gateway: str
) -> None:
    manifest = load_sample(SAMPLE_POLICY)
    manifest["spec"]["template"]["networks"] = [{"name": "eth0", "bridge": "vmbr0", "ip": ip, "gateway": gateway}]
    result = kube.kubectl(
        "apply", "--namespace", kube_namespace, "--dry-run=server", "-f", "-",
        input=yaml.safe_dump(manifest), check=False,
    )
    assert result.returncode == 0, result.stderr
    ContainerPolicySpec.model_validate(manifest["spec"])


def test_api_server_accepts_an_endpoint_with_the_api_path(kube: KubeCluster, kube_namespace: str) -> None:
    manifest = load_sample(SAMPLE_POOL)
    manifest["spec"]["endpoint"] = "https://127.0.0.1:8006/api2/json"
    result = kube.kubectl(
        "apply", "--namespace", kube_namespace, "--dry-run=server", "-f", "-",
        input=yaml.safe_dump(manifest), check=False,
    )
    assert result.returncode == 0, result.stderr
    assert ProxmoxServerPoolSpec.model_validate(manifest["spec"]).address.path_prefix == ""


def test_each_rejection_names_its_field_once(kube: KubeCluster, kube_namespace: str) -> None:
    """Seen in a review: `replicas: -1` was listed twice, by the schema's minimum and by the API
    server's own scale-subresource check. Every rejection lists each problem once."""
    failures = []
    for case in INVALID_MANIFESTS:
        if case.update:
            continue
        result = kube.kubectl(
            "apply", "--namespace", kube_namespace, "--dry-run=server", "-f", "-",
            input=yaml.safe_dump(case.manifest()), check=False,
        )
        problems = [line for line in result.stderr.splitlines() if line.startswith("* ")]
        fields = [line.split(":", 1)[0].lstrip("* .") for line in problems]
        if len(fields) != len(set(fields)):
            failures.append(f"{case.id}: {result.stderr}")
    assert not failures, "\n".join(failures)


def test_status_subresource_stores_the_operators_status_exactly(kube: KubeCluster, kube_namespace: str) -> None:
    _apply_lab(kube, kube_namespace)
    before = _get(kube, kube_namespace, "ctp", "web")["metadata"]["generation"]

    _write_status(kube, kube_namespace, CONTAINER_POLICY, "web", _policy_status())
    _write_status(kube, kube_namespace, PROXMOX_SERVER_POOL, "lab", _pool_status())

    policy = _get(kube, kube_namespace, "ctp", "web")
    assert policy["status"] == _policy_status().to_dict(), "the status schema pruned or defaulted something"
    assert ContainerPolicyStatus.model_validate(policy["status"]) == _policy_status()
    assert policy["metadata"]["generation"] == before, "a status write is not a spec change"
    assert _get(kube, kube_namespace, "pvepool", "lab")["status"] == _pool_status().to_dict()

    # Status is structured: values outside the schema are refused, not stored.
    bad = kube.kubectl(
        "patch", "--namespace", kube_namespace, "ctp", "web", "--subresource=status", "--type=merge",
        "--patch", json.dumps({"status": {"containers": [{"vmid": 3100, "hostname": "x", "state": "Exploded"}]}}),
        check=False,
    )
    assert bad.returncode != 0 and "status.containers[0].state" in bad.stderr and "Unsupported value" in bad.stderr

    # Writes to the main resource ignore status.
    kube.kubectl("patch", "--namespace", kube_namespace, "ctp", "web", "--type=merge",
                 "--patch", json.dumps({"status": {"replicas": 0}, "spec": {"paused": True}}))
    policy = _get(kube, kube_namespace, "ctp", "web")
    assert policy["status"]["replicas"] == 9 and policy["spec"]["paused"] is True
    assert policy["metadata"]["generation"] == before + 1


# ---------------------------------------------------------------------------------------------
# kubectl get, categories, field selectors, scale


def test_kubectl_get_prints_the_columns(kube: KubeCluster, kube_namespace: str) -> None:
    _apply_lab(kube, kube_namespace)
    _write_status(kube, kube_namespace, CONTAINER_POLICY, "web", _policy_status())
    _write_status(kube, kube_namespace, PROXMOX_SERVER_POOL, "lab", _pool_status())

    for name in ("ctpolicies", "ctp", "ctpolicy", "containerpolicies"):
        header, row = _table(kube.kubectl("get", "--namespace", kube_namespace, name).stdout)
        assert header == ["NAME", "POOL", "DESIRED", "RUNNING", "OFFLOADED", "MIGRATING", "UPDATED", "READY", "AGE"]
        assert row[:6] == ["web", "lab", "9", "7", "1", "1"] and row[7] == "False"

    header, row = _table(kube.kubectl("get", "--namespace", kube_namespace, "ctp", "-o", "wide").stdout)
    assert header[-2:] == ["FILL", "REASON"] and row[-1] == "Offloaded"

    for name in ("proxmoxserverpools", "pvepool", "pvepools"):
        header, row = _table(kube.kubectl("get", "--namespace", kube_namespace, name).stdout)
        assert header == ["NAME", "ENDPOINT", "NODES", "MODE", "READY", "AGE"]
        assert row[:5] == ["lab", "https://127.0.0.1:8006", "2/2", "Automatic", "True"]
    header, row = _table(kube.kubectl("get", "--namespace", kube_namespace, "pvepool", "-o", "wide").stdout)
    assert header[-3:] == ["OFFLOAD", "VERSION", "REASON"] and row[-3:] == ["Automatic", "9.1.2", "Connected"]

    both = kube.kubectl("get", "--namespace", kube_namespace, "proxmox").stdout
    assert "proxmoxserverpool.pve.ctoperator.io/lab" in both
    assert "containerpolicy.pve.ctoperator.io/web" in both


def test_columns_are_empty_not_wrong_before_the_operator_writes_status(kube: KubeCluster, kube_namespace: str) -> None:
    _apply_lab(kube, kube_namespace)
    header, row = _table(kube.kubectl("get", "--namespace", kube_namespace, "ctp", "web").stdout)
    assert dict(zip(header, row, strict=True)) | {"AGE": "-"} == {
        "NAME": "web", "POOL": "lab", "DESIRED": "", "RUNNING": "", "OFFLOADED": "", "MIGRATING": "", "UPDATED": "",
        "READY": "", "AGE": "-",
    }


def test_policies_can_be_selected_by_pool(kube: KubeCluster, kube_namespace: str) -> None:
    _apply_lab(kube, kube_namespace, SAMPLE_POOL, SAMPLE_POLICY, SAMPLE_FILL_POLICY)
    other = load_sample(SAMPLE_POLICY)
    other["metadata"]["name"] = "web-elsewhere"
    other["spec"]["poolRef"]["name"] = "other"
    kube.apply(yaml.safe_dump(other), namespace=kube_namespace)
    names = kube.kubectl(
        "get", "--namespace", kube_namespace, "ctp", "--field-selector", "spec.poolRef.name=lab", "-o", "name"
    ).stdout.split()
    assert sorted(names) == ["containerpolicy.pve.ctoperator.io/batch", "containerpolicy.pve.ctoperator.io/web"]


def test_kubectl_scale_changes_spec_replicas(kube: KubeCluster, kube_namespace: str) -> None:
    _apply_lab(kube, kube_namespace, SAMPLE_POOL, SAMPLE_POLICY, SAMPLE_FILL_POLICY)
    _write_status(kube, kube_namespace, CONTAINER_POLICY, "web", _policy_status())
    generation = _get(kube, kube_namespace, "ctp", "web")["metadata"]["generation"]

    out = kube.kubectl("scale", "--namespace", kube_namespace, "ctp", "web", "--replicas=5").stdout
    assert "scaled" in out
    policy = _get(kube, kube_namespace, "ctp", "web")
    assert policy["spec"]["replicas"] == 5 and policy["metadata"]["generation"] == generation + 1

    scale = json.loads(
        kube.kubectl(
            "get", "--raw", f"/apis/pve.ctoperator.io/v1alpha1/namespaces/{kube_namespace}/containerpolicies/web/scale"
        ).stdout
    )
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]["replicas"]) == ("Scale", 5, 9)

    # The rules still hold through /scale: no more CTs than VMIDs, and never in fill mode.
    too_many = kube.kubectl("scale", "--namespace", kube_namespace, "ctp", "web", "--replicas=101", check=False)
    assert too_many.returncode != 0
    assert "replicas must not exceed the number of VMIDs in vmidRange" in too_many.stderr
    fill = kube.kubectl("scale", "--namespace", kube_namespace, "ctp", "batch", "--replicas=3", check=False)
    assert fill.returncode != 0
    assert "exactly one of replicas and fill must be set" in fill.stderr
    assert _get(kube, kube_namespace, "ctp", "web")["spec"]["replicas"] == 5
