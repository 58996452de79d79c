"""The namespace the operator itself runs in: where its own objects live (the ownership key Secret,
the leader-election Lease), as opposed to the namespaces it watches.

In order: ``$PVE_OPERATOR_NAMESPACE`` (the Deployment sets it from the downward API), the namespace of
the pod's service account, and ``default`` for a process started by hand outside a cluster.
``python -m pve_operator -n NS`` sets ``$PVE_OPERATOR_NAMESPACE`` to its first ``NS`` when it is unset,
so a local run keeps its objects beside the objects it watches.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PVE_OPERATOR_NAMESPACE"
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_NAMESPACE = "default"


def operator_namespace() -> str:
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return value
    try:
        value = SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip()
    except OSError:
        value = ""
    return value or FALLBACK_NAMESPACE
