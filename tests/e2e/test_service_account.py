"""The operator under its own ServiceAccount and the RBAC deploy/ ships, not the admin.

The lifecycle and balancing tests run again with the operator authenticated by a token of a
``pve-operator`` ServiceAccount and started as every e2e operator is, ``python -m pve_operator run -n
<test namespace>``:

* ``namespaced`` (all but one test): deploy/namespaced's RBAC, rendered with ``kubectl kustomize``.
  Its ClusterRole (only: list and watch CustomResourceDefinitions and Namespaces) is bound as it is;
  its Role and RoleBinding, rendered for pve-lab, are created in the test's namespace, the one the
  operator watches; its own-namespace Role (the ownership key Secret, the Lease) in the
  ServiceAccount's namespace, which the operator is told is its own (``PVE_OPERATOR_NAMESPACE``, as the
  Deployment's downward API sets it). Nothing else is granted: no Secret, ConfigMap or custom resource
  outside those namespaces. Not a single request may be refused.
* ``cluster-wide`` (one test): deploy/base's ClusterRole and ClusterRoleBinding, applied as they are.
  The operator still runs with ``-n`` rather than the Deployment's ``-A``: on this control plane (no
  namespace controller) every earlier test's namespace stays Terminating with its pools and policies,
  and an ``-A`` operator would reconcile all of them against simulators long gone. That the grant
  covers the cluster-wide list and watch ``-A`` makes is checked with ``kubectl auth can-i
  --all-namespaces`` in tests/integration/test_deploy_manifests.py. deploy/base grants no Namespaces
  (``-A`` never lists them), so here Kopf's listing of them is refused: it retries for 54 s, then
  falls back to the name given with -n. Those refusals are the only ones allowed, in this test only.

A missing verb shows up here as a failure, an extra one in tests/integration/test_deploy_manifests.py.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_balancing import (
    test_sustained_spike_migrates_cts_until_both_nodes_are_under_the_threshold as _balancing_case,
)
from tests.e2e.test_policy_lifecycle import (
    test_deleting_a_policy_destroys_exactly_its_cts_and_retain_keeps_them as _deletion_case,
)
from tests.e2e.test_policy_lifecycle import (
    test_lab_policy_places_nine_cts_six_and_three_all_running as _lab_case,
)
from tests.fixtures.kube import KubeCluster, unique_namespace_name
from tests.fixtures.operator import FAST_TIMERS, REPO_ROOT, OperatorProcess

pytestmark = [pytest.mark.kube, pytest.mark.slow]

BASE = REPO_ROOT / "deploy" / "base"
NAMESPACED = REPO_ROOT / "deploy" / "namespaced"
ACCOUNT = "pve-operator"

#: Kopf's warnings when it may not list or watch Namespaces (kopf/_core/reactor/observation.py,
#: namespace_observer), after a 403 on GET /api/v1/namespaces logged at every retry.
NAMESPACE_FALLBACK = (
    "Not enough permissions to list namespaces",
    "Not enough permissions to watch for namespaces",
    'cannot list resource "namespaces"',
    'cannot watch resource "namespaces"',
)


@dataclass
class Account:
    """A ServiceAccount token's kubeconfig, and what must be granted in a namespace before watching it."""

    kubeconfig: Path
    grant: Callable[[str], None]
    #: Where the operator keeps its own objects (the ownership key Secret, the Lease): the namespace the
    #: ServiceAccount lives in, as the Deployment's downward API sets PVE_OPERATOR_NAMESPACE.
    operator_namespace: str


def _token_kubeconfig(kube: KubeCluster, namespace: str, path: Path) -> Path:
    token = kube.kubectl("create", "token", ACCOUNT, "-n", namespace, "--duration=2h").stdout.strip()
    assert token.count(".") == 2, "a JWT"
    return kube.kubeconfig_for_token(token, path)


@pytest.fixture(scope="module")
def cluster_wide_account(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Account:
    """deploy/base as it is: ServiceAccount pve-operator/pve-operator, bound cluster-wide."""
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        kube.apply(BASE / name)
    kubeconfig = _token_kubeconfig(kube, "pve-operator", tmp_path_factory.mktemp("sa-cluster-wide") / "kubeconfig")
    return Account(kubeconfig, grant=lambda namespace: None, operator_namespace="pve-operator")


@pytest.fixture(scope="module")
def namespaced_account(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Account]:
    """deploy/namespaced, rendered: its ServiceAccount in a namespace of its own (so that deploy/base's
    ClusterRoleBinding, which names pve-operator/pve-operator, never applies to it), its ClusterRole and
    ClusterRoleBinding under a unique name, and its Role and RoleBinding created in each namespace the
    operator is started for."""
    documents = [d for d in yaml.safe_load_all(kube.kubectl("kustomize", str(NAMESPACED)).stdout) if d]
    of_kind = {kind: [d for d in documents if d["kind"] == kind] for kind in {d["kind"] for d in documents}}
    (account,) = of_kind["ServiceAccount"]
    (cluster_role,) = of_kind["ClusterRole"]
    (cluster_binding,) = of_kind["ClusterRoleBinding"]
    # The watched namespaces' Role (rendered for pve-lab, re-targeted below) and the operator's own one.
    (role,) = [r for r in of_kind["Role"] if r["metadata"]["namespace"] != "pve-operator"]
    (binding,) = [b for b in of_kind["RoleBinding"] if b["metadata"]["namespace"] != "pve-operator"]
    (own_role,) = [r for r in of_kind["Role"] if r["metadata"]["namespace"] == "pve-operator"]
    (own_binding,) = [b for b in of_kind["RoleBinding"] if b["metadata"]["namespace"] == "pve-operator"]
    assert account["metadata"]["name"] == ACCOUNT

    namespace = unique_namespace_name("sa-namespaced")
    name = f"pve-operator-{namespace}"
    account["metadata"]["namespace"] = namespace
    cluster_role["metadata"]["name"] = cluster_binding["metadata"]["name"] = name
    cluster_binding["roleRef"]["name"] = name
    for subjects in (cluster_binding["subjects"], binding["subjects"], own_binding["subjects"]):
        assert subjects == [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": "pve-operator"}]
        subjects[0]["namespace"] = namespace
    for document in (own_role, own_binding):
        document["metadata"]["namespace"] = namespace

    def grant(watched: str) -> None:
        local = [copy.deepcopy(role), copy.deepcopy(binding)]
        for document in local:
            document["metadata"]["namespace"] = watched
        kube.apply(yaml.safe_dump_all(local))

    kube.kubectl("create", "namespace", namespace)
    try:
        kube.apply(yaml.safe_dump_all([account, cluster_role, cluster_binding, own_role, own_binding]))
        yield Account(
            _token_kubeconfig(kube, namespace, tmp_path_factory.mktemp("sa-namespaced") / "kubeconfig"),
            grant,
            operator_namespace=namespace,
        )
    finally:
        kube.kubectl("delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found", check=False)
        kube.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def rbac_variant() -> str:
    """Which RBAC the operator runs under; a test overrides it with @pytest.mark.parametrize."""
    return "namespaced"


@pytest.fixture
def pve_operator_process(
    kube: KubeCluster, tmp_path: Path, rbac_variant: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Like the default fixture, but the operator authenticates as a pve-operator ServiceAccount."""
    account: Account = request.getfixturevalue(f"{rbac_variant.replace('-', '_')}_account")
    started: list[OperatorProcess] = []

    def start(namespace: str, **extra_env: str) -> OperatorProcess:
        account.grant(namespace)
        env = {**os.environ, **kube.env, **FAST_TIMERS, "PYTHONUNBUFFERED": "1", **extra_env}
        env["KUBECONFIG"] = str(account.kubeconfig)
        env["PVE_OPERATOR_NAMESPACE"] = account.operator_namespace
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "operator"), env.get("PYTHONPATH", "")])
        process = OperatorProcess(namespace, env, tmp_path / f"operator-sa-{rbac_variant}-{len(started)}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
        lines = process.logs().splitlines()
        # Any refusal shows in Kopf's log: a 403 Forbidden from a call, or "Not enough permissions" when
        # it falls back from an observation (CRDs, Namespaces). With deploy/namespaced none is allowed;
        # with deploy/base only the Namespace listing, which -n makes and -A never does.
        refused = [
            line
            for line in lines
            if ("Forbidden" in line or "Not enough permissions" in line)
            and not (rbac_variant == "cluster-wide" and any(expected in line for expected in NAMESPACE_FALLBACK))
        ]
        assert not refused, "\n".join(refused[:5])


def test_lab_policy_under_the_service_account(lab: Any) -> None:
    _lab_case(lab)


def test_deletion_under_the_service_account(lab: Any) -> None:
    _deletion_case(lab)


def test_balancing_under_the_service_account(
    kube: Any, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    _balancing_case(kube, kube_namespace, installed_crds, pve_sim_server, pve_operator_process)


@pytest.mark.parametrize("rbac_variant", ["cluster-wide"])
def test_lab_policy_under_the_cluster_wide_rbac(lab: Any, rbac_variant: str) -> None:
    """deploy/base's RBAC (what `kubectl apply -k deploy/` installs) still carries the whole lifecycle."""
    _lab_case(lab)
