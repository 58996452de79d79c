"""Parameter validation answers exactly as PVE 9.1 does.

The expected strings are PVE's own (pve-common ``JSONSchema.pm`` ``check_prop``/``check_type``/
``parse_property_string`` and the named-format verifiers of pve-common, pve-access-control,
pve-storage and pve-container). A client that parses PVE's 400 answers -- or a human comparing the
simulator's answer with a real node's -- must not be able to tell them apart. Note the trailing
newline on format errors: PVE's verifiers die with "...\\n" and ``check_prop`` keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from pve_sim.api_schema import (
    ENDPOINTS,
    EndpointSpec,
    ParamSpec,
    match_endpoint,
    parse_property_string,
    path_exists,
    validate_params,
)
from pve_sim.errors import ParameterError
from pve_sim.formats import FormatError, check_named_format, normalize_tags, parse_idmap, split_list

MISSING = "property is missing and it is not optional"
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"

CREATE = ENDPOINTS[("POST", "/nodes/{node}/lxc")]
UPDATE = ENDPOINTS[("PUT", "/nodes/{node}/lxc/{vmid}/config")]
START = ENDPOINTS[("POST", "/nodes/{node}/lxc/{vmid}/status/start")]
MIGRATE = ENDPOINTS[("POST", "/nodes/{node}/lxc/{vmid}/migrate")]
RESOURCES = ENDPOINTS[("GET", "/cluster/resources")]
TASKS = ENDPOINTS[("GET", "/nodes/{node}/tasks")]
STORAGE = ENDPOINTS[("GET", "/nodes/{node}/storage")]
POOLS = ENDPOINTS[("GET", "/pools")]
TICKET = ENDPOINTS[("POST", "/access/ticket")]
PERMISSIONS = ENDPOINTS[("GET", "/access/permissions")]
NEXTID = ENDPOINTS[("GET", "/cluster/nextid")]


def form(**values: str | list[str]) -> dict[str, list[str]]:
    """Request parameters as the HTTP layer hands them over (``_`` in names stands for ``-``)."""
    return {k.replace("_", "-"): v if isinstance(v, list) else [v] for k, v in values.items()}


def create_params(**extra: str | list[str]) -> dict[str, list[str]]:
    base = form(node="pve1", vmid="101", ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst")
    base.update(form(**extra))
    return base


def errors_of(
    endpoint: EndpointSpec, raw: Mapping[str, list[str]], json_values: Mapping[str, object] | None = None
) -> dict[str, str]:
    with pytest.raises(ParameterError) as caught:
        validate_params(endpoint, raw, json_values=json_values)
    assert caught.value.status == 400
    assert caught.value.message == "Parameter verification failed."
    assert caught.value.errors is not None
    return caught.value.errors


def error_of(endpoint: EndpointSpec, raw: Mapping[str, list[str]], param: str) -> str:
    errors = errors_of(endpoint, raw)
    assert set(errors) == {param}, errors
    return errors[param]


# --- the basic cases of PVE's wording -------------------------------------------------------------


def test_valid_create_returns_typed_values() -> None:
    params = validate_params(
        CREATE,
        create_params(
            memory="1024",
            cpulimit="1.5",
            start="1",
            unprivileged="0",
            hostname="ct-101",
            net0="name=eth0,bridge=vmbr0,ip=dhcp",
            rootfs="local-lvm:8",
        ),
    )
    assert params == {
        "node": "pve1",
        "vmid": 101,
        "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "memory": 1024,
        "cpulimit": 1.5,
        "start": True,
        "unprivileged": False,
        "hostname": "ct-101",
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
        "rootfs": "local-lvm:8",
    }


def test_defaults_are_not_filled_in() -> None:
    """PVE's validator leaves absent parameters absent; handlers apply the defaults."""
    params = validate_params(START, form(node="pve1", vmid="101"))
    assert params == {"node": "pve1", "vmid": 101}


def test_missing_required_parameter() -> None:
    assert error_of(CREATE, form(node="pve1", vmid="101"), "ostemplate") == MISSING


def test_unknown_parameter() -> None:
    assert error_of(START, form(node="pve1", vmid="101", bogus="1"), "bogus") == UNKNOWN


def test_bad_integer() -> None:
    assert error_of(CREATE, create_params(memory="abc"), "memory") == "type check ('integer') failed - got 'abc'"
    assert error_of(CREATE, create_params(memory="1.5"), "memory") == "type check ('integer') failed - got '1.5'"


def test_bad_number() -> None:
    assert error_of(CREATE, create_params(cpulimit="x1"), "cpulimit") == "type check ('number') failed - got 'x1'"
    assert validate_params(CREATE, create_params(cpulimit="5e-1"))["cpulimit"] == 0.5


def test_repeated_key_for_a_scalar_is_an_array() -> None:
    assert (
        error_of(CREATE, create_params(hostname=["a", "b"]), "hostname") == "type check ('string') failed - got ARRAY"
    )
    assert error_of(CREATE, create_params(memory=["1", "2"]), "memory") == "type check ('integer') failed - got ARRAY"


def test_repeated_key_for_a_list_format_is_joined() -> None:
    """PVE's RESTHandler joins arrays given for ``*-list`` string formats with commas."""
    params = validate_params(UPDATE, form(node="pve1", vmid="101", delete=["memory", "swap"], tags=["a", "b"]))
    assert params["delete"] == "memory,swap"
    assert params["tags"] == "a,b"


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("memory", "15", "value must have a minimum value of 16"),
        ("swap", "-1", "value must have a minimum value of 0"),
        ("cores", "8193", "value must have a maximum value of 8192"),
        ("cores", "0", "value must have a minimum value of 1"),
        ("tty", "7", "value must have a maximum value of 6"),
        ("cpulimit", "8192.5", "value must have a maximum value of 8192"),
        ("cpuunits", "500001", "value must have a maximum value of 500000"),
        ("bwlimit", "-0.5", "value must have a minimum value of 0"),
    ],
)
def test_bounds(param: str, value: str, message: str) -> None:
    assert error_of(CREATE, create_params(**{param: value}), param) == message


def test_bounds_are_inclusive() -> None:
    params = validate_params(CREATE, create_params(memory="16", cores="8192", tty="0", swap="0"))
    assert (params["memory"], params["cores"], params["tty"], params["swap"]) == (16, 8192, 0, 0)


def test_enum() -> None:
    assert (
        error_of(RESOURCES, form(type="lxc"), "type")
        == "value 'lxc' does not have a value in the enumeration 'vm, storage, node, sdn'"
    )
    assert validate_params(RESOURCES, form(type="vm")) == {"type": "vm"}


def test_lengths() -> None:
    assert (
        error_of(CREATE, create_params(description="x" * 8193), "description")
        == "value may only be 8192 characters long"
    )
    assert validate_params(CREATE, create_params(description="x" * 8192))["description"] == "x" * 8192
    assert error_of(CREATE, create_params(password="abcd"), "password") == "value must be at least 5 characters long"


def test_pattern() -> None:
    assert error_of(PERMISSIONS, form(userid="root"), "userid") == "value does not match the regex pattern"
    assert validate_params(PERMISSIONS, form(userid="operator@pve!k8s"))["userid"] == "operator@pve!k8s"
    assert error_of(CREATE, create_params(entrypoint="/sbin/init\x01"), "entrypoint") == (
        "value does not match the regex pattern"
    )


def test_all_errors_are_collected_at_once() -> None:
    errors = errors_of(
        CREATE,
        form(
            node="pve_1",
            vmid="99",
            memory="8",
            start="True",
            bogus="x",
            ostype="windows",
            hostname="web_01",
        ),
    )
    assert errors == {
        "node": "invalid format - value does not look like a valid node name\n",
        "vmid": "invalid format - value does not look like a valid VM ID\n",
        "ostemplate": MISSING,
        "memory": "value must have a minimum value of 16",
        "start": "type check ('boolean') failed - got 'True'",
        "bogus": UNKNOWN,
        "ostype": "value 'windows' does not have a value in the enumeration "
        "'debian, devuan, ubuntu, centos, fedora, opensuse, archlinux, alpine, gentoo, nixos, unmanaged'",
        "hostname": "invalid format - value does not look like a valid DNS name\n",
    }


def test_checks_stop_at_the_first_failure_in_pve_order() -> None:
    """Type before format before bounds: a 10-digit VMID fails the format, not the maximum."""
    assert error_of(NEXTID, form(vmid="1000000000"), "vmid") == (
        "invalid format - value does not look like a valid VM ID\n"
    )
    assert error_of(NEXTID, form(vmid="abc"), "vmid") == "type check ('integer') failed - got 'abc'"


# --- booleans -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["True", "true", "False", "yes", "on", "2", " 1"])
def test_top_level_booleans_accept_only_0_and_1(value: str) -> None:
    assert error_of(START, form(node="pve1", vmid="101", debug=value), "debug") == (
        f"type check ('boolean') failed - got '{value}'"
    )


def test_top_level_booleans_0_and_1() -> None:
    assert validate_params(START, form(node="pve1", vmid="101", debug="1"))["debug"] is True
    assert validate_params(START, form(node="pve1", vmid="101", debug="0"))["debug"] is False


def test_json_body_values() -> None:
    """An application/json body carries real booleans and numbers, checked as PVE's Perl sees them."""
    params = validate_params(
        MIGRATE,
        form(node="pve1", vmid="101"),
        json_values={"target": "pve2", "restart": True, "online": False, "timeout": 30.0},
    )
    assert params == {"node": "pve1", "vmid": 101, "target": "pve2", "restart": True, "online": False, "timeout": 30}
    errors = errors_of(
        MIGRATE,
        form(node="pve1", vmid="101"),
        json_values={"target": True, "timeout": 1.5, "restart": "yes", "online": {"a": 1}},
    )
    assert errors == {
        "target": "type check ('string') failed - got JSON::PP::Boolean",
        "timeout": "type check ('integer') failed - got '1.5'",
        "restart": "type check ('boolean') failed - got 'yes'",
        "online": "type check ('boolean') failed - got HASH",
    }


def test_json_null_is_not_given_and_json_arrays_join_for_lists() -> None:
    assert error_of(CREATE, form(node="pve1", vmid="101"), "ostemplate") == MISSING
    errors = errors_of(CREATE, form(node="pve1", vmid="101"), json_values={"ostemplate": None})
    assert errors == {"ostemplate": MISSING}
    params = validate_params(UPDATE, form(node="pve1", vmid="101"), json_values={"delete": ["net1", "mp0"]})
    assert params["delete"] == "net1,mp0"


# --- form quirks ----------------------------------------------------------------------------------


def test_empty_value_counts_as_not_given() -> None:
    """``key=`` reaches PVE's validator as undef: absent for optional, missing for required."""
    assert validate_params(START, form(node="pve1", vmid="101", debug="")) == {"node": "pve1", "vmid": 101}
    assert error_of(CREATE, create_params(ostemplate=""), "ostemplate") == MISSING


def test_empty_value_for_an_unknown_key_is_still_unknown() -> None:
    assert error_of(START, form(node="pve1", vmid="101", bogus=""), "bogus") == UNKNOWN


def test_extjs_cache_buster_is_ignored() -> None:
    assert validate_params(RESOURCES, {"_dc": ["1716560306"]}) == {}


def test_requires() -> None:
    """The error is reported on the *required* parameter, naming the one that requires it."""
    assert error_of(POOLS, form(type="lxc"), "poolid") == "missing property required by 'type'"
    assert validate_params(POOLS, form(type="lxc", poolid="ops")) == {"type": "lxc", "poolid": "ops"}
    assert error_of(CREATE, create_params(unique="1"), "restore") == "missing property required by 'unique'"
    errors = errors_of(TICKET, form(username="root@pam", password="secret", path="/vms"))
    assert errors == {"privs": "missing property required by 'path'"}


# --- indexed options ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["net0", "net9", "net31", "mp0", "mp255", "unused255", "dev255"])
def test_indexed_options_in_range(key: str) -> None:
    value = {
        "net": "name=eth0",
        "mp": "local-lvm:8,mp=/data",
        "unused": "local-lvm:vm-101-disk-1",
        "dev": "/dev/null",
    }[key.rstrip("0123456789")]
    assert validate_params(UPDATE, form(node="pve1", vmid="101", **{key: value}))[key] == value


@pytest.mark.parametrize("key", ["net32", "mp256", "unused256", "dev256", "net01", "net[n]", "netx"])
def test_indexed_options_out_of_range_are_unknown(key: str) -> None:
    """PVE 9.1 declares net0..net31 and mp/unused/dev 0..255 (pve-container LXC/Config.pm)."""
    assert error_of(UPDATE, form(node="pve1", vmid="101", **{key: "name=eth0"}), key) == UNKNOWN


# --- property strings -----------------------------------------------------------------------------


def test_parse_network_property_string() -> None:
    parsed = parse_property_string("lxc-net", "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,firewall=1,tag=20")
    assert parsed == {
        "name": "eth0",
        "bridge": "vmbr0",
        "ip": "10.0.0.5/24",
        "gw": "10.0.0.1",
        "firewall": True,
        "tag": 20,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("on", True),
        ("YES", True),
        ("true", True),
        ("0", False),
        ("off", False),
        ("No", False),
        ("FALSE", False),
    ],
)
def test_property_string_booleans_are_lenient(text: str, expected: bool) -> None:
    assert parse_property_string("lxc-features", f"nesting={text}") == {"nesting": expected}


def test_rootfs_default_key() -> None:
    assert parse_property_string("lxc-rootfs", "local-lvm:8") == {"volume": "local-lvm:8"}
    assert parse_property_string("lxc-rootfs", "volume=local-lvm:vm-101-disk-0,size=8G,ro=1") == {
        "volume": "local-lvm:vm-101-disk-0",
        "size": "8G",
        "ro": True,
    }
    assert parse_property_string("lxc-dev", "/dev/fuse,mode=0666") == {"path": "/dev/fuse", "mode": "0666"}


@pytest.mark.parametrize(
    ("fmt", "value", "message"),
    [
        ("lxc-net", "name=eth0,colour=blue", "invalid key in comma-separated list property: colour\n"),
        ("lxc-net", "name=eth0,name=eth1", "duplicate key in comma-separated list property: name\n"),
        ("lxc-net", "name=eth0,bridge=", "missing key in comma-separated list property\n"),
        ("lxc-features", "nesting", "value without key, but schema does not define a default key\n"),
        ("lxc-rootfs", "local-lvm:8,local-lvm:4", "duplicate key in comma-separated list property: volume\n"),
        ("lxc-rootfs", "volume=local:8,local:4", "duplicate key in comma-separated list property: volume\n"),
    ],
)
def test_property_string_syntax_errors(fmt: str, value: str, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse_property_string(fmt, value)
    assert caught.value.message == message


def test_property_string_value_errors_as_a_parameter_error() -> None:
    """PVE reports "format error" followed by one ``<param>.<key>: <message>`` line per key."""
    errors = errors_of(UPDATE, form(node="pve1", vmid="101", net0="bridge=vmbr 0,mtu=20,ip=10.0.0.5"))
    assert errors == {
        "net0": "invalid format - format error\n"
        "net0.name: property is missing and it is not optional\n"
        "net0.bridge: value does not match the regex pattern\n"
        "net0.mtu: value must have a minimum value of 64\n"
        "net0.ip: invalid format - value does not look like a valid ipv4 network configuration\n\n"
    }


def test_property_string_syntax_error_as_a_parameter_error() -> None:
    assert error_of(UPDATE, form(node="pve1", vmid="101", features="nesting=1,docker=1"), "features") == (
        "invalid format - invalid key in comma-separated list property: docker\n"
    )
    assert error_of(UPDATE, form(node="pve1", vmid="101", features="nesting=maybe"), "features") == (
        "invalid format - format error\nfeatures.nesting: type check ('boolean') failed - got 'maybe'\n"
    )


def test_mount_point_requires_a_path() -> None:
    assert error_of(UPDATE, form(node="pve1", vmid="101", mp0="local-lvm:8"), "mp0") == (
        "invalid format - format error\nmp0.mp: property is missing and it is not optional\n"
    )
    assert error_of(UPDATE, form(node="pve1", vmid="101", mp0="local-lvm:8,mp=/a/../b"), "mp0") == (
        "invalid format - format error\nmp0.mp: invalid format - /a/../b contains illegal character sequences\n\n"
    )


def test_mac_address_must_be_unicast() -> None:
    errors = errors_of(UPDATE, form(node="pve1", vmid="101", net0="name=eth0,hwaddr=01:24:11:2E:C5:7E"))
    assert errors["net0"].endswith(
        "net0.hwaddr: invalid format - value does not look like a valid unicast MAC address\n\n"
    )
    parsed = parse_property_string("lxc-net", "name=eth0,hwaddr=BC:24:11:2E:C5:7E,ip6=fd00::5/64,gw6=fd00::1")
    assert parsed["hwaddr"] == "BC:24:11:2E:C5:7E"
    assert parsed["ip6"] == "fd00::5/64"


def test_disk_size_format() -> None:
    assert parse_property_string("lxc-rootfs", "local:8,size=512MiB")["size"] == "512MiB"
    with pytest.raises(FormatError) as caught:
        parse_property_string("lxc-rootfs", "local:8,size=8GB", path="rootfs")
    assert caught.value.errors == {"rootfs.size": "invalid format - value does not look like a valid disk size: 8GB\n"}


# --- named formats --------------------------------------------------------------------------------


# The smallest valid request per endpoint, so that only the parameter under test can fail.
BASE_PARAMS: dict[str, tuple[EndpointSpec, dict[str, list[str]]]] = {
    "create": (CREATE, create_params()),
    "update": (UPDATE, form(node="pve1", vmid="101")),
    "tasks": (TASKS, form(node="pve1")),
    "storage": (STORAGE, form(node="pve1")),
    "ticket": (TICKET, form(username="root@pam", password="secret")),
}


@pytest.mark.parametrize(
    ("base", "param", "value", "message"),
    [
        ("create", "storage", "l", "storage ID 'l' cannot be shorter than 2 characters\n"),
        ("create", "storage", "local lvm", "storage ID 'local lvm' contains illegal characters\n"),
        ("create", "pool", "a/b/c/d", "pool name 'a/b/c/d' nested too deeply (max levels = 3)\n"),
        ("create", "pool", "ops team", "pool name 'ops team' contains invalid characters\n"),
        ("create", "tags", "ok;not/ok", "invalid characters in tag\n"),
        ("create", "nameserver", "10.0.0.1 not-an-ip", "value does not look like a valid IP address\n"),
        ("create", "searchdomain", "example.com bad_domain", "value does not look like a valid DNS name\n"),
        ("create", "startup", "order=1,later", "unable to parse startup options\n"),
        ("create", "timezone", "Mars/Olympus_Mons", "invalid time zone 'Mars/Olympus_Mons'\n"),
        ("create", "hookscript", "no-storage-prefix", "unable to parse volume ID 'no-storage-prefix'\n"),
        ("update", "delete", "memory,1abc", "invalid configuration ID '1abc'\n"),
        ("tasks", "statusfilter", "ok,failed", "invalid status 'failed'\n"),
        ("storage", "content", "rootdir,vms", "invalid content type 'vms'\n"),
        ("storage", "target", "-pve", "value does not look like a valid node name\n"),
        ("ticket", "realm", "1pam", "value does not look like a valid realm\n"),
    ],
)
def test_named_format_errors(base: str, param: str, value: str, message: str) -> None:
    endpoint, base_params = BASE_PARAMS[base]
    validate_params(endpoint, base_params)  # the base request itself is valid
    raw = {**base_params, param: [value]}
    assert error_of(endpoint, raw, param) == f"invalid format - {message}"


def test_privilege_list() -> None:
    raw = form(username="root@pam", password="x", path="/vms/101", privs="VM.Audit,VM.Teleport")
    assert error_of(TICKET, raw, "privs") == "invalid format - invalid privilege 'VM.Teleport'\n"
    raw["privs"] = ["VM.Audit,VM.PowerMgmt"]
    assert validate_params(TICKET, raw)["privs"] == "VM.Audit,VM.PowerMgmt"


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("tags", "prod;team-a,Web.1 k8s_managed"),
        ("nameserver", "10.0.0.1 fd00::53 fe80::1%eth0"),
        ("searchdomain", "example.com,lab.example.com"),
        ("startup", "order=3,up=30,down=60"),
        ("timezone", "host"),
        ("timezone", "Europe/Vienna"),
        ("storage", "local-lvm"),
        ("pool", "ops/k8s"),
        ("hostname", "ct-101.lab.example.com"),
        ("features", "nesting=1,keyctl=1,mount=nfs;cifs"),
    ],
)
def test_named_formats_accept_valid_values(param: str, value: str) -> None:
    assert validate_params(CREATE, create_params(**{param: value}))[param] == value


@pytest.mark.parametrize("value", ["1", "local-lvm", "local:local-lvm,ceph:rbd"])
def test_storage_pair_list_accepts_pve_forms(value: str) -> None:
    params = validate_params(MIGRATE, form(node="pve1", vmid="101", target="pve2", target_storage=value))
    assert params["target-storage"] == value


def test_storage_pair_list_error_keeps_pves_extra_newlines() -> None:
    """pve-common re-dies with "$@\\n" twice around the inner message: three newlines in total."""
    raw = form(node="pve1", vmid="101", target="pve2", target_storage="x")
    assert error_of(MIGRATE, raw, "target-storage") == (
        "invalid format - entry 'x' contains invalid ID - storage ID 'x' cannot be shorter than 2 characters\n\n\n"
    )


def test_parse_idmap_whole_value() -> None:
    storage_map = parse_idmap("local:local-lvm,ceph")
    assert storage_map.map("local") == "local-lvm"
    assert storage_map.map("nfs") == "ceph"
    assert parse_idmap("1").identity
    with pytest.raises(FormatError) as caught:
        parse_idmap("1,local-lvm")
    assert caught.value.message == "identity mapping cannot be combined with other mappings\n"
    with pytest.raises(FormatError) as caught:
        parse_idmap("a1:b1,a1:c1")
    assert caught.value.message == "duplicate mapping for source 'a1'\n"


def test_check_named_format_opt_suffix_skips_empty_values() -> None:
    check_named_format("pve-node-opt", "")
    with pytest.raises(FormatError):
        check_named_format("pve-node-opt", "bad name")


def test_split_list() -> None:
    assert split_list(" a, b;c  d,,") == ["a", "b", "c", "d"]
    assert split_list("a b\0c") == ["a b", "c"]
    assert split_list("") == []


# --- tags -----------------------------------------------------------------------------------------


def test_normalize_tags() -> None:
    assert normalize_tags("Web;db,web  Cache") == "cache;db;web"
    assert normalize_tags("") == ""
    assert normalize_tags("b;A;a", case_sensitive=True) == "A;a;b"
    assert normalize_tags("zeta;Alpha;zeta", keep_order=True) == "zeta;alpha"


# --- path matching and path parameters ------------------------------------------------------------


def test_match_endpoint_returns_template_and_path_params() -> None:
    upid = "UPID:pve1:0012AB34:0ABCDEF0:65F0A1B2:vzstart:101:root@pam!operator:"
    found = match_endpoint("GET", f"/nodes/pve1/tasks/{upid}/status")
    assert found is not None
    endpoint, params = found
    assert endpoint.path == "/nodes/{node}/tasks/{upid}/status"
    assert params == {"node": "pve1", "upid": upid}


def test_match_endpoint_ignores_empty_segments() -> None:
    found = match_endpoint("POST", "//nodes/pve1//lxc/101/status/start/")
    assert found is not None
    assert found[0].name == "vm_start"
    assert found[1] == {"node": "pve1", "vmid": "101"}


def test_unserved_method_and_path() -> None:
    assert match_endpoint("POST", "/version") is None
    assert path_exists("/version")
    assert match_endpoint("GET", "/nodes/pve1/lxc/101/snapshot") is None
    assert not path_exists("/nodes/pve1/lxc/101/snapshot")
    assert match_endpoint("GET", "/nodes/pve 1/status") is None


def test_endpoint_attributes() -> None:
    ticket = match_endpoint("POST", "/access/ticket")
    assert ticket is not None and ticket[0].allow_token is False
    status = match_endpoint("GET", "/nodes/pve1/lxc/101/status/current")
    assert status is not None and status[0].proxy_to_node is True
    rrd = match_endpoint("GET", "/nodes/pve1/rrddata")
    assert rrd is not None and rrd[0].proxy_to_node is False


@pytest.mark.parametrize(
    ("path", "param", "message"),
    [
        (
            "/nodes/pve_1/lxc/101/status/current",
            "node",
            "invalid format - value does not look like a valid node name\n",
        ),
        ("/nodes/pve1/lxc/99/status/current", "vmid", "invalid format - value does not look like a valid VM ID\n"),
        ("/nodes/pve1/lxc/0101/status/current", "vmid", "invalid format - value does not look like a valid VM ID\n"),
        ("/nodes/pve1/lxc/abc/status/current", "vmid", "type check ('integer') failed - got 'abc'"),
    ],
)
def test_path_params_are_validated(path: str, param: str, message: str) -> None:
    found = match_endpoint("GET", path)
    assert found is not None
    endpoint, path_params = found
    raw = {name: [value] for name, value in path_params.items()}
    assert error_of(endpoint, raw, param) == message


def test_several_messages_for_one_parameter_are_joined_like_pve() -> None:
    """PVE joins them with a literal backslash-n (Perl single quotes), not a newline."""
    endpoint = EndpointSpec(
        method="GET",
        path="/example",
        params={
            "a": ParamSpec("a", "string", optional=False),
            "b": ParamSpec("b", "string", requires="a"),
        },
    )
    assert errors_of(endpoint, form(b="x")) == {"a": f"{MISSING}\\nmissing property required by 'b'"}


def test_array_and_object_parameters() -> None:
    endpoint = EndpointSpec(
        method="POST",
        path="/example",
        params={"items": ParamSpec("items", "array"), "opts": ParamSpec("opts", "object")},
    )
    assert validate_params(endpoint, form(items="one")) == {"items": ["one"]}
    assert validate_params(endpoint, form(items=["one", "two"])) == {"items": ["one", "two"]}
    assert validate_params(endpoint, {}, json_values={"opts": {"k": 1}}) == {"opts": {"k": 1}}
    assert errors_of(endpoint, form(opts="x")) == {"opts": "type check ('object') failed"}
