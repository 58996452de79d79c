"""deploy/ against the real API server: every manifest validates, and the RBAC is enough and no more.

* ``kubectl kustomize`` renders deploy/ (the operator with its CRDs), deploy/namespaced (the same watching
  only pve-lab, with namespaced RBAC) and deploy/argocd/example (the same with Argo CD sync waves, plus
  the lab's pool and policy); ``kubectl apply --dry-run=server`` sends the output through the API
  server's validation (schemas, CRD rules, admission, Pod Security).
* The RBAC is created for real and exercised as the ServiceAccount, with a token from
  ``kubectl create token``: ``kubectl auth can-i`` must allow exactly what the operator does (Kopf's
  watches, metadata and status patches, events; the operator's reads of the Secrets and ConfigMaps
  a pool names) and deny the rest; with deploy/namespaced, in the watched namespace only. In its own
  namespace only, the leader-election Lease (create; get and update by name) and creating the ownership
  key Secret (with deploy/namespaced also reading it, by name).
* Argo CD's Application kind is not installed here (no Argo CD CRDs in this control plane), so the
  example Application cannot go through a dry run: its structure is checked in Python against the
  fields of argoproj.io/v1alpha1 Application that it uses. argocd-cm.yaml is a plain ConfigMap and
  goes through the API server like the rest.
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

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NAMESPACED = DEPLOY / "namespaced"
ARGOCD = DEPLOY / "argocd"
EXAMPLE = ARGOCD / "example"
CRDS = REPO / "crds"

OPERATOR_NAMESPACE = "pve-operator"
LAB_NAMESPACE = "pve-lab"
OWN_ROLE = "pve-operator-own-namespace"
"""The Role and RoleBinding in the operator's own namespace: the Lease, the ownership key Secret."""
LEASE = "pve-operator-leader"
OWNERSHIP_KEY_SECRET = "pve-operator-ownership-key"
GROUP = "pve.ctoperator.io"
WAVE = "argocd.argoproj.io/sync-wave"
SYNC_OPTIONS = "argocd.argoproj.io/sync-options"

Key = tuple[str, str, str]
"""(kind, namespace or "", name)."""


def key(document: dict[str, Any]) -> Key:
    metadata = document["metadata"]
    return document["kind"], metadata.get("namespace", ""), metadata["name"]


def render(kube: KubeCluster, directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``, parsed."""
    text = kube.kubectl("kustomize", str(directory)).stdout
    return [document for document in yaml.safe_load_all(text) if document]


def as_yaml(documents: Sequence[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


def dry_run(kube: KubeCluster, documents: Sequence[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --dry-run=server --validate=strict``: unknown fields fail instead of being dropped."""
    result = kube.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=as_yaml(documents))
    for document in documents:
        kind, _, name = key(document)
        assert re.search(rf"\b{re.escape(name)}\b.*\(server dry run\)", result.stdout), (
            f"{kind} {name} missing from the dry run:\n{result.stdout}"
        )
    assert "PodSecurity" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def operator_manifests(kube: KubeCluster) -> list[dict[str, Any]]:
    return render(kube, DEPLOY)


@pytest.fixture(scope="module")
def example_manifests(kube: KubeCluster) -> list[dict[str, Any]]:
    return render(kube, EXAMPLE)


@pytest.fixture
def labelled_namespace(kube: KubeCluster, kube_namespace: str, operator_manifests: list[dict[str, Any]]) -> str:
    """A test namespace with the labels of deploy/base/namespace.yaml (Pod Security "restricted")."""
    namespace = next(d for d in operator_manifests if key(d) == ("Namespace", "", OPERATOR_NAMESPACE))
    labels = [f"{k}={v}" for k, v in namespace["metadata"]["labels"].items() if k.startswith("pod-security.")]
    assert labels, "namespace.yaml sets no Pod Security labels"
    kube.kubectl("label", "namespace", kube_namespace, *labels)
    return kube_namespace


def relocate(documents: Sequence[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The documents with pve-operator and pve-lab replaced by ``namespace``, in objects and in RBAC subjects.

    A dry run creates nothing, so the namespaced objects of a dry run must go to a namespace that exists;
    a test namespace leaves nothing behind on a shared cluster (the Namespace objects are dry-run as they are).
    """
    relocated = []
    for document in documents:
        moved = copy.deepcopy(document)
        if moved["metadata"].get("namespace") in (OPERATOR_NAMESPACE, LAB_NAMESPACE):
            moved["metadata"]["namespace"] = namespace
        for subject in moved.get("subjects", []):
            if subject.get("namespace") in (OPERATOR_NAMESPACE, LAB_NAMESPACE):
                subject["namespace"] = namespace
        relocated.append(moved)
    return relocated


# ---------------------------------------------------------------------------------------------------------
# deploy/: the operator


def test_kustomize_renders_the_operator_with_its_crds(operator_manifests: list[dict[str, Any]]) -> None:
    assert sorted(key(d) for d in operator_manifests) == sorted(
        [
            ("Namespace", "", OPERATOR_NAMESPACE),
            ("CustomResourceDefinition", "", f"proxmoxserverpools.{GROUP}"),
            ("CustomResourceDefinition", "", f"containerpolicies.{GROUP}"),
            ("ServiceAccount", OPERATOR_NAMESPACE, "pve-operator"),
            ("ClusterRole", "", "pve-operator"),
            ("ClusterRoleBinding", "", "pve-operator"),
            ("Role", OPERATOR_NAMESPACE, OWN_ROLE),
            ("RoleBinding", OPERATOR_NAMESPACE, OWN_ROLE),
            ("Deployment", OPERATOR_NAMESPACE, "pve-operator"),
            ("PodDisruptionBudget", OPERATOR_NAMESPACE, "pve-operator"),
            ("Service", OPERATOR_NAMESPACE, "pve-operator-metrics"),
        ]
    )
    # The CRDs are crds/ verbatim: deploying never lags behind `make crds`.
    crds = [yaml.safe_load(path.read_text()) for path in CRDS.glob("*.yaml")]
    committed = {crd["metadata"]["name"]: crd for crd in crds}
    for document in operator_manifests:
        if document["kind"] == "CustomResourceDefinition":
            assert document == committed[document["metadata"]["name"]]


def test_operator_manifests_pass_server_dry_run(
    kube: KubeCluster,
    installed_crds: tuple[str, ...],
    labelled_namespace: str,
    operator_manifests: list[dict[str, Any]],
) -> None:
    """Including Pod Security: the namespace warns about a Deployment whose pods "restricted" would refuse."""
    dry_run(kube, relocate(operator_manifests, labelled_namespace))


def test_service_selects_the_operator_pod(operator_manifests: list[dict[str, Any]]) -> None:
    service = next(d for d in operator_manifests if d["kind"] == "Service")
    deployment = next(d for d in operator_manifests if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def _operator_pod(operator_manifests: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    deployment = next(d for d in operator_manifests if d["kind"] == "Deployment")
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "pve-operator-psa-check",
            "namespace": namespace,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def test_operator_pod_is_admitted_under_pod_security_restricted(
    kube: KubeCluster, labelled_namespace: str, operator_manifests: list[dict[str, Any]]
) -> None:
    """The Deployment's pod template passes the "restricted" profile that namespace.yaml enforces.

    The control: the same pod with privilege escalation allowed is refused, so admission is really checking.
    """
    pod = _operator_pod(operator_manifests, labelled_namespace)

    kube.kubectl("create", "--dry-run=server", "-f", "-", input=as_yaml([pod]))

    weakened = copy.deepcopy(pod)
    weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    refused = kube.kubectl("create", "--dry-run=server", "-f", "-", input=as_yaml([weakened]), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr and "allowPrivilegeEscalation" in refused.stderr


# ---------------------------------------------------------------------------------------------------------
# RBAC


def _rbac(manifests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    by_kind = {d["kind"]: d for d in manifests}
    return by_kind["ServiceAccount"], by_kind["ClusterRole"], by_kind["ClusterRoleBinding"]


def _own_rbac(manifests: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The Role and RoleBinding of the operator's own namespace, moved to ``namespace`` (the ServiceAccount's)."""
    documents = [copy.deepcopy(d) for d in manifests if key(d)[1:] == (OPERATOR_NAMESPACE, OWN_ROLE)]
    assert sorted(d["kind"] for d in documents) == ["Role", "RoleBinding"]
    for document in documents:
        document["metadata"]["namespace"] = namespace
        for subject in document.get("subjects", []):
            assert subject["namespace"] == OPERATOR_NAMESPACE
            subject["namespace"] = namespace
    return documents


def test_rbac_has_no_wildcards(operator_manifests: list[dict[str, Any]]) -> None:
    _, role, _ = _rbac(operator_manifests)
    assert role["rules"], "an empty ClusterRole grants nothing"
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            for value in rule.get(field, []):
                assert "*" not in value, f"wildcard {value!r} in {field} of {rule}"
    assert not role.get("aggregationRule"), "an aggregated role's rules come from elsewhere"


_CAN_I_ROW = re.compile(r"^(\S*)\s*\[([^\]]*)\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s*$")


class ServiceAccountSession:
    """kubectl with a ServiceAccount's token instead of the admin's client certificate."""

    def __init__(self, kube: KubeCluster, namespace: str, name: str, workdir: Path) -> None:
        token = kube.kubectl("create", "token", name, "--namespace", namespace, "--duration=10m").stdout.strip()
        self.kube = kube
        self.namespace = namespace
        self.kubeconfig = kube.kubeconfig_for_token(token, workdir / f"kubeconfig-{name}", namespace=namespace)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kube.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            env=self.kube.env,
            timeout=60,
            check=False,
        )

    def can_i(self, verb: str, resource: str, *flags: str) -> bool:
        result = self.kubectl("auth", "can-i", verb, resource, *flags)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        # An unknown resource makes every answer meaningless (and "no" to everything).
        assert "doesn't have a resource type" not in result.stderr, result.stderr
        return result.stdout.strip() == "yes"

    def rules(self, namespace: str | None = None) -> dict[str, set[str]]:
        """``kubectl auth can-i --list`` in ``namespace`` (default: the session's): resource -> verbs."""
        result = self.kubectl(
            "auth", "can-i", "--list", "--no-headers", *(["--namespace", namespace] if namespace else [])
        )
        assert result.returncode == 0, result.stderr
        rules: dict[str, set[str]] = {}
        for line in result.stdout.splitlines():
            match = _CAN_I_ROW.match(line)
            assert match, f"unexpected line from kubectl auth can-i --list: {line!r}"
            resource, urls, names, verbs = match.groups()
            subject = resource or f"url:{urls}"
            if names.strip():
                subject += f"[{names.strip()}]"
            rules.setdefault(subject, set()).update(verbs.split())
        return rules


@pytest.fixture
def operator_account(
    kube: KubeCluster,
    installed_crds: tuple[str, ...],
    kube_namespace: str,
    operator_manifests: list[dict[str, Any]],
    tmp_path: Path,
) -> Iterator[ServiceAccountSession]:
    """deploy/base's ServiceAccount, ClusterRole and ClusterRoleBinding, created for real in a test namespace.

    The cluster-scoped objects get the namespace's name as a suffix (tests may share a cluster) and are
    deleted afterwards; the rules are exactly the rendered ones.
    """
    account, role, binding = (copy.deepcopy(d) for d in _rbac(operator_manifests))
    role_name = f"{role['metadata']['name']}-{kube_namespace}"
    account["metadata"]["namespace"] = kube_namespace
    role["metadata"]["name"] = role_name
    binding["metadata"]["name"] = role_name
    binding["roleRef"]["name"] = role_name
    assert [s["name"] for s in binding["subjects"]] == [account["metadata"]["name"]]
    binding["subjects"][0]["namespace"] = kube_namespace
    try:
        kube.apply(as_yaml([account, role, binding, *_own_rbac(operator_manifests, kube_namespace)]))
        yield ServiceAccountSession(kube, kube_namespace, account["metadata"]["name"], tmp_path)
    finally:
        kube.kubectl("delete", "clusterrolebinding,clusterrole", role_name, "--ignore-not-found", check=False)


@pytest.fixture
def bare_account(kube: KubeCluster, kube_namespace: str, tmp_path: Path) -> ServiceAccountSession:
    """A ServiceAccount with no bindings: what every authenticated account may do anyway."""
    kube.kubectl("create", "serviceaccount", "nobody", "--namespace", kube_namespace)
    return ServiceAccountSession(kube, kube_namespace, "nobody", tmp_path)


CRS = (f"proxmoxserverpools.{GROUP}", f"containerpolicies.{GROUP}")

OPERATOR_NEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # Kopf: watch and read both kinds, patch their metadata (finalizer, annotations) and status.
    *((verb, cr, ()) for cr in CRS for verb in ("get", "list", "watch", "patch")),
    *(("patch", cr, ("--subresource=status",)) for cr in CRS),
    # Kopf: notice CRDs appearing and changing.
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ()),
    # Kopf posts events; the operator reads the Secret and CA a pool names.
    ("create", "events", ()),
    ("get", "secrets", ()),
    ("get", "configmaps", ()),
)

OPERATOR_MUST_NOT: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    *((verb, cr, ()) for cr in CRS for verb in ("create", "update", "delete", "deletecollection")),
    *(("update", cr, ("--subresource=status",)) for cr in CRS),
    ("patch", f"containerpolicies.{GROUP}", ("--subresource=scale",)),
    ("list", "secrets", ()),
    ("watch", "secrets", ()),
    ("create", "secrets", ("--namespace", "default")),  # only in its own namespace (OWN_NAMESPACE_NEEDS)
    ("update", "secrets", ()),
    ("delete", "secrets", ()),
    ("create", "leases.coordination.k8s.io", ("--namespace", "default")),
    ("get", f"leases.coordination.k8s.io/{LEASE}", ("--namespace", "default")),
    ("update", f"leases.coordination.k8s.io/{LEASE}", ("--namespace", "default")),
    ("patch", "configmaps", ()),
    ("patch", "events", ()),
    ("get", "events", ()),
    ("create", "pods", ()),
    ("get", "pods", ()),
    ("patch", "deployments.apps", ()),
    ("list", "namespaces", ()),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ()),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ()),
    ("impersonate", "serviceaccounts", ()),
)


OWN_NAMESPACE_NEEDS: tuple[tuple[str, str], ...] = (
    # pve_operator/leader_election.py: the Lease, created once, then read and replaced (acquire, renew, release).
    ("create", "leases.coordination.k8s.io"),
    ("get", f"leases.coordination.k8s.io/{LEASE}"),
    ("update", f"leases.coordination.k8s.io/{LEASE}"),
    # OperatorRuntime.ownership_key: the ownership key Secret, created the first time.
    ("create", "secrets"),
)
"""What the operator does in its own namespace (the ServiceAccount's): (verb, resource[/name])."""

OWN_NAMESPACE_MUST_NOT: tuple[tuple[str, str], ...] = (
    ("get", "leases.coordination.k8s.io/another-lease"),
    ("update", "leases.coordination.k8s.io/another-lease"),
    ("list", "leases.coordination.k8s.io"),
    ("watch", "leases.coordination.k8s.io"),
    ("patch", f"leases.coordination.k8s.io/{LEASE}"),
    ("delete", f"leases.coordination.k8s.io/{LEASE}"),
    ("update", f"secrets/{OWNERSHIP_KEY_SECRET}"),
    ("delete", f"secrets/{OWNERSHIP_KEY_SECRET}"),
    ("list", "secrets"),
)


def test_rbac_allows_the_lease_and_the_ownership_key_in_its_own_namespace_only(
    operator_account: ServiceAccountSession,
) -> None:
    denied = [(v, r) for v, r in OWN_NAMESPACE_NEEDS if not operator_account.can_i(v, r)]
    assert not denied, f"the operator's ServiceAccount may not, in its own namespace: {denied}"
    allowed = [(v, r) for v, r in OWN_NAMESPACE_MUST_NOT if operator_account.can_i(v, r)]
    assert not allowed, f"the operator's ServiceAccount may, but must not: {allowed}"
    for verb, resource in OWN_NAMESPACE_NEEDS:
        if resource != "secrets":  # create secrets: see OPERATOR_MUST_NOT (default namespace)
            assert not operator_account.can_i(verb, resource, "--namespace", "default"), (verb, resource)


def test_rbac_allows_what_the_operator_does(operator_account: ServiceAccountSession) -> None:
    denied = [(v, r, f) for v, r, f in OPERATOR_NEEDS if not operator_account.can_i(v, r, *f)]
    assert not denied, f"the operator's ServiceAccount may not: {denied}"


def test_rbac_allows_it_in_every_namespace(operator_account: ServiceAccountSession) -> None:
    """`-A` watches all namespaces: the grant is cluster-wide (a RoleBinding per namespace narrows it)."""
    assert operator_account.can_i("watch", f"containerpolicies.{GROUP}", "--all-namespaces")
    assert operator_account.can_i("get", "secrets", "--namespace", "default")


def test_rbac_denies_everything_else(operator_account: ServiceAccountSession) -> None:
    allowed = [(v, r, f) for v, r, f in OPERATOR_MUST_NOT if operator_account.can_i(v, r, *f)]
    assert not allowed, f"the operator's ServiceAccount may, but must not: {allowed}"


def test_rbac_grants_exactly_these_rules(
    operator_account: ServiceAccountSession, bare_account: ServiceAccountSession
) -> None:
    """Beyond what any authenticated account has, the ServiceAccount gets these rules and no others."""
    baseline = bare_account.rules()
    granted = {
        resource: verbs - baseline.get(resource, set())
        for resource, verbs in operator_account.rules().items()
        if verbs - baseline.get(resource, set())
    }

    assert granted == OPERATOR_RULES | OWN_NAMESPACE_RULES
    other = operator_account.rules("default")
    assert {r: v - baseline.get(r, set()) for r, v in other.items() if v - baseline.get(r, set())} == OPERATOR_RULES


OWN_NAMESPACE_RULES: dict[str, set[str]] = {
    "leases.coordination.k8s.io": {"create"},
    f"leases.coordination.k8s.io[{LEASE}]": {"get", "update"},
    "secrets": {"get", "create"},  # get: the cluster-wide rule, create: the Role
}
"""``kubectl auth can-i --list`` in the operator's own namespace, on top of OPERATOR_RULES (a resource that
both grant shows once, with the verbs of both)."""

OPERATOR_RULES: dict[str, set[str]] = {
    f"proxmoxserverpools.{GROUP}": {"get", "list", "watch", "patch"},
    f"containerpolicies.{GROUP}": {"get", "list", "watch", "patch"},
    f"proxmoxserverpools.{GROUP}/status": {"patch"},
    f"containerpolicies.{GROUP}/status": {"patch"},
    "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
    "events": {"create"},
    "secrets": {"get"},
    "configmaps": {"get"},
}
"""What ``kubectl auth can-i --list`` shows the operator may do, beyond any authenticated account."""


# ---------------------------------------------------------------------------------------------------------
# deploy/namespaced/: the operator watching only pve-lab, reading Secrets and ConfigMaps only there

NAMESPACED_WATCHED = ("pve-lab",)
"""The namespaces deploy/namespaced watches: its Deployment's --namespace arguments and its Roles."""

NAMESPACED_CLUSTER_WIDE = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    # Kopf with -n lists Namespaces before starting any watch; refused, it retries for 54 s first
    # (see deploy/namespaced/kustomization.yaml). With -A (deploy/base) it never does.
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}
"""All that deploy/namespaced grants cluster-wide: (apiGroup, resource, verb)."""


@pytest.fixture(scope="module")
def namespaced_manifests(kube: KubeCluster) -> list[dict[str, Any]]:
    return render(kube, NAMESPACED)


def scope_of(args: Sequence[str]) -> tuple[bool, list[str], list[str]]:
    """(all namespaces?, the namespaces named, the other arguments) from the operator's command line,
    in every form its argparse accepts (``-A``, ``--all-namespaces``, ``-n NS``, ``-nNS``, ``--namespace NS``,
    ``--namespace=NS``)."""
    everywhere, namespaces, others = False, [], []
    items = iter(args)
    for arg in items:
        if arg in ("-A", "--all-namespaces"):
            everywhere = True
        elif arg in ("-n", "--namespace"):
            namespaces.append(next(items, ""))
        elif arg.startswith("--namespace="):
            namespaces.append(arg.removeprefix("--namespace="))
        elif arg.startswith("-n"):
            namespaces.append(arg.removeprefix("-n"))
        else:
            others.append(arg)
    assert all(namespaces), f"-n without a namespace in {args}"
    return everywhere, namespaces, others


def _deployment_args(manifests: list[dict[str, Any]]) -> list[str]:
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert isinstance(args, list)
    return args


def _of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests if d["kind"] == kind]


def _watched_roles(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles of the watched namespaces (not the one in the operator's own namespace)."""
    return [d for d in _of_kind(manifests, "Role") if d["metadata"]["name"] == "pve-operator"]


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination the rules allow."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def test_namespaced_renders_the_base_plus_a_role_per_watched_namespace(
    operator_manifests: list[dict[str, Any]], namespaced_manifests: list[dict[str, Any]]
) -> None:
    assert sorted(key(d) for d in namespaced_manifests) == sorted(
        [key(d) for d in operator_manifests]
        + [(kind, namespace, "pve-operator") for namespace in NAMESPACED_WATCHED for kind in ("Role", "RoleBinding")]
    )
    # Only the ClusterRole's rules and the Deployment's scope differ from deploy/base.
    base = {key(d): d for d in operator_manifests}
    for document in namespaced_manifests:
        if document["kind"] not in ("ClusterRole", "Deployment", "Role", "RoleBinding"):
            assert document == base[key(document)], key(document)
    cluster_role = next(d for d in namespaced_manifests if d["kind"] == "ClusterRole")
    assert {k: v for k, v in cluster_role.items() if k != "rules"} == {
        k: v for k, v in base[key(cluster_role)].items() if k != "rules"
    }
    deployment = copy.deepcopy(next(d for d in namespaced_manifests if d["kind"] == "Deployment"))
    base_args = _deployment_args(operator_manifests)
    deployment["spec"]["template"]["spec"]["containers"][0]["args"] = base_args
    assert deployment == base[key(deployment)]
    assert scope_of(_deployment_args(namespaced_manifests))[2] == scope_of(base_args)[2]


def test_namespaced_cluster_role_grants_no_secret_or_configmap_access(
    namespaced_manifests: list[dict[str, Any]],
) -> None:
    """What is left cluster-wide is what no Role can grant: reads of cluster-scoped objects (CRDs, Namespaces)."""
    (cluster_role,) = _of_kind(namespaced_manifests, "ClusterRole")
    assert not cluster_role.get("aggregationRule")
    granted = _grants(cluster_role["rules"])
    assert not {g for g in granted if g[1] in ("secrets", "configmaps")}, granted
    assert granted == NAMESPACED_CLUSTER_WIDE
    for rule in cluster_role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule


def test_namespaced_roles_grant_get_on_secrets_and_configmaps_only_in_the_watched_namespaces(
    namespaced_manifests: list[dict[str, Any]],
) -> None:
    roles = _watched_roles(namespaced_manifests)
    bindings = [d for d in _of_kind(namespaced_manifests, "RoleBinding") if d["metadata"]["name"] == "pve-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(NAMESPACED_WATCHED)
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(NAMESPACED_WATCHED)
    for role in roles:
        granted = _grants(role["rules"])
        for resource in ("secrets", "configmaps"):
            assert {v for g, r, v in granted if (g, r) == ("", resource)} == {"get"}, (role["metadata"], resource)
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert not any("*" in value for value in rule[field]), rule
            assert not rule.get("resourceNames"), rule
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pve-operator"}
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "pve-operator", "namespace": OPERATOR_NAMESPACE}
        ]
    # The ServiceAccount's own namespace is not watched: there it may read only its ownership key (below).
    assert OPERATOR_NAMESPACE not in NAMESPACED_WATCHED


def test_namespaced_own_role_adds_only_reading_the_ownership_key_by_name(
    operator_manifests: list[dict[str, Any]], namespaced_manifests: list[dict[str, Any]]
) -> None:
    """deploy/base reads the ownership key Secret through its cluster-wide Secret rule, which deploy/namespaced
    drops: its own-namespace Role gets `get` on that one Secret by name, and nothing else more."""
    (base_role,) = [d for d in operator_manifests if key(d) == ("Role", OPERATOR_NAMESPACE, OWN_ROLE)]
    (role,) = [d for d in namespaced_manifests if key(d) == ("Role", OPERATOR_NAMESPACE, OWN_ROLE)]
    assert role["rules"] == [
        *base_role["rules"],
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [OWNERSHIP_KEY_SECRET], "verbs": ["get"]},
    ]


def test_namespaced_deployment_watches_exactly_the_roles_namespaces(
    namespaced_manifests: list[dict[str, Any]],
) -> None:
    everywhere, namespaces, _ = scope_of(_deployment_args(namespaced_manifests))
    assert not everywhere
    assert sorted(namespaces) == sorted(NAMESPACED_WATCHED)
    assert sorted(namespaces) == sorted(r["metadata"]["namespace"] for r in _watched_roles(namespaced_manifests))


def test_namespaced_rbac_splits_the_base_rules_and_adds_none(
    operator_manifests: list[dict[str, Any]], namespaced_manifests: list[dict[str, Any]]
) -> None:
    """The same rules as deploy/base, plus the Namespace reads -n needs: a rule added to one variant fails
    here until the other has it too."""
    (base_role,) = _of_kind(operator_manifests, "ClusterRole")
    (cluster_role,) = _of_kind(namespaced_manifests, "ClusterRole")
    namespace_reads = {g for g in NAMESPACED_CLUSTER_WIDE if g[1] == "namespaces"}
    assert not namespace_reads & _grants(base_role["rules"]), "deploy/base (-A) has no use for Namespaces"
    for role in _watched_roles(namespaced_manifests):
        split = _grants(cluster_role["rules"]) | _grants(role["rules"])
        assert split == _grants(base_role["rules"]) | namespace_reads
        assert not _grants(cluster_role["rules"]) & _grants(role["rules"]), "granted twice"


def test_namespaced_manifests_pass_server_dry_run(
    kube: KubeCluster,
    installed_crds: tuple[str, ...],
    labelled_namespace: str,
    namespaced_manifests: list[dict[str, Any]],
) -> None:
    dry_run(kube, relocate(namespaced_manifests, labelled_namespace))


@pytest.fixture
def watched_namespace(kube: KubeCluster) -> Iterator[str]:
    """A second test namespace, standing in for pve-lab: the operator's ServiceAccount is in kube_namespace."""
    name = unique_namespace_name("watched")
    kube.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def namespaced_account(
    kube: KubeCluster,
    installed_crds: tuple[str, ...],
    kube_namespace: str,
    watched_namespace: str,
    namespaced_manifests: list[dict[str, Any]],
    tmp_path: Path,
) -> Iterator[ServiceAccountSession]:
    """deploy/namespaced's RBAC created for real: the ServiceAccount in kube_namespace, the Role and
    RoleBinding (rendered for pve-lab) in ``watched_namespace``; cluster-scoped names get a suffix."""
    account, role, binding = (copy.deepcopy(d) for d in _rbac(namespaced_manifests))
    (local_role,) = (copy.deepcopy(d) for d in _watched_roles(namespaced_manifests))
    bindings = _of_kind(namespaced_manifests, "RoleBinding")
    (local_binding,) = (copy.deepcopy(d) for d in bindings if d["metadata"]["name"] == "pve-operator")
    role_name = f"{role['metadata']['name']}-{kube_namespace}"
    account["metadata"]["namespace"] = kube_namespace
    role["metadata"]["name"] = binding["metadata"]["name"] = binding["roleRef"]["name"] = role_name
    local_role["metadata"]["namespace"] = local_binding["metadata"]["namespace"] = watched_namespace
    for subjects in (binding["subjects"], local_binding["subjects"]):
        assert [s["name"] for s in subjects] == [account["metadata"]["name"]]
        subjects[0]["namespace"] = kube_namespace
    try:
        own = _own_rbac(namespaced_manifests, kube_namespace)
        kube.apply(as_yaml([account, role, binding, local_role, local_binding, *own]))
        yield ServiceAccountSession(kube, kube_namespace, account["metadata"]["name"], tmp_path)
    finally:
        kube.kubectl("delete", "clusterrolebinding,clusterrole", role_name, "--ignore-not-found", check=False)


def test_namespaced_rbac_allows_what_the_operator_does_in_the_watched_namespace(
    namespaced_account: ServiceAccountSession, watched_namespace: str
) -> None:
    denied = [
        (v, r, f)
        for v, r, f in OPERATOR_NEEDS
        if not namespaced_account.can_i(v, r, *f, "--namespace", watched_namespace)
    ]
    assert not denied, f"the operator's ServiceAccount may not, in {watched_namespace}: {denied}"
    assert namespaced_account.can_i("list", "namespaces") and namespaced_account.can_i("watch", "namespaces")


def test_namespaced_rbac_denies_it_in_other_namespaces_and_cluster_wide(
    namespaced_account: ServiceAccountSession, watched_namespace: str
) -> None:
    for scope in (("--namespace", "default"), ("--namespace", namespaced_account.namespace), ("--all-namespaces",)):
        allowed = [
            (v, r, f)
            for v, r, f in OPERATOR_NEEDS
            if "customresourcedefinitions" not in r and namespaced_account.can_i(v, r, *f, *scope)
        ]
        assert not allowed, f"the operator's ServiceAccount may, outside {watched_namespace} ({scope}): {allowed}"
    # Listing Namespaces is all it gets of them.
    for verb in ("get", "create", "update", "patch", "delete"):
        assert not namespaced_account.can_i(verb, "namespaces"), verb


def test_namespaced_rbac_denies_everything_else(
    namespaced_account: ServiceAccountSession, watched_namespace: str
) -> None:
    allowed = [
        (v, r, f)
        for v, r, f in OPERATOR_MUST_NOT
        if (v, r) != ("list", "namespaces") and namespaced_account.can_i(v, r, *f, "--namespace", watched_namespace)
    ]
    assert not allowed, f"the operator's ServiceAccount may, but must not: {allowed}"


def test_namespaced_rbac_grants_exactly_these_rules(
    namespaced_account: ServiceAccountSession, bare_account: ServiceAccountSession, watched_namespace: str
) -> None:
    """In the watched namespace deploy/base's rules; anywhere else only the CRD and Namespace reads."""
    baseline = bare_account.rules()

    def granted(namespace: str) -> dict[str, set[str]]:
        return {
            resource: verbs - baseline.get(resource, set())
            for resource, verbs in namespaced_account.rules(namespace).items()
            if verbs - baseline.get(resource, set())
        }

    cluster_wide = {
        "customresourcedefinitions.apiextensions.k8s.io": {"list", "watch"},
        "namespaces": {"list", "watch"},
    }
    assert granted(watched_namespace) == OPERATOR_RULES | cluster_wide
    assert granted("default") == cluster_wide
    assert granted(namespaced_account.namespace) == cluster_wide | {
        "leases.coordination.k8s.io": {"create"},
        f"leases.coordination.k8s.io[{LEASE}]": {"get", "update"},
        "secrets": {"create"},
        f"secrets[{OWNERSHIP_KEY_SECRET}]": {"get"},
    }
    assert namespaced_account.can_i("get", f"secrets/{OWNERSHIP_KEY_SECRET}")
    assert not namespaced_account.can_i("get", "secrets/lab-pve-credentials")
    assert not namespaced_account.can_i("get", f"secrets/{OWNERSHIP_KEY_SECRET}", "--namespace", "default")


# ---------------------------------------------------------------------------------------------------------
# deploy/argocd/


def _wave(document: dict[str, Any]) -> int:
    return int(document["metadata"].get("annotations", {}).get(WAVE, "0"))


def test_example_orders_crds_operator_pools_policies_in_sync_waves(
    operator_manifests: list[dict[str, Any]], example_manifests: list[dict[str, Any]]
) -> None:
    """Created in this order, and pruned in reverse: policies while their pool and the operator still exist."""
    waves = {key(d): _wave(d) for d in example_manifests}
    for document in operator_manifests:
        expected = -2 if document["kind"] == "CustomResourceDefinition" else -1
        assert waves[key(document)] == expected, key(document)
    assert waves[("Namespace", "", LAB_NAMESPACE)] == -1
    assert waves[("ProxmoxServerPool", LAB_NAMESPACE, "lab")] == 0
    assert waves[("ContainerPolicy", LAB_NAMESPACE, "web")] == 1
    assert set(waves) == {key(d) for d in operator_manifests} | {
        ("Namespace", "", LAB_NAMESPACE),
        ("ProxmoxServerPool", LAB_NAMESPACE, "lab"),
        ("ContainerPolicy", LAB_NAMESPACE, "web"),
    }, "the samples' template Secret stays out of Git-driven syncs"


def test_example_keeps_the_operator_manifests_unchanged_but_for_the_waves(
    operator_manifests: list[dict[str, Any]], example_manifests: list[dict[str, Any]]
) -> None:
    example = {key(d): d for d in example_manifests}
    for document in operator_manifests:
        annotated = copy.deepcopy(example[key(document)])
        annotations = annotated["metadata"]["annotations"]
        del annotations[WAVE]
        if not annotations:
            del annotated["metadata"]["annotations"]
        assert annotated == document


def test_example_custom_resources_skip_the_dry_run_before_their_crds_exist(
    example_manifests: list[dict[str, Any]],
) -> None:
    for document in example_manifests:
        if document["apiVersion"].startswith(f"{GROUP}/"):
            options = document["metadata"]["annotations"][SYNC_OPTIONS].split(",")
            assert "SkipDryRunOnMissingResource=true" in options, key(document)


def test_example_passes_server_dry_run(
    kube: KubeCluster,
    installed_crds: tuple[str, ...],
    labelled_namespace: str,
    example_manifests: list[dict[str, Any]],
) -> None:
    dry_run(kube, relocate(example_manifests, labelled_namespace))


def _argocd_cm() -> dict[str, Any]:
    document = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert isinstance(document, dict)
    return document


def test_argocd_cm_is_a_valid_configmap_patch(kube: KubeCluster, kube_namespace: str, tmp_path: Path) -> None:
    """Patched onto an existing argocd-cm, it adds its keys and keeps Argo CD's own.

    Done in a test namespace (the file names namespace argocd, which this cluster need not have).
    """
    patch = _argocd_cm()
    assert (patch["kind"], patch["metadata"]["name"], patch["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    patch["metadata"]["namespace"] = kube_namespace
    dry_run(kube, [patch])

    kube.kubectl(
        "create", "configmap", "argocd-cm", "--namespace", kube_namespace, "--from-literal=url=https://cd.example"
    )
    patch_file = tmp_path / "argocd-cm.yaml"
    patch_file.write_text(as_yaml([patch]))
    kube.kubectl("patch", "configmap", "argocd-cm", "--namespace", kube_namespace, "--patch-file", str(patch_file))
    data = kube.kubectl_json("get", "configmap", "argocd-cm", "--namespace", kube_namespace)["data"]
    assert data == {"url": "https://cd.example", **patch["data"]}


def _require(document: dict[str, Any], path: str, kind: type | tuple[type, ...]) -> Any:
    node: Any = document
    for step in path.split("."):
        assert isinstance(node, dict) and step in node, f"Application: {path} is required"
        node = node[step]
    assert isinstance(node, kind), f"Application: {path} must be {kind}, not {type(node).__name__}"
    return node


APPLICATION_SPEC_FIELDS = frozenset(
    {"project", "source", "sources", "destination", "syncPolicy", "ignoreDifferences", "info", "revisionHistoryLimit"}
)
SYNC_OPTION = re.compile(r"^[A-Za-z]+=(true|false|foreground|background|orphan)$")


def test_argocd_application_is_well_formed(example_manifests: list[dict[str, Any]]) -> None:
    """Structure of argoproj.io/v1alpha1 Application as far as this example uses it (no CRD to validate with)."""
    application = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    assert application["apiVersion"] == "argoproj.io/v1alpha1"
    assert application["kind"] == "Application"
    assert _require(application, "metadata.namespace", str) == "argocd"
    _require(application, "metadata.name", str)
    # Deleting the Application deletes what it deployed (in reverse wave order), not orphans it.
    assert "resources-finalizer.argocd.argoproj.io" in _require(application, "metadata.finalizers", list)

    spec = _require(application, "spec", dict)
    assert set(spec) <= APPLICATION_SPEC_FIELDS, set(spec) - APPLICATION_SPEC_FIELDS
    _require(application, "spec.project", str)
    assert _require(application, "spec.source.repoURL", str).startswith("https://")
    _require(application, "spec.source.targetRevision", str)
    path = _require(application, "spec.source.path", str)
    assert (REPO / path).resolve() == EXAMPLE.resolve(), "the Application deploys deploy/argocd/example"
    assert set(spec["source"]) <= {"repoURL", "targetRevision", "path", "kustomize"}

    destination = _require(application, "spec.destination", dict)
    assert ("server" in destination) != ("name" in destination), "destination: exactly one of server and name"
    assert destination.get("namespace") == OPERATOR_NAMESPACE

    automated = _require(application, "spec.syncPolicy.automated", dict)
    assert automated.get("prune") is True, "pruning is what the sync waves order"
    assert set(automated) <= {"prune", "selfHeal", "allowEmpty", "enabled"}
    for option in spec["syncPolicy"].get("syncOptions", []):
        assert SYNC_OPTION.match(option), option
        assert option != "Replace=true", "kubectl replace drops Kopf's annotations: every object would look new"
    retry = spec["syncPolicy"].get("retry", {})
    assert set(retry) <= {"limit", "backoff"}
    assert set(retry.get("backoff", {})) <= {"duration", "factor", "maxDuration"}
    # What the Application deploys renders (the example fixture ran kubectl kustomize on it).
    assert example_manifests
