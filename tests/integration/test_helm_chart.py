"""The Helm chart deploy/helm/pve-operator: lints, renders, passes the API server, and stays deploy/.

* Helm is v4 built from its Go module by hack/build-helm.sh (cached outside the clone; the session fixture
  runs the script, a no-op once built, and fails, never skips, when it cannot build).
* Three value sets: the defaults; namespace-scoped with two watched namespaces, the Namespace object,
  ServiceMonitor and PrometheusRule; and a custom image, resources, nodeSelector, names and port. Each one
  passes ``helm lint --strict`` and renders; every rendered object (CRDs included) passes ``kubectl apply
  --dry-run=server --validate=strict`` on the test cluster, in a namespace with Pod Security "restricted".
* The local control plane has no Prometheus Operator: the ServiceMonitor and PrometheusRule are dry-run
  against minimal CRDs of monitoring.coreos.com/v1 (tests/data/helm/monitoring.coreos.com-crds.yaml, only the
  fields the chart renders, strictly typed), created for the module only when the cluster has no such CRD.
* The default rendering is deploy/ (``kubectl kustomize deploy``) and the namespace-scoped one with
  watchNamespaces [pve-lab] is deploy/namespaced: the same objects, field for field, labels aside (the
  chart's labels are a superset). The chart's crds/ are byte-for-byte copies of crds/, its
  files/alerts.rules.yaml of deploy/monitoring/alerts.rules.yaml, and its README's values table lists every
  key of values.yaml.
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.kube import KubeCluster, unique_namespace_name

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "pve-operator"
CRDS = REPO / "crds"
DEPLOY = REPO / "deploy"
NAMESPACED = DEPLOY / "namespaced"
MONITORING = DEPLOY / "monitoring"
MONITORING_CRDS = REPO / "tests" / "data" / "helm" / "monitoring.coreos.com-crds.yaml"

RELEASE = "pve-operator"
OPERATOR_NAMESPACE = "pve-operator"
WATCHED = ["pve-lab", "team-b"]

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced-monitoring": {
        "watchNamespaces": WATCHED,
        "namespace": {"create": True},
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "interval": "1m",
            "scrapeTimeout": "10s",
        },
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "metrics": {"service": {"annotations": None}},  # null drops the defaults; {} would merge
    },
    "custom": {
        "fullnameOverride": "pve-op",
        "commonLabels": {"team": "infra"},
        "image": {"repository": "registry.example.com/infra/pve-operator", "tag": "0.2.0-rc1", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "logFormat": "plain",
        "extraArgs": ["--verbose"],
        "extraEnv": [{"name": "PYTHONFAULTHANDLER", "value": "1"}],
        "serviceAccount": {"annotations": {"example.com/owner": "infra"}},
        "podAnnotations": {"example.com/scrape": "no"},
        "podLabels": {"tier": "control"},
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "tmpSizeLimit": "128Mi",
        "terminationGracePeriodSeconds": 45,
        "nodeSelector": {"kubernetes.io/os": "linux", "node-role.example.com/infra": "true"},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    }
                ]
            }
        },
        "metrics": {"port": 9191, "service": {"type": "ClusterIP"}},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {
            "enabled": True,
            "groups": [
                {
                    "name": "custom",
                    "rules": [{"alert": "PveOperatorAbsent", "expr": 'absent(up{service="pve-op-metrics"})'}],
                }
            ],
        },
    },
}
"""Name -> values (the ``-f`` file of helm lint and helm template)."""

EXPECTED_COUNTS = {"default": 10, "namespaced-monitoring": 17, "custom": 12}
"""Objects rendered per value set, CRDs included: 2 CRDs, ServiceAccount, ClusterRole(Binding), the Role(Binding)
in the operator's own namespace, Deployment, PodDisruptionBudget, Service; + Namespace, a Role and RoleBinding
per watched namespace, ServiceMonitor, PrometheusRule."""

Key = tuple[str, str, str]
"""(kind, namespace or "", name)."""


def key(document: dict[str, Any]) -> Key:
    metadata = document["metadata"]
    return document["kind"], metadata.get("namespace", ""), metadata["name"]


def as_yaml(documents: Sequence[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


# ---------------------------------------------------------------------------------------------------------
# Helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """The Helm binary of hack/build-helm.sh (built on first use, then cached outside the clone)."""
    try:
        result = subprocess.run(
            ["bash", str(REPO / "hack" / "build-helm.sh")],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("hack/build-helm.sh did not finish in 30 minutes", pytrace=False)
    paths = re.findall(r"^HELM=(.+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not paths:
        pytest.fail(
            "cannot build Helm with hack/build-helm.sh (needs Go >= 1.26 and the Go module proxy; "
            f"run `make helm` to see why); exit {result.returncode}:\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return Path(paths[-1])


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, (
        f"helm {' '.join(args)} exited with {result.returncode}\n--- stdout:\n{result.stdout}\n"
        f"--- stderr:\n{result.stderr}"
    )
    return result


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def helm_template(
    helm: Path, tmp_path: Path, values: dict[str, Any], namespace: str = OPERATOR_NAMESPACE
) -> list[dict[str, Any]]:
    """``helm template --include-crds`` with these values, parsed."""
    text = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        "--values",
        str(values_file(tmp_path, values)),
    ).stdout
    return [document for document in yaml.safe_load_all(text) if document]


def with_watched(values: dict[str, Any], namespaces: Sequence[str]) -> dict[str, Any]:
    """The values with their watchNamespaces (if any) replaced by ``namespaces`` (as many as there were)."""
    values = copy.deepcopy(values)
    if values.get("watchNamespaces"):
        assert len(namespaces) >= len(values["watchNamespaces"])
        values["watchNamespaces"] = list(namespaces[: len(values["watchNamespaces"])])
    return values


def test_helm_is_the_pinned_version(helm: Path) -> None:
    assert run_helm(helm, "version", "--short").stdout.startswith("v4.3.2")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint(helm: Path, tmp_path: Path, value_set: str) -> None:
    result = run_helm(
        helm, "lint", "--strict", str(CHART), "--values", str(values_file(tmp_path, VALUE_SETS[value_set]))
    )
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_template_renders(helm: Path, tmp_path: Path, value_set: str) -> None:
    documents = helm_template(helm, tmp_path, VALUE_SETS[value_set])
    assert len(documents) == EXPECTED_COUNTS[value_set], sorted(key(d) for d in documents)
    assert len({key(d) for d in documents}) == len(documents), "two objects with the same kind and name"
    for document in documents:
        if document["kind"] != "CustomResourceDefinition":
            assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pve-operator"
            assert document["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_namespaced_rendering(helm: Path, tmp_path: Path) -> None:
    documents = helm_template(helm, tmp_path, VALUE_SETS["namespaced-monitoring"])
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [f"--namespace={ns}" for ns in WATCHED]
    assert "--all-namespaces" not in args
    for kind in ("Role", "RoleBinding"):
        assert sorted(
            d["metadata"]["namespace"] for d in documents if d["kind"] == kind and d["metadata"]["name"] == RELEASE
        ) == sorted(WATCHED)
    own = next(d for d in documents if d["kind"] == "Role" and d["metadata"]["name"] == f"{RELEASE}-own-namespace")
    assert own["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["pve-operator-ownership-key"],
        "verbs": ["get"],
    } in own["rules"], "namespace-scoped: no cluster-wide Secret rule reads the ownership key"
    cluster_role = next(d for d in documents if d["kind"] == "ClusterRole")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
    }
    namespace = next(d for d in documents if d["kind"] == "Namespace")
    assert namespace["metadata"]["name"] == OPERATOR_NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    monitor = next(d for d in documents if d["kind"] == "ServiceMonitor")
    service = next(d for d in documents if d["kind"] == "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "1m", "scrapeTimeout": "10s", "honorLabels": True}
    ]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "annotations" not in service["metadata"]


def test_custom_rendering(helm: Path, tmp_path: Path) -> None:
    values = VALUE_SETS["custom"]
    documents = helm_template(helm, tmp_path, values)
    assert {d["metadata"]["name"] for d in documents if d["kind"] != "CustomResourceDefinition"} == {
        "pve-op",
        "pve-op-metrics",
        "pve-op-own-namespace",
    }
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/infra/pve-operator:0.2.0-rc1"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == values["resources"]
    assert container["args"] == [
        "--all-namespaces",
        "--leader-elect",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=plain",
        "--verbose",
    ]
    assert {"name": "PVE_OPERATOR_METRICS_PORT", "value": "9191"} in container["env"]
    assert {"name": "PYTHONFAULTHANDLER", "value": "1"} in container["env"]
    for field in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets", "terminationGracePeriodSeconds"):
        assert pod[field] == values[field]
    assert pod["serviceAccountName"] == "pve-op"
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "128Mi"
    assert deployment["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == values["podAnnotations"]
    assert all(d["metadata"]["labels"]["team"] == "infra" for d in documents if d["kind"] != "CustomResourceDefinition")
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 9191
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "9191"
    binding = next(d for d in documents if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "pve-op"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pve-op", "namespace": OPERATOR_NAMESPACE}]
    rule = next(d for d in documents if d["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == values["prometheusRule"]["groups"]


def test_two_replicas_with_leader_election_and_a_disruption_budget(helm: Path, tmp_path: Path) -> None:
    documents = helm_template(helm, tmp_path, {})
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert "--leader-elect" in pod["containers"][0]["args"]
    assert {
        "name": "PVE_OPERATOR_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    } in pod["containers"][0]["env"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = next(d for d in documents if d["kind"] == "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    assert budget["metadata"]["namespace"] == OPERATOR_NAMESPACE
    one = helm_template(helm, tmp_path, {"replicaCount": 1})
    assert next(d for d in one if d["kind"] == "Deployment")["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("watch", "message"),
    [(["pve-lab", "pve-lab"], '"pve-lab" is listed twice'), (["Team_B"], '"Team_B" is not a namespace name')],
)
def test_bad_watch_namespaces_are_refused(helm: Path, tmp_path: Path, watch: list[str], message: str) -> None:
    result = subprocess.run(
        [
            str(helm),
            "template",
            RELEASE,
            str(CHART),
            "--values",
            str(values_file(tmp_path, {"watchNamespaces": watch})),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr


# ---------------------------------------------------------------------------------------------------------
# Copies that must not drift


def test_chart_crds_are_byte_identical_to_crds() -> None:
    ours = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    theirs = {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}
    assert sorted(ours) == sorted(theirs), "deploy/helm/pve-operator/crds/ must hold exactly crds/*.yaml"
    for name, content in theirs.items():
        assert ours[name] == content, (
            f"deploy/helm/pve-operator/crds/{name} differs from crds/{name}: "
            "cp crds/*.yaml deploy/helm/pve-operator/crds/"
        )


def test_chart_alerts_are_byte_identical_to_deploy_monitoring() -> None:
    assert (CHART / "files" / "alerts.rules.yaml").read_bytes() == (MONITORING / "alerts.rules.yaml").read_bytes(), (
        "cp deploy/monitoring/alerts.rules.yaml deploy/helm/pve-operator/files/"
    )


def test_default_prometheus_rule_is_deploy_monitoring(helm: Path, tmp_path: Path) -> None:
    documents = helm_template(helm, tmp_path, {"prometheusRule": {"enabled": True}})
    rule = next(d for d in documents if d["kind"] == "PrometheusRule")
    reference = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert key(rule) == key(reference)
    assert rule["spec"] == reference["spec"]
    # With another name, the alert on the metrics Service follows it.
    renamed = helm_template(helm, tmp_path, {"fullnameOverride": "pve-op", "prometheusRule": {"enabled": True}})
    text = as_yaml([d for d in renamed if d["kind"] == "PrometheusRule"])
    assert 'service="pve-op-metrics"' in text and 'service="pve-operator-metrics"' not in text


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted keys of values.yaml; label and annotation maps are one key each (their keys are free-form)."""
    for name, value in values.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value and not name.lower().endswith(("labels", "annotations")):
            yield from _leaf_keys(value, f"{path}.")
        else:
            yield path


def test_readme_values_table_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.MULTILINE)
    assert len(table) == len(set(table)), "a key is listed twice in the README's values table"
    leaves = list(_leaf_keys(values))
    assert sorted(set(leaves) - set(table)) == [], "values.yaml keys missing from the README's values table"
    assert sorted(set(table) - set(leaves)) == [], "README values table rows for keys values.yaml does not have"
    assert table == leaves, "the README's values table is not in values.yaml's order"


# ---------------------------------------------------------------------------------------------------------
# The API server


@pytest.fixture(scope="module")
def monitoring_crds(kube: KubeCluster) -> Iterator[None]:
    """ServiceMonitor and PrometheusRule kinds: the cluster's own, or our minimal test CRDs for this module."""
    created = []
    for crd in yaml.safe_load_all(MONITORING_CRDS.read_text()):
        name = crd["metadata"]["name"]
        if kube.kubectl("get", "crd", name, "--ignore-not-found", "-o", "name").stdout.strip():
            continue  # a real Prometheus Operator (or an earlier run): never replace it
        kube.kubectl("create", "-f", "-", input=as_yaml([crd]))
        created.append(name)
    if created:
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in created), timeout=90)
    try:
        yield
    finally:
        if created:
            kube.kubectl("delete", "crd", *created, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def restricted_namespace(kube: KubeCluster, kube_namespace: str) -> str:
    """A test namespace with deploy/base/namespace.yaml's Pod Security labels."""
    kube.kubectl(
        "label",
        "namespace",
        kube_namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/warn-version=latest",
    )
    return kube_namespace


@pytest.fixture
def watched_namespaces(kube: KubeCluster) -> Iterator[list[str]]:
    names = [unique_namespace_name(f"helm-watched-{i}") for i in range(len(WATCHED))]
    for name in names:
        kube.kubectl("create", "namespace", name)
        kube.kubectl("label", "namespace", name, "app.kubernetes.io/managed-by=pve-operator-tests")
    try:
        yield names
    finally:
        kube.kubectl("delete", "namespace", *names, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_objects_pass_server_dry_run(
    kube: KubeCluster,
    helm: Path,
    tmp_path: Path,
    monitoring_crds: None,
    restricted_namespace: str,
    watched_namespaces: list[str],
    value_set: str,
) -> None:
    """Every object, CRDs included, through the API server's validation, admission and Pod Security."""
    values = with_watched(VALUE_SETS[value_set], watched_namespaces)
    documents = helm_template(helm, tmp_path, values, namespace=restricted_namespace)
    assert len(documents) == EXPECTED_COUNTS[value_set]
    result = kube.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=as_yaml(documents), timeout=120
    )
    for document in documents:
        kind, _, name = key(document)
        assert re.search(rf"\b{re.escape(name)}\b.*\(server dry run\)", result.stdout), (
            f"{kind} {name} missing from the dry run:\n{result.stdout}"
        )
    assert "PodSecurity" not in result.stderr, result.stderr
    # The test namespace itself (namespace.create) was made with `kubectl create`: kubectl's note about that is
    # the only warning allowed (deprecated fields, unknown-to-schema warnings, Pod Security would be others).
    warnings = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("Warning") and "last-applied-configuration annotation" not in line
    ]
    assert warnings == [], result.stderr


# ---------------------------------------------------------------------------------------------------------
# The chart is deploy/


_CHART_ONLY_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def _without_labels(document: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The document without its labels (object's and pod template's), and those labels."""
    document = copy.deepcopy(document)
    labels = [document["metadata"].pop("labels", {})]
    template = document.get("spec", {}).get("template")
    if isinstance(template, dict) and "metadata" in template:
        labels.append(template["metadata"].pop("labels", {}))
    return document, labels


def assert_same_objects(chart: list[dict[str, Any]], kustomize: list[dict[str, Any]]) -> None:
    """The same objects field for field; each object's labels are kustomize's plus Helm's own."""
    assert sorted(key(d) for d in chart) == sorted(key(d) for d in kustomize)
    ours = {key(d): d for d in chart}
    for theirs in kustomize:
        document, labels = _without_labels(ours[key(theirs)])
        reference, reference_labels = _without_labels(theirs)
        assert document == reference, f"{key(theirs)} differs from deploy/'s"
        for got, expected in zip(labels, reference_labels, strict=True):
            extra = {k: v for k, v in got.items() if k not in expected}
            assert got.items() >= expected.items(), f"{key(theirs)}: labels {got} lack {expected}"
            assert set(extra) <= set(_CHART_ONLY_LABELS), f"{key(theirs)}: unexpected labels {extra}"


def test_default_rendering_is_deploy(kube: KubeCluster, helm: Path, tmp_path: Path) -> None:
    """`kubectl apply -k deploy/` (README's install) and the chart's defaults: the same objects but the
    Namespace, which Helm cannot own (namespace.create: false); with namespace.create, all of them."""
    kustomize = [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(DEPLOY)).stdout) if d]
    chart = helm_template(helm, tmp_path, {})
    assert_same_objects(chart, [d for d in kustomize if d["kind"] != "Namespace"])
    assert_same_objects(helm_template(helm, tmp_path, {"namespace": {"create": True}}), kustomize)


def test_namespaced_rendering_is_deploy_namespaced(kube: KubeCluster, helm: Path, tmp_path: Path) -> None:
    """deploy/namespaced (watching pve-lab) and the chart with watchNamespaces [pve-lab]: the same objects."""
    kustomize = [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(NAMESPACED)).stdout) if d]
    chart = helm_template(helm, tmp_path, {"watchNamespaces": ["pve-lab"], "namespace": {"create": True}})
    assert_same_objects(chart, kustomize)
