"""The API models as the operator uses them: parsing specs, refusing what the API server refuses (with the
same words), rendering host names, weights, conditions, credentials, and the status wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from pve_operator.api.v1alpha1 import (
    API_VERSION,
    CONTAINER_POLICY,
    PROXMOX_SERVER_POOL,
    ActionKind,
    ActionResult,
    Condition,
    ConditionStatus,
    ConditionType,
    ContainerPolicySpec,
    ContainerPolicyStatus,
    ContainerState,
    ContainerStatus,
    EndpointAddress,
    PasswordCredentials,
    PoolNode,
    ProxmoxServerPoolSpec,
    ProxmoxServerPoolStatus,
    RecordedAction,
    TokenCredentials,
    credentials_from_secret,
    describe_validation_error,
    find_condition,
    parse_endpoint,
    render_hostname,
    set_condition,
)
from tests.fixtures.crds import (
    INVALID_MANIFESTS,
    SAMPLE_FILL_POLICY,
    SAMPLE_POLICY,
    SAMPLE_POOL,
    InvalidManifest,
    load_sample,
)

NOW = datetime(2025, 11, 23, 12, 0, 0, tzinfo=UTC)


def _pool(**changes: Any) -> ProxmoxServerPoolSpec:
    return ProxmoxServerPoolSpec.model_validate({**load_sample(SAMPLE_POOL)["spec"], **changes})


def _policy(**changes: Any) -> ContainerPolicySpec:
    return ContainerPolicySpec.model_validate({**load_sample(SAMPLE_POLICY)["spec"], **changes})


# ---------------------------------------------------------------------------------------------
# Samples


def test_samples_parse_into_the_lab() -> None:
    pool = _pool()
    assert pool.address == EndpointAddress(host="127.0.0.1", port=8006, path_prefix="")
    assert [(n.name, n.weight) for n in pool.nodes] == [("srv-px1", 2), ("srv-px2", 1)]
    assert pool.tls.ca_reference is not None and pool.tls.ca_reference[0] == "ConfigMap"

    web = _policy()
    assert (web.pool_ref.name, web.replicas, web.max_replicas) == ("lab", 9, 9)
    assert [web.render_hostname(i) for i in (0, 8)] == ["ct-web-00", "ct-web-08"]
    assert [web.vmid_for_index(i) for i in (0, 8)] == [3100, 3108]
    assert (web.template.memory_mib, web.template.rootfs.size_gib, web.template.networks[0].ip) == (2048, 8, "dhcp")

    batch = ContainerPolicySpec.model_validate(load_sample(SAMPLE_FILL_POLICY)["spec"])
    assert batch.replicas is None and batch.fill is not None
    assert (batch.fill.until_percent, batch.max_replicas, batch.vmid_range.size) == (70, 40, 40)


def test_samples_declare_the_served_api_version() -> None:
    for name, kind in ((SAMPLE_POOL, PROXMOX_SERVER_POOL.kind), (SAMPLE_POLICY, CONTAINER_POLICY.kind)):
        sample = load_sample(name)
        assert (sample["apiVersion"], sample["kind"]) == (API_VERSION, kind)


def test_credentials_sample_is_a_token() -> None:
    secret = load_sample("pve-credentials-secret.yaml")
    credentials = credentials_from_secret(secret["stringData"])
    assert isinstance(credentials, TokenCredentials)
    assert (credentials.user, credentials.token_name) == ("ctoperator@pve", "operator")


# ---------------------------------------------------------------------------------------------
# The shared table of invalid manifests: the models refuse them as the API server does


@pytest.mark.parametrize("case", [c for c in INVALID_MANIFESTS if c.model_says], ids=lambda c: c.id)
def test_model_refuses_invalid_manifest(case: InvalidManifest) -> None:
    model = PROXMOX_SERVER_POOL.spec_model if case.kind == "ProxmoxServerPool" else CONTAINER_POLICY.spec_model
    with pytest.raises(ValidationError) as raised:
        model.model_validate(case.manifest()["spec"])
    message = describe_validation_error(raised.value)
    assert case.model_says is not None
    for expected in case.model_says:
        assert expected in message


@pytest.mark.parametrize("case", [c for c in INVALID_MANIFESTS if c.update], ids=lambda c: c.id)
def test_transition_rules_cover_changes_that_are_valid_on_their_own(case: InvalidManifest) -> None:
    """Only the API server, which sees the stored object, can refuse these; alone they are valid."""
    ContainerPolicySpec.model_validate(case.manifest()["spec"])


def test_invalid_manifest_ids_are_unique_and_many() -> None:
    ids = [case.id for case in INVALID_MANIFESTS]
    assert len(ids) == len(set(ids)) >= 15


def test_every_problem_is_reported_at_once_naming_each_field() -> None:
    spec = load_sample(SAMPLE_POOL)["spec"]
    spec["nodes"][0]["weight"] = -1
    spec["thresholds"] = {"restoreBelowPercent": 80}
    spec["balancing"] = {"mode": "Sometimes"}
    with pytest.raises(ValidationError) as raised:
        ProxmoxServerPoolSpec.model_validate(spec)
    lines = describe_validation_error(raised.value).split("; ")
    assert lines == [
        "spec.nodes[0].weight: Input should be greater than or equal to 0",
        "spec.thresholds: thresholds.restoreBelowPercent must be less than thresholds.migrateAbovePercent "
        "(80 >= 75)",
        "spec.balancing.mode: Input should be 'Automatic', 'Recommend' or 'Off'",
    ]


def test_python_attribute_names_work_as_well_as_wire_names() -> None:
    node = PoolNode(name="srv-px3", weight=3)
    assert node.to_dict() == {"name": "srv-px3", "weight": 3, "maintenance": False, "labels": {}}
    by_attribute = ProxmoxServerPoolSpec.model_validate(
        {
            "endpoint": "https://pve.example.com",
            "credentials_secret_ref": {"name": "c"},
            "nodes": [{"name": "a"}],
            "thresholds": {"creation_ceiling_percent": 70},
        }
    )
    assert by_attribute.thresholds.creation_ceiling_percent == 70
    assert by_attribute.to_dict()["credentialsSecretRef"] == {"name": "c"}


def test_specs_are_immutable_values() -> None:
    pool = _pool()
    with pytest.raises(ValidationError, match="frozen"):
        pool.endpoint = "https://elsewhere"  # type: ignore[misc]
    assert pool == _pool()


# ---------------------------------------------------------------------------------------------
# Host names and VMIDs


@pytest.mark.parametrize(
    ("pattern", "index", "hostname"),
    [
        ("ct-web-{index:02d}", 0, "ct-web-00"),
        ("ct-web-{index:02d}", 7, "ct-web-07"),
        ("ct-web-{index:02d}", 123, "ct-web-123"),
        ("ct-{index}", 42, "ct-42"),
        ("ct-{index:d}", 5, "ct-5"),
        ("{index:03d}-db", 9, "009-db"),
        ("{index}", 0, "0"),
        # What Proxmox VE accepts (dns-name): upper case, as the lab named its CTs, and FQDNs.
        ("ct-tpgei-virt-C1-ct{index:02d}", 7, "ct-tpgei-virt-C1-ct07"),
        ("Web{index}", 3, "Web3"),
        ("web-{index}.example.org", 12, "web-12.example.org"),
    ],
)
def test_render_hostname(pattern: str, index: int, hostname: str) -> None:
    assert render_hostname(pattern, index) == hostname


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("ct-web", "must contain exactly one {index} field"),
        ("ct-{index}-{index}", "must contain exactly one {index} field"),
        ("ct-{index:2d}", "must contain exactly one {index} field"),
        ("ct-{index!r}", "must contain exactly one {index} field"),
        ("ct-{0}", "must contain exactly one {index} field"),
        ("ct_{index}", "must contain exactly one {index} field"),
        ("-ct-{index}", "must contain exactly one {index} field"),
        (".ct{index}", "must contain exactly one {index} field"),
        ("ct-{index}.", "must contain exactly one {index} field"),
        ("ct é-{index}", "must contain exactly one {index} field"),
        # The syntax allows '.' and '-' inside; the rendered name must still be a dns-name.
        ("ct.-{index}", "not a host name Proxmox VE accepts"),
        ("ct..{index}", "not a host name Proxmox VE accepts"),
    ],
)
def test_render_hostname_refuses_bad_patterns(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render_hostname(pattern, 1)


def test_render_hostname_refuses_names_longer_than_proxmox_accepts() -> None:
    pattern = "a" * 246 + "-{index:08d}"
    assert render_hostname(pattern, 0) == "a" * 246 + "-00000000"
    with pytest.raises(ValueError, match=r"renders CT index 123456789 as .* not a host name Proxmox VE accepts"):
        render_hostname(pattern, 123456789)
    with pytest.raises(ValueError, match="never negative"):
        render_hostname("ct-{index}", -1)


def test_policy_refuses_a_pattern_whose_last_name_is_too_long() -> None:
    """The API server only checks the pattern's syntax; the length of the names depends on the range."""
    long_prefix = "web-" + "x" * 248 + "-"
    assert len(render_hostname(long_prefix + "{index}", 99)) == 255
    _policy(hostnamePattern=long_prefix + "{index}", vmidRange={"start": 3100, "end": 3199})
    with pytest.raises(ValidationError) as raised:
        _policy(hostnamePattern=long_prefix + "{index}", vmidRange={"start": 3100, "end": 3299})
    assert "renders CT index 199 as" in describe_validation_error(raised.value)


def test_vmid_and_index_mapping() -> None:
    web = _policy()
    assert web.vmid_range.as_range() == range(3100, 3200)
    assert (3100 in web.vmid_range, 3199 in web.vmid_range, 3200 in web.vmid_range) == (True, True, False)
    assert (web.index_for_vmid(3150), web.index_for_vmid(3099)) == (50, None)
    assert web.vmid_for_index(99) == 3199
    with pytest.raises(ValueError, match="index 100 is outside vmidRange 3100-3199"):
        web.vmid_for_index(100)
    with pytest.raises(ValueError, match="outside vmidRange"):
        web.render_hostname(-1)


# ---------------------------------------------------------------------------------------------
# Placement weights


def test_effective_node_weights() -> None:
    pool = _pool(
        nodes=[
            {"name": "srv-px1", "weight": 2},
            {"name": "srv-px2", "weight": 1},
            {"name": "srv-px3", "weight": 5, "maintenance": True},
        ]
    )
    assert _policy().effective_node_weights(pool) == {"srv-px1": 2, "srv-px2": 1, "srv-px3": 0}

    overridden = _policy(
        placement={
            "nodeWeights": [
                {"name": "srv-px2", "weight": 4},
                {"name": "srv-px3", "weight": 9},
                {"name": "srv-px9", "weight": 1},
            ]
        }
    )
    assert overridden.effective_node_weights(pool) == {"srv-px1": 2, "srv-px2": 4, "srv-px3": 0}
    assert overridden.unknown_weight_overrides(pool) == ("srv-px9",)


def test_warnings_name_weight_overrides_for_nodes_outside_the_pool() -> None:
    pool = _pool()
    assert _policy().warnings(pool) == ()
    assert _policy(placement={"nodeWeights": [{"name": "srv-px2", "weight": 3}]}).warnings(pool) == ()
    one = _policy(placement={"nodeWeights": [{"name": "srv-px1", "weight": 1}, {"name": "srv-px9", "weight": 4}]})
    assert one.warnings(pool) == (
        "spec.placement.nodeWeights: srv-px9 is not a node of ProxmoxServerPool lab (nodes: srv-px1, srv-px2); "
        "its weight is ignored",
    )
    two = _policy(placement={"nodeWeights": [{"name": "SRV-PX1", "weight": 1}, {"name": "srv-px3", "weight": 4}]})
    (warning,) = two.warnings(pool)
    assert warning.startswith("spec.placement.nodeWeights: SRV-PX1, srv-px3 are not nodes of ProxmoxServerPool lab")
    assert warning.endswith("their weights are ignored")


# ---------------------------------------------------------------------------------------------
# Template volume and networks


def _template(**changes: Any) -> dict[str, Any]:
    template = load_sample(SAMPLE_POLICY)["spec"]["template"]
    return {**template, **changes}


@pytest.mark.parametrize(
    "ostemplate",
    [
        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz",
        "nfs-templates:vztmpl/debian-12-turnkey-wordpress_18.1-1_amd64.tar.gz",
        "cephfs.ssd:vztmpl/my_base-image.v2.tar.bz2",
        "local:vztmpl/a.tar.zst",
    ],
)
def test_ostemplate_accepts_template_volume_ids(ostemplate: str) -> None:
    assert _policy(template=_template(ostemplate=ostemplate)).template.ostemplate == ostemplate


@pytest.mark.parametrize(
    "ostemplate",
    [
        "local:vztmpl/..",
        "local:vztmpl/../../etc/shadow.tar.gz",
        "local:vztmpl/..%2f..%2fetc%2fshadow.tar.gz",
        "local:vztmpl/%2e%2e%2fx.tar.zst",
        "local:vztmpl/%2E%2E/x.tar.zst",
        "local:vztmpl/x..tar.gz",
        "local:vztmpl/.hidden.tar.gz",
        "local:vztmpl/..\\x.tar.gz",
        "local:vztmpl/x.tar.gz/..",
        "local:vztmpl/x.tar.gz%00.iso",
        "local:vztmpl/x y.tar.gz",
        "local:vztmpl/x.tar.gz\n",
        "local:vztmpl/x.tar",
        "local:vztmpl/x.iso",
        "local:iso/x.tar.gz",
        "local:vztmpl/",
        "/var/lib/vz/template/cache/x.tar.gz",
    ],
)
def test_ostemplate_refuses_paths_traversal_and_other_files(ostemplate: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _policy(template=_template(ostemplate=ostemplate))
    message = describe_validation_error(raised.value)
    assert message.startswith("spec.template.ostemplate: ostemplate must be a template volume ID"), message
    assert "no '/', '..' or %-escapes" in message


def _network(ip: str, gateway: str | None) -> dict[str, Any]:
    return {"name": "eth0", "bridge": "vmbr0", "ip": ip, **({"gateway": gateway} if gateway else {})}


@pytest.mark.parametrize(
    ("ip", "gateway"),
    [
        ("10.0.0.5/24", "10.0.0.5"),
        ("10.0.0.5/24", "10.0.0.0"),
        ("192.168.7.130/25", "192.168.7.128"),
        ("203.0.113.10/32", "203.0.113.10"),
        ("10.0.0.1/31", "10.0.0.1"),
    ],
)
def test_gateway_must_not_be_the_own_or_the_network_address(ip: str, gateway: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _policy(template=_template(networks=[_network(ip, gateway)]))
    assert describe_validation_error(raised.value) == (
        "spec.template.networks[0]: gateway must not be the interface's own address (ip) or the network address "
        f"of its subnet (ip {ip}, gateway {gateway})"
    )


@pytest.mark.parametrize(
    ("ip", "gateway", "outside"),
    [
        ("10.0.0.5/24", "10.0.0.1", False),
        ("10.0.0.5/24", "10.0.0.255", False),  # odd, but a broadcast gateway is for the CT's network to refuse
        ("10.0.0.1/31", "10.0.0.0", False),  # RFC 3021: both addresses of a /31 are hosts
        ("10.0.0.5/24", None, False),
        ("manual", None, False),
        # Proxmox VE adds an on-link route to a gateway outside the subnet (routed setups): valid, but warned.
        ("10.0.0.5/24", "10.1.0.1", True),
        ("203.0.113.10/32", "198.51.100.1", True),
    ],
)
def test_gateway_outside_the_subnet_is_accepted_with_a_warning(ip: str, gateway: str | None, outside: bool) -> None:
    policy = _policy(template=_template(networks=[_network("dhcp", None), _network(ip, gateway) | {"name": "eth1"}]))
    assert policy.template.networks[1].gateway_outside_subnet() is outside
    expected = (
        f"spec.template.networks[1].gateway: {gateway} is outside the subnet of ip {ip}; Proxmox VE adds an "
        "on-link route to it (as routed setups want), check that it is not a typo"
    )
    assert policy.warnings(_pool()) == ((expected,) if outside else ())


# ---------------------------------------------------------------------------------------------
# Conditions


def test_set_condition_adds_then_keeps_transition_time_until_status_flips() -> None:
    later, latest = NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)
    conditions = set_condition((), ConditionType.READY, ConditionStatus.FALSE, reason="Creating", now=NOW)
    conditions = set_condition(
        conditions, ConditionType.PROGRESSING, ConditionStatus.TRUE, reason="Creating", now=NOW
    )
    assert [c.type for c in conditions] == ["Ready", "Progressing"]

    conditions = set_condition(
        conditions,
        ConditionType.READY,
        ConditionStatus.FALSE,
        reason="WaitingForNodes",
        message="srv-px2 offline",
        now=later,
        observed_generation=2,
    )
    ready = find_condition(conditions, "Ready")
    assert ready is not None
    assert (ready.reason, ready.message, ready.observed_generation) == ("WaitingForNodes", "srv-px2 offline", 2)
    assert ready.last_transition_time == NOW, "same status: the transition time stays"

    conditions = set_condition(conditions, ConditionType.READY, ConditionStatus.TRUE, reason="Reconciled", now=latest)
    ready = find_condition(conditions, "Ready")
    assert ready is not None and ready.last_transition_time == latest
    assert [c.type for c in conditions] == ["Ready", "Progressing"], "order is kept"
    assert find_condition(conditions, "Degraded") is None


def test_condition_wire_form_is_metav1() -> None:
    moment = datetime(2025, 11, 23, 13, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1)))
    condition = Condition(type="Ready", status=ConditionStatus.TRUE, last_transition_time=moment, reason="Ok")
    assert condition.to_dict() == {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": "2025-11-23T12:04:05Z",
        "reason": "Ok",
        "message": "",
    }
    assert Condition.model_validate(condition.to_dict()).last_transition_time == moment.replace(microsecond=0)
    with pytest.raises(ValidationError, match="timezone"):
        Condition(type="Ready", status=ConditionStatus.TRUE, last_transition_time=datetime(2025, 1, 1), reason="Ok")
    with pytest.raises(ValidationError, match="reason"):
        Condition(type="Ready", status=ConditionStatus.TRUE, last_transition_time=NOW, reason="not camel case")


# ---------------------------------------------------------------------------------------------
# Status


def test_policy_status_round_trips_through_its_wire_form() -> None:
    status = ContainerPolicyStatus(
        observed_generation=3,
        conditions=set_condition((), "Ready", ConditionStatus.TRUE, reason="Reconciled", now=NOW),
        replicas=2,
        desired_replicas=2,
        ready_replicas=1,
        offloaded_replicas=1,
        containers=(
            ContainerStatus(
                vmid=3100,
                hostname="ct-web-00",
                node="srv-px1",
                state=ContainerState.RUNNING,
                created_at=NOW,
                cpu_percent=1.5,
                memory_percent=3.4,
                disk_percent=2.4,
            ),
            ContainerStatus(vmid=3101, hostname="ct-web-01", node="srv-px1", state=ContainerState.OFFLOADED),
        ),
        recent_actions=(
            RecordedAction(
                time=NOW,
                action=ActionKind.OFFLOAD,
                vmid=3101,
                hostname="ct-web-01",
                policy="web",
                source_node="srv-px1",
                reason="srv-px1 memory 93% > offloadAbovePercent 90 for 3 samples",
                source_percent_before=93.0,
                source_percent_after=86.2,
                result=ActionResult.SUCCEEDED,
                upid="UPID:srv-px1:0000A1B2:00C3D4E5:6740F1A0:vzstop:3101:ctoperator@pve!operator:",
            ),
        ),
    )
    wire = status.to_dict()
    assert wire["containers"][1] == {"vmid": 3101, "hostname": "ct-web-01", "node": "srv-px1", "state": "Offloaded"}
    assert wire["recentActions"][0]["sourcePercentBefore"] == 93.0
    assert wire["conditions"][0]["lastTransitionTime"] == "2025-11-23T12:00:00Z"
    assert ContainerPolicyStatus.model_validate(wire) == status


def test_status_reads_an_empty_or_newer_status() -> None:
    """A fresh object has no status; a newer operator may have written fields this one does not know."""
    assert ContainerPolicyStatus.model_validate({}).replicas == 0
    assert ProxmoxServerPoolStatus.model_validate({"pveVersion": "9.1.2", "addedLater": 1}).pve_version == "9.1.2"


def test_spec_refuses_fields_it_does_not_know() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        _policy(replica=3)


# ---------------------------------------------------------------------------------------------
# Endpoint and credentials


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("https://127.0.0.1:8006", EndpointAddress("127.0.0.1", 8006, "")),
        ("https://pve.example.com", EndpointAddress("pve.example.com", 8006, "")),
        ("https://pve.example.com:443/", EndpointAddress("pve.example.com", 443, "")),
        ("https://[fd00::1]:8006", EndpointAddress("fd00::1", 8006, "")),
        ("https://gw.example.com/pve/", EndpointAddress("gw.example.com", 8006, "/pve")),
        # Copied with the API path: the client appends /api2/json itself, so it is not part of the prefix.
        ("https://pve:8006/api2/json", EndpointAddress("pve", 8006, "")),
        ("https://pve.example.com/api2/json/", EndpointAddress("pve.example.com", 8006, "")),
        ("https://gw.example.com/pve/api2/json", EndpointAddress("gw.example.com", 8006, "/pve")),
        ("https://gw.example.com/api2/jsonx", EndpointAddress("gw.example.com", 8006, "/api2/jsonx")),
    ],
)
def test_parse_endpoint(endpoint: str, address: EndpointAddress) -> None:
    assert parse_endpoint(endpoint) == address


def test_pool_address_ignores_a_trailing_api_path() -> None:
    assert _pool(endpoint="https://127.0.0.1:8006/api2/json").address == EndpointAddress("127.0.0.1", 8006, "")


@pytest.mark.parametrize(
    "endpoint",
    ["http://pve:8006", "pve.example.com:8006", "https://", "https://u:p@pve", "https://pve?x=1", "https://pve:99999"],
)
def test_parse_endpoint_refuses(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint must be an https:// URL"):
        parse_endpoint(endpoint)


def test_credentials_from_secret() -> None:
    token = credentials_from_secret({"tokenId": "ctoperator@pve!operator", "tokenSecret": "s3cret-uuid"})
    assert token == TokenCredentials(token_id="ctoperator@pve!operator", token_secret="s3cret-uuid")
    assert "s3cret" not in repr(token)

    password = credentials_from_secret({"username": "root@pam", "password": "hunter22"})
    assert password == PasswordCredentials(username="root@pam", password="hunter22")
    assert "hunter22" not in repr(password)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "must hold keys tokenId and tokenSecret, or username and password"),
        ({"tokenId": "a@pve!t", "tokenSecret": "TOPSECRET", "username": "root@pam"}, "not both"),
        ({"tokenId": "a@pve!t"}, "no value for tokenSecret"),
        ({"tokenId": "operator", "tokenSecret": "TOPSECRET"}, "tokenId .* must be user@realm!tokenname"),
        ({"username": "root", "password": "TOPSECRET"}, "username .* must be user@realm"),
        ({"username": "root@pam", "password": ""}, "no value for password"),
        # Hostile values (seen in a review: they crashed the handler and leaked into logs and annotations).
        ({"tokenId": "ct@pve!operator", "tokenSecret": "TOPSECRET\r\nX-Injected: 1"}, "tokenSecret .* line break"),
        ({"tokenId": "ct@pve!operator", "tokenSecret": "TOPSECRET-€uro"}, "tokenSecret .* printable ASCII"),
        ({"tokenId": "ct@pve!operator", "tokenSecret": "TOP SECRET"}, "tokenSecret .* without spaces"),
        ({"tokenId": "ct@pve!oper\nator", "tokenSecret": "TOPSECRET"}, "tokenId .* line break"),
        ({"tokenId": "ct@pve!opérator", "tokenSecret": "TOPSECRET"}, "tokenId .* must be user@realm!tokenname"),
        ({"username": "root@pam", "password": "TOPSECRET\n"}, "password .* line break"),
    ],
)
def test_credentials_from_secret_names_the_problem_not_the_secret(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        credentials_from_secret(data)
    assert "TOPSECRET" not in str(raised.value)
