"""Operator-level handlers: settings at start-up, the shared runtime, and the liveness probe."""

from __future__ import annotations

from typing import Any

import kopf
from prometheus_client import start_http_server

from pve_operator.api.v1alpha1 import GROUP
from pve_operator.runtime import METRICS_PORT, OperatorRuntime, load_kubernetes_config

#: Annotations and labels Argo CD writes for tracking; changing them is not a change of ours.
ARGOCD_METADATA = (
    ("metadata", "annotations", "argocd.argoproj.io/tracking-id"),
    ("metadata", "annotations", "argocd.argoproj.io/installation-id"),
    ("metadata", "annotations", "kubectl.kubernetes.io/last-applied-configuration"),
    ("metadata", "labels", "app.kubernetes.io/instance"),
)


#: Waits between retries of a failed Kubernetes API request (seconds): 60 s in all, at most 5 s each.
KUBE_API_RETRY_BACKOFFS_SECONDS = (1.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # The last handled spec lives in status (a declared field): `kubectl replace` and GitOps tools
    # that rewrite metadata would drop an annotation, and Kopf would then take the object for new.
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.lastHandledConfiguration", ignored_fields=list(ARGOCD_METADATA)
    )
    settings.posting.reporting_component = "pve-operator"
    settings.posting.level = 20  # logging.INFO: our events, not Kopf's debug chatter
    # Watches that go quiet are restarted instead of silently hanging.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 32
    # Kubernetes API errors are retried for about a minute, but never more than 5 s apart: Kopf's
    # default (…, 8, 13, 21 s) left drift repair idle for up to 21 s after an API outage ended.
    settings.networking.error_backoffs = KUBE_API_RETRY_BACKOFFS_SECONDS
    load_kubernetes_config()
    memo.runtime = OperatorRuntime()
    if METRICS_PORT > 0 and not getattr(memo, "metrics_started", False):
        start_http_server(METRICS_PORT)
        memo.metrics_started = True


@kopf.on.probe(id="pools")
def connected_pools(memo: Any, **_: Any) -> int:
    """Liveness detail: how many PVE connections the operator holds."""
    runtime: OperatorRuntime | None = getattr(memo, "runtime", None)
    return len(runtime.connections) if runtime else 0


@kopf.on.cleanup()
def close_connections(memo: Any, **_: Any) -> None:
    runtime: OperatorRuntime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.close()
