"""GitOps behaviour: replacing an object or changing Argo CD's tracking metadata is not a change.

Argo CD with ``Replace=true`` (or a user with ``kubectl replace``) rewrites the whole object without
Kopf's annotations, and Argo CD 3 writes ``argocd.argoproj.io/tracking-id``. Neither may create a CT
or run the create handler again: the operator keeps its record of the handled spec in status.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import Lab, ready_replicas

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def handler_runs(lab: Lab, reason: str) -> int:
    assert lab.operator is not None
    return sum(
        1 for line in lab.operator.logs().splitlines() if f"ContainerPolicy {lab.namespace}/web: {reason}," in line
    )


def test_replace_and_argocd_tracking_annotation_create_nothing(lab: Lab) -> None:
    lab.apply_policy("web", replicas=3)
    lab.wait_policy("web", ready_replicas(3), "3 CTs")
    cts_before = sorted(ct["vmid"] for ct in lab.managed_cts())
    assert handler_runs(lab, "create") == 1

    # kubectl replace with the object as Git holds it: no Kopf annotations, no status.
    current = lab.get("containerpolicy", "web")
    manifest = {
        "apiVersion": current["apiVersion"],
        "kind": current["kind"],
        "metadata": {
            "name": "web",
            "namespace": lab.namespace,
            "resourceVersion": current["metadata"]["resourceVersion"],
            "labels": {"app.kubernetes.io/instance": "pve-lab"},
        },
        "spec": current["spec"],
    }
    lab.kube.kubectl("replace", "-f", "-", input=json.dumps(manifest))
    lab.kube.kubectl(
        "annotate",
        "ctp",
        "web",
        "-n",
        lab.namespace,
        f"argocd.argoproj.io/tracking-id=pve-lab:pve.ctoperator.io/ContainerPolicy:{lab.namespace}/web",
        "--overwrite",
    )
    replaced = lab.get("containerpolicy", "web")
    assert not any(k.startswith("pve.ctoperator.io/") for k in replaced["metadata"].get("annotations", {}))

    time.sleep(8)  # several reconcile intervals (2 s): long enough for any handler to have fired
    assert handler_runs(lab, "create") == 1, "the create handler ran again"
    assert handler_runs(lab, "update") == 0, "metadata churn triggered the spec update handler"
    assert sorted(ct["vmid"] for ct in lab.managed_cts()) == cts_before
    assert lab.status("containerpolicy", "web")["readyReplicas"] == 3

    # A real spec change still works after all that.
    lab.kube.kubectl("scale", "ctp", "web", "--replicas=4", "-n", lab.namespace)
    lab.wait_policy("web", ready_replicas(4), "4 CTs after scaling")
    assert handler_runs(lab, "update") == 1
