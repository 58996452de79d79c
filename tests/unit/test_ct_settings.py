"""The CT settings of issue 11 §1 from the ContainerPolicy to Proxmox VE's create parameters.

Each field of ``spec.template`` maps to the parameter and the spelling pve-container takes
(``pct.conf``: ``onboot``, ``startup: order=..,up=..,down=..``, ``nameserver`` space-separated,
``net0: ...,ip6=..,gw6=..,mtu=..,rate=..``, ``features: nesting=1,mount=nfs;cifs``), and a field left
unset sends nothing (PVE writes only what it is given into the config).
"""

from __future__ import annotations

from typing import Any

import pytest

from pve_operator.api.v1alpha1 import ContainerPolicySpec
from pve_operator.execution.policy_input import blueprint_from
from pve_operator.planning.pve_access import features_refusal
from pve_operator.pve.params import create_params

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0fH2b3d4TnQ4wW0ZcT3Jx6bPq8rWl0dVv1u1xk1YqT ops@example"


def policy(**template: Any) -> ContainerPolicySpec:
    return ContainerPolicySpec.model_validate(
        {
            "poolRef": {"name": "lab"},
            "replicas": 1,
            "vmidRange": {"start": 3100, "end": 3199},
            "hostnamePattern": "ct-web-{index:02d}",
            "template": {
                "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "rootfs": {"storage": "local-lvm"},
                **template,
            },
        }
    )


def params(spec: ContainerPolicySpec, password: str | None = None) -> dict[str, Any]:
    return create_params(
        blueprint_from(spec, password=password), hostname="ct-web-00", description="record", tags=frozenset()
    )


def test_every_setting_reaches_its_pve_parameter() -> None:
    spec = policy(
        sshPublicKeys=[KEY, KEY.replace("ops@", "dev@")],
        nameservers=["192.0.2.53", "2001:db8::53"],
        searchDomain="lab.example",
        onBoot=True,
        startup={"order": 2, "upSeconds": 30, "downSeconds": 60},
        protection=True,
        cpuLimit=1.5,
        cpuUnits=200,
        timezone="Europe/Berlin",
        features={"nesting": True, "fuse": True, "mount": ["nfs", "cifs"]},
        networks=[
            {
                "name": "eth0",
                "bridge": "vmbr0",
                "ip": "dhcp",
                "ip6": "2001:db8::10/64",
                "gateway6": "2001:db8::1",
                "mtu": 1450,
                "rateMBps": 12.5,
            }
        ],
    )
    sent = params(spec, password="hunter2-root")
    assert sent["ssh-public-keys"] == f"{KEY}\n{KEY.replace('ops@', 'dev@')}\n"
    assert sent["password"] == "hunter2-root"
    assert sent["nameserver"] == "192.0.2.53 2001:db8::53"
    assert sent["searchdomain"] == "lab.example"
    assert sent["onboot"] == 1 and sent["protection"] == 1
    assert sent["startup"] == "order=2,up=30,down=60"
    assert sent["cpulimit"] == "1.5" and sent["cpuunits"] == 200
    assert sent["timezone"] == "Europe/Berlin"
    assert sent["features"] == "nesting=1,fuse=1,mount=nfs;cifs"
    assert sent["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp,ip6=2001:db8::10/64,gw6=2001:db8::1,mtu=1450,rate=12.5"


def test_settings_left_unset_send_nothing() -> None:
    sent = params(policy(networks=[{"name": "eth0", "bridge": "vmbr0"}]))
    for option in (
        "ssh-public-keys",
        "password",
        "nameserver",
        "searchdomain",
        "onboot",
        "startup",
        "protection",
        "cpulimit",
        "cpuunits",
        "timezone",
        "features",
    ):
        assert option not in sent, option
    assert sent["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp"


def test_the_password_never_shows_in_the_blueprint_or_the_spec_repr() -> None:
    spec = policy(rootPasswordSecretRef={"name": "ct-root"})
    assert spec.template.root_password_secret_ref is not None
    assert spec.template.root_password_secret_ref.key == "password"
    blueprint = blueprint_from(spec, password="hunter2-root")
    assert "hunter2-root" not in repr(blueprint) and "hunter2-root" not in str(blueprint)


def test_a_partial_startup_sends_only_what_is_set() -> None:
    assert params(policy(startup={"order": 1}))["startup"] == "order=1"
    assert "startup" not in params(policy(startup={}))


@pytest.mark.parametrize(
    ("features", "unprivileged", "authid", "refused"),
    [
        ({"nesting": True}, True, "ctoperator@pve!operator", None),  # nesting: any user with the privileges
        ({"keyctl": True}, True, "ctoperator@pve!operator", "keyctl"),
        ({"mount": ["nfs"]}, True, "root@pam!automation", "mount"),  # a token of root@pam is not root@pam
        ({"fuse": True, "mknod": True}, True, "root@pam", None),
        ({"nesting": True}, False, "ctoperator@pve!operator", "nesting) on a privileged CT"),
        ({}, False, "ctoperator@pve!operator", None),
    ],
)
def test_features_only_root_may_set_are_refused_before_creating(
    features: dict[str, Any], unprivileged: bool, authid: str, refused: str | None
) -> None:
    template = policy(features=features, unprivileged=unprivileged).template
    why = features_refusal(template.features, unprivileged=template.unprivileged, authid=authid)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why and authid in why and "root@pam" in why


def test_every_template_field_has_an_update_class() -> None:
    """Issue 11 §2: a new field of spec.template must say how a change reaches existing CTs."""
    from pve_operator.api.v1alpha1 import TEMPLATE_UPDATE_CLASSES, ContainerTemplate, UpdateClass

    assert set(TEMPLATE_UPDATE_CLASSES) == set(ContainerTemplate.model_fields)
    assert all(isinstance(c, UpdateClass) for c in TEMPLATE_UPDATE_CLASSES.values())


def test_the_hot_settings_the_drift_sweep_compares_follow_the_policy() -> None:
    from pve_operator.execution.policy_input import hot_config_settings

    wanted = hot_config_settings(
        policy(swapMiB=0, onBoot=True, startup={"order": 3}, cpuLimit=2, cpuUnits=50, protection=False)
    )
    assert wanted == {
        "swap": "",
        "onboot": "1",
        "protection": "",
        "startup": "order=3",
        "cpulimit": "2",
        "cpuunits": "50",
    }


def test_a_clone_pins_new_cts_to_its_templates_node_unless_its_volumes_are_shared() -> None:
    from pve_operator.api.v1alpha1 import ProxmoxServerPoolSpec
    from pve_operator.execution.policy_input import intent_from
    from pve_operator.pve.params import CloneFrom
    from tests.fixtures.crds import SAMPLE_POOL, load_sample

    pool = ProxmoxServerPoolSpec.model_validate(load_sample(SAMPLE_POOL)["spec"])
    spec = policy(ostemplate=None, clone={"fromVmid": 9000})
    local = intent_from(spec, pool, "uid", 0, clone=CloneFrom(9000, "srv-px1"))
    assert {n: w for n, w in local.node_weights.items() if w} == {"srv-px1": local.node_weights["srv-px1"]}
    shared = intent_from(spec, pool, "uid", 0, clone=CloneFrom(9000, "srv-px1", shared=True))
    assert shared.node_weights == spec.effective_node_weights(pool), "shared storage: every node of the pool"
    assert len([w for w in shared.node_weights.values() if w]) > 1
