"""The operator's Deployment, Namespace and image keep the security settings and probes they were reviewed with.

Each assertion is a setting someone could weaken in passing (drop readOnlyRootFilesystem to "fix" a write,
drop --leader-elect from two replicas, remove a probe); these tests make that a deliberate change. The
manifests are read as written in deploy/base/ and the Dockerfile at the repository root;
tests/integration/test_deploy_manifests.py checks that the API server accepts them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "base"
NONROOT_UID = 65532


def _document(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _document(BASE / "deployment.yaml")


@pytest.fixture(scope="module")
def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


@pytest.fixture(scope="module")
def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec["containers"]
    assert len(containers) == 1, "one container: the operator"
    assert not pod_spec.get("initContainers"), "init containers would need the same review"
    assert isinstance(containers[0], dict)
    return containers[0]


def test_two_replicas_of_which_the_lease_holder_acts(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    """Standalone Kopf: two pods would both act on every object (double CT creations), unless each waits for
    the Lease first. With --leader-elect a rolling update is safe: the new pod starts as a standby."""
    assert deployment["metadata"]["namespace"] == "pve-operator"
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-elect" in container["args"]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # The Lease lives in the pod's own namespace, from the downward API.
    assert {
        "name": "PVE_OPERATOR_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in container["env"]


def test_replicas_prefer_different_nodes(deployment: dict[str, Any], pod_spec: dict[str, Any]) -> None:
    (term,) = pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod_spec["affinity"]["podAntiAffinity"], (
        "required would leave the second replica Pending on a one-node cluster"
    )


def test_disruption_budget_evicts_one_pod_at_a_time(deployment: dict[str, Any]) -> None:
    """maxUnavailable 1 counts ready pods: the standby is ready (it answers the probes), so the leader can be
    evicted (it releases the Lease) while the standby stays."""
    budget = _document(BASE / "pdb.yaml")
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    assert "pdb.yaml" in _document(BASE / "kustomization.yaml")["resources"]


def test_pod_runs_as_nonroot_with_runtime_default_seccomp(pod_spec: dict[str, Any]) -> None:
    security = pod_spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == NONROOT_UID
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")
    assert pod_spec["serviceAccountName"] == "pve-operator"


def test_container_is_locked_down(container: dict[str, Any]) -> None:
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == NONROOT_UID
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}, "no capability is added back"
    assert security.get("seccompProfile", {"type": "RuntimeDefault"}) == {"type": "RuntimeDefault"}


def test_only_tmp_is_writable(pod_spec: dict[str, Any], container: dict[str, Any]) -> None:
    """With a read-only root, /tmp (an emptyDir with a size limit) is the one place files can be written."""
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    volumes = {volume["name"]: volume for volume in pod_spec["volumes"]}
    assert set(volumes) == {"tmp"}
    assert "sizeLimit" in volumes["tmp"]["emptyDir"]


def test_liveness_and_readiness_probe_kopfs_health_endpoint(container: dict[str, Any]) -> None:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    assert env.get("PVE_OPERATOR_METRICS_PORT", "9090") == "9090", "the metrics port is the one declared"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    for probe_name in ("livenessProbe", "readinessProbe"):
        probe = container[probe_name]
        assert probe["httpGet"]["path"] == "/healthz", probe_name
        assert ports[probe["httpGet"]["port"]] == 8080, probe_name
        assert probe["timeoutSeconds"] >= 1 and probe["failureThreshold"] >= 3, probe_name


def test_operator_watches_all_namespaces_and_logs_json(container: dict[str, Any]) -> None:
    """The ClusterRoleBinding in rbac.yaml is sized for -A; JSON logs for log collectors."""
    args = container["args"]
    assert "--all-namespaces" in args or "-A" in args
    assert "--log-format=json" in args


def test_resources_are_bounded(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_termination_grace_lets_kopf_release(pod_spec: dict[str, Any]) -> None:
    """Kopf needs its own 5 s exit timeout plus a handler finishing a Proxmox call."""
    assert pod_spec["terminationGracePeriodSeconds"] >= 30


def test_namespace_enforces_pod_security_restricted() -> None:
    labels = _document(BASE / "namespace.yaml")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_metrics_service_is_scraped_on_9090() -> None:
    service = _document(BASE / "service-metrics.yaml")
    assert service["metadata"]["name"] == "pve-operator-metrics"
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(9090, "metrics")]


# ---------------------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore (no image is built here: these machines have no container engine)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def test_image_base_is_pinned_to_an_exact_python_311_slim_bookworm_release() -> None:
    instructions = _dockerfile_instructions()
    args = dict(arg.split("=", 1) for name, arg in instructions if name == "ARG" and "=" in arg)
    bases = [arg.split()[0] for name, arg in instructions if name == "FROM"]
    assert len(bases) == 2, "multi-stage: a build stage and the runtime stage"
    for base in bases:
        image = args.get(base.strip("${}"), base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), (
            f"{image} is not pinned by exact tag and digest"
        )


def test_image_runs_the_operator_as_uid_65532() -> None:
    instructions = _dockerfile_instructions()
    runtime = instructions[max(i for i, (name, _) in enumerate(instructions) if name == "FROM") :]
    users = [arg for name, arg in runtime if name == "USER"]
    assert users and users[-1].split(":")[0] == str(NONROOT_UID), "numeric: runAsNonRoot can verify it"
    entrypoints = [json.loads(arg) for name, arg in runtime if name == "ENTRYPOINT"]
    assert entrypoints == [["python", "-m", "pve_operator", "run"]]
    assert any(name == "COPY" and arg.startswith("--from=build ") for name, arg in runtime), (
        "the runtime stage takes the installed wheel from the build stage"
    )
    assert not any(name == "RUN" and "pip install" in arg for name, arg in runtime), "nothing is built at runtime"


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything else; everything COPY needs is let back in."""
    ignore = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for name, arg in _dockerfile_instructions():
        if name == "COPY" and not arg.startswith("--from"):
            copied.update(arg.split()[:-1])
    assert copied == allowed
    for source in copied:
        assert (REPO / source).exists(), source
