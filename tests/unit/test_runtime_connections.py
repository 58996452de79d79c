"""A rotated Secret or CA replaces a pool's PVE client without pulling the old one from under a cycle.

Seen in a review: rotating the credentials Secret during a create burst deleted the old client's CA
file while threads still used it (`OSError: Could not find a suitable TLS CA certificate bundle`),
which put the handlers into Kopf's 60 s backoff.
"""

from __future__ import annotations

import os

from pve_operator.pve.client import PveClient, PveCredentials, TlsSettings
from pve_operator.runtime import RETIRED_CLIENT_GRACE_SECONDS, OperatorRuntime

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = ("ns", "lab")


def client() -> PveClient:
    return PveClient("https://pve.example:8006", PveCredentials(token_id="a@pve!tk", token_secret="s"), TlsSettings(CA))


def ca_file(c: PveClient) -> str:
    path = c._ca_file  # the file requests verifies against
    assert path is not None
    return path


def test_a_replaced_client_keeps_its_ca_file_until_no_cycle_can_hold_it() -> None:
    runtime = OperatorRuntime()
    first = runtime.install_connection(KEY, "v1", client, now=0.0)
    assert runtime.install_connection(KEY, "v1", client, now=1.0) is first, "same fingerprint: same client"

    second = runtime.install_connection(KEY, "v2", client, now=2.0)
    assert second.client is not first.client and second.limiter is first.limiter
    old_ca = ca_file(first.client)
    assert os.path.exists(old_ca), "a cycle started before the rotation may still use it"

    runtime.install_connection(KEY, "v2", client, now=2.0 + RETIRED_CLIENT_GRACE_SECONDS + 1)
    assert not os.path.exists(old_ca), "closed once its grace is over"
    new_ca = ca_file(second.client)
    runtime.close()
    assert not os.path.exists(new_ca)
