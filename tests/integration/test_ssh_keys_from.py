"""template.sshPublicKeysFrom against the real API server: keys read from a ConfigMap and a Secret when
the cycle creates, merged with the inline ones; a line that is not a key stops the creation with a message
naming where it is, without quoting it."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from pve_operator.api.v1alpha1 import ConditionReason
from pve_operator.execution.policy_input import blueprint_from
from pve_operator.handlers.containerpolicy import ssh_keys_from_sources
from pve_operator.pve.params import create_params
from pve_operator.runtime import ConfigurationError, OperatorRuntime
from tests.unit.test_ct_settings import KEY, policy

pytestmark = pytest.mark.kube

TEAM_KEYS = (
    "# team web\n"
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfDsAM2ht6xo6O9zd1yrGkTy3C1Qm1hn8c9lP0Gq4aF alice@web\n"
    "\n"
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob@web\n"
)


@pytest.fixture
def runtime(kube: Any) -> OperatorRuntime:
    kube_config.load_kube_config(config_file=str(kube.kubeconfig))  # what the operator's process does in-cluster
    return OperatorRuntime()


def test_keys_from_a_configmap_and_a_secret_join_the_inline_ones(
    kube: Any, kube_namespace: str, runtime: OperatorRuntime
) -> None:
    core = kube_client.CoreV1Api()
    core.create_namespaced_config_map(
        kube_namespace, kube_client.V1ConfigMap(metadata={"name": "team-keys"}, data={"authorized_keys": TEAM_KEYS})
    )
    core.create_namespaced_secret(
        kube_namespace, kube_client.V1Secret(metadata={"name": "ops-keys"}, string_data={"keys": KEY + "\n"})
    )
    spec = policy(
        sshPublicKeys=[KEY],
        sshPublicKeysFrom=[
            {"configMapKeyRef": {"name": "team-keys", "key": "authorized_keys"}},
            {"secretKeyRef": {"name": "ops-keys", "key": "keys"}},
        ],
    )
    keys = ssh_keys_from_sources(runtime, kube_namespace, spec)
    assert [k.split()[-1] for k in keys] == ["alice@web", "bob@web", KEY.split()[-1]]
    blueprint = blueprint_from(spec)
    merged = tuple(dict.fromkeys(blueprint.ssh_public_keys + keys))
    from dataclasses import replace

    params = create_params(replace(blueprint, ssh_public_keys=merged), hostname="h", description="d", tags=frozenset())
    lines = params["ssh-public-keys"].splitlines()
    assert len(lines) == 3 and lines.count(KEY) == 1, "the inline key given twice is sent once"


def test_a_line_that_is_not_a_key_stops_creation_naming_the_object_key_and_line(
    kube: Any, kube_namespace: str, runtime: OperatorRuntime
) -> None:
    core = kube_client.CoreV1Api()
    core.create_namespaced_secret(
        kube_namespace,
        kube_client.V1Secret(metadata={"name": "bad-keys"}, string_data={"keys": KEY + "\nhunter2-not-a-key\n"}),
    )
    spec = policy(sshPublicKeysFrom=[{"secretKeyRef": {"name": "bad-keys", "key": "keys"}}])
    with pytest.raises(ConfigurationError) as raised:
        ssh_keys_from_sources(runtime, kube_namespace, spec)
    assert raised.value.reason is ConditionReason.INVALID_SPEC
    assert f"Secret {kube_namespace}/bad-keys key keys line 2 is not an OpenSSH public key" in raised.value.message
    assert "hunter2" not in raised.value.message, "the offending line is not quoted (it came from a Secret)"
    missing = policy(sshPublicKeysFrom=[{"configMapKeyRef": {"name": "nope", "key": "k"}}])
    with pytest.raises(ConfigurationError) as absent:
        ssh_keys_from_sources(runtime, kube_namespace, missing)
    assert absent.value.reason is ConditionReason.CONFIG_MAP_NOT_FOUND
