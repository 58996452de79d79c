"""The operator under its own ServiceAccount and RBAC (deploy/base), not the admin.

The lifecycle and balancing tests run again with the operator authenticated by a token of the
``pve-operator`` ServiceAccount bound to the ClusterRole that deploy/ ships: a missing verb shows
up here as a failure, an extra one in tests/integration/test_deploy_manifests.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_balancing import (
    test_sustained_spike_migrates_cts_until_both_nodes_are_under_the_threshold as _balancing_case,
)
from tests.e2e.test_policy_lifecycle import (
    test_deleting_a_policy_destroys_exactly_its_cts_and_retain_keeps_them as _deletion_case,
)
from tests.e2e.test_policy_lifecycle import (
    test_lab_policy_places_nine_cts_six_and_three_all_running as _lab_case,
)
from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import FAST_TIMERS, REPO_ROOT, OperatorProcess

pytestmark = [pytest.mark.kube, pytest.mark.slow]

BASE = REPO_ROOT / "deploy" / "base"


@pytest.fixture(scope="module")
def service_account_kubeconfig(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        kube.apply(BASE / name)
    token = kube.kubectl("create", "token", "pve-operator", "-n", "pve-operator", "--duration=2h").stdout.strip()
    assert token.count(".") == 2, "a JWT"
    return kube.kubeconfig_for_token(token, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture
def pve_operator_process(
    kube: KubeCluster, tmp_path: Path, service_account_kubeconfig: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Like the default fixture, but the operator authenticates as the pve-operator ServiceAccount."""
    started: list[OperatorProcess] = []

    def start(namespace: str, **extra_env: str) -> OperatorProcess:
        env = {**os.environ, **kube.env, **FAST_TIMERS, "PYTHONUNBUFFERED": "1", **extra_env}
        env["KUBECONFIG"] = str(service_account_kubeconfig)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "operator"), env.get("PYTHONPATH", "")])
        process = OperatorProcess(namespace, env, tmp_path / f"operator-sa-{len(started)}.log")
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
        # Any RBAC refusal shows in Kopf's log as 403 Forbidden: none is allowed, except listing
        # namespaces, which Kopf tries with -n and falls back from by design (the deployed operator
        # runs with -A and never lists them).
        refused = [
            line
            for line in process.logs().splitlines()
            if "Forbidden" in line and 'resource "namespaces"' not in line and "list namespaces" not in line
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
