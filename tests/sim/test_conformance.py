"""The simulator's parameter declarations must equal the official PVE 9.1 API schema.

``pve_sim.api_schema`` declares every served endpoint in code; this test holds each declaration
against the facts extracted from PVE's own ``apidoc`` dump (``tests/data/pve-api-9.1-facts.json``,
written by ``hack/extract_pve_api_facts.py``, which says where the schema comes from and how to
refresh it): the endpoint exists, the handler name, ``allowtoken`` and ``proxyto`` agree, and every
parameter has the same name, type, required-ness, enum, bounds, lengths, default, pattern, format
and ``requires`` -- in both directions, so a parameter PVE accepts and the simulator would reject as
unknown fails here. Property-string formats (``net[n]``, ``rootfs``, ...) are compared key by key.

The facts file is part of the repository; neither this test nor the simulator reads anything
outside it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pve_sim.api_schema import ENDPOINTS, PROPERTY_STRING_FORMATS, EndpointSpec, ParamSpec
from pve_sim.formats import is_known_format

FACTS_FILE = Path(__file__).resolve().parents[1] / "data" / "pve-api-9.1-facts.json"

# The endpoints the rest of the simulator routes to; each must be declared.
REQUIRED_ENDPOINTS = {
    ("GET", "/version"),
    ("POST", "/access/ticket"),
    ("GET", "/access/permissions"),
    ("GET", "/cluster/resources"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/status"),
    ("GET", "/cluster/tasks"),
    ("GET", "/cluster/ha/status/current"),
    ("GET", "/cluster/ha/status/manager_status"),
    ("GET", "/cluster/ha/rules"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{node}/status"),
    ("GET", "/nodes/{node}/version"),
    ("GET", "/nodes/{node}/rrddata"),
    ("GET", "/nodes/{node}/qemu"),
    ("GET", "/nodes/{node}/lxc"),
    ("POST", "/nodes/{node}/lxc"),
    ("GET", "/nodes/{node}/lxc/{vmid}"),
    ("DELETE", "/nodes/{node}/lxc/{vmid}"),
    ("GET", "/nodes/{node}/lxc/{vmid}/config"),
    ("PUT", "/nodes/{node}/lxc/{vmid}/config"),
    ("GET", "/nodes/{node}/lxc/{vmid}/rrddata"),
    ("GET", "/nodes/{node}/lxc/{vmid}/status"),
    ("GET", "/nodes/{node}/lxc/{vmid}/status/current"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/start"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/reboot"),
    ("POST", "/nodes/{node}/lxc/{vmid}/migrate"),
    ("GET", "/nodes/{node}/tasks"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("GET", "/pools"),
    ("POST", "/pools"),
    ("GET", "/pools/{poolid}"),
    ("DELETE", "/pools/{poolid}"),
}

# Schema keywords this test compares, plus documentation-only ones it may ignore. Anything else in
# PVE's schema (a new validation keyword) fails the test instead of being silently skipped.
COMPARED_KEYWORDS = {
    "type",
    "optional",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "requires",
    "default_key",
    "instance-types",
    "type-property",
}
DOCUMENTATION_KEYWORDS = {"description", "verbose_description", "typetext", "format_description", "title"}

ENDPOINT_IDS = [f"{method} {path}" for method, path in ENDPOINTS]


PveFacts = dict[str, dict[str, Any]]
"""``{path: {method: {name, allowtoken, proxyto, parameters, ...}}}`` of the official schema."""


def _load_reference() -> PveFacts:
    document = json.loads(FACTS_FILE.read_text(encoding="utf-8"))
    assert document["pveVersion"] == "9.1", f"{FACTS_FILE} holds PVE {document['pveVersion']}, not 9.1"
    paths: PveFacts = document["paths"]
    return paths


@pytest.fixture(scope="module")
def reference() -> PveFacts:
    return _load_reference()


def _official_method(reference: PveFacts, method: str, path: str) -> dict[str, Any]:
    info: dict[str, Any] | None = (reference.get(path) or {}).get(method)
    if info is None:
        pytest.fail(f"{method} {path} is not in the official PVE 9.1 schema", pytrace=False)
    return info


def _perl_pattern(pattern: str) -> str:
    """PVE's JSON shows qr// patterns as Perl stringifies them: (?^:...) means (?:...) here."""
    return pattern.replace("(?^:", "(?:")


def _compare_default(spec: ParamSpec, official: Mapping[str, Any], where: str) -> list[str]:
    if "default" not in official:
        return [] if spec.default is None else [f"{where}: declares default {spec.default!r}, PVE none"]
    expected = official["default"]
    if spec.type == "boolean":
        ok = isinstance(spec.default, bool) and spec.default == bool(expected)
    else:
        ok = type(spec.default) is type(expected) and spec.default == expected
    return [] if ok else [f"{where}: default {spec.default!r} != PVE {expected!r}"]


def _compare_number(value: float | None, official: object, what: str, where: str) -> list[str]:
    expected = None if official is None else float(str(official))
    return [] if value == expected else [f"{where}: {what} {value!r} != PVE {official!r}"]


def _compare_param(spec: ParamSpec, official: Mapping[str, Any], where: str) -> list[str]:
    """Every difference between one declaration and PVE's schema for it, as readable lines."""
    problems: list[str] = []
    unknown_keywords = set(official) - COMPARED_KEYWORDS - DOCUMENTATION_KEYWORDS
    if unknown_keywords:
        problems.append(f"{where}: PVE uses schema keywords this test does not compare: {unknown_keywords}")
    if spec.type != official.get("type"):
        problems.append(f"{where}: type {spec.type!r} != PVE {official.get('type')!r}")
    if spec.optional != bool(official.get("optional", 0)):
        problems.append(f"{where}: optional={spec.optional} but PVE optional={official.get('optional', 0)}")
    expected_enum = tuple(official["enum"]) if "enum" in official else None
    if spec.enum != expected_enum:
        problems.append(f"{where}: enum {spec.enum} != PVE {expected_enum}")
    problems += _compare_number(spec.minimum, official.get("minimum"), "minimum", where)
    problems += _compare_number(spec.maximum, official.get("maximum"), "maximum", where)
    if spec.min_length != official.get("minLength"):
        problems.append(f"{where}: min_length {spec.min_length} != PVE {official.get('minLength')}")
    if spec.max_length != official.get("maxLength"):
        problems.append(f"{where}: max_length {spec.max_length} != PVE {official.get('maxLength')}")
    problems += _compare_default(spec, official, where)
    expected_pattern = _perl_pattern(official["pattern"]) if "pattern" in official else None
    if spec.pattern != expected_pattern:
        problems.append(f"{where}: pattern {spec.pattern!r} != PVE {expected_pattern!r}")
    if spec.requires != official.get("requires"):
        problems.append(f"{where}: requires {spec.requires!r} != PVE {official.get('requires')!r}")
    if spec.default_key != bool(official.get("default_key", 0)):
        problems.append(f"{where}: default_key {spec.default_key} != PVE {official.get('default_key', 0)}")
    expected_instance_types = tuple(official["instance-types"]) if "instance-types" in official else None
    if spec.instance_types != expected_instance_types:
        problems.append(f"{where}: instance_types {spec.instance_types} != PVE {expected_instance_types}")
    if spec.type_property != official.get("type-property"):
        problems.append(f"{where}: type_property {spec.type_property!r} != PVE {official.get('type-property')!r}")

    official_format = official.get("format")
    if isinstance(official_format, dict):
        declared_keys = PROPERTY_STRING_FORMATS.get(spec.format or "")
        if declared_keys is None:
            problems.append(f"{where}: PVE declares a property string; declared format is {spec.format!r}")
        else:
            problems += _compare_property_string(declared_keys, official_format, where)
    elif spec.format != official_format:
        problems.append(f"{where}: format {spec.format!r} != PVE {official_format!r}")
    return problems


def _compare_property_string(declared: Mapping[str, ParamSpec], official: Mapping[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    for key in sorted(set(official) - set(declared)):
        problems.append(f"{where}: property-string key {key!r} is in PVE's schema but not declared")
    for key in sorted(set(declared) - set(official)):
        problems.append(f"{where}: property-string key {key!r} is declared but not in PVE's schema")
    for key in sorted(set(declared) & set(official)):
        problems += _compare_param(declared[key], official[key], f"{where}.{key}")
    return problems


@pytest.mark.parametrize(("method", "path"), list(ENDPOINTS), ids=ENDPOINT_IDS)
def test_endpoint_matches_official_schema(
    reference: PveFacts, method: str, path: str
) -> None:
    endpoint: EndpointSpec = ENDPOINTS[(method, path)]
    official = _official_method(reference, method, path)
    problems: list[str] = []

    if endpoint.name != official.get("name"):
        problems.append(f"handler name {endpoint.name!r} != PVE {official.get('name')!r}")
    if endpoint.allow_token != bool(official.get("allowtoken", 1)):
        problems.append(f"allow_token={endpoint.allow_token} but PVE allowtoken={official.get('allowtoken')}")
    if endpoint.proxy_to_node != (official.get("proxyto") == "node"):
        problems.append(f"proxy_to_node={endpoint.proxy_to_node} but PVE proxyto={official.get('proxyto')!r}")
    parameters = official.get("parameters") or {}
    if parameters.get("additionalProperties", 1) != 0:
        problems.append("PVE allows additional properties here; the validator rejects unknown parameters")

    official_params: dict[str, Any] = parameters.get("properties") or {}
    declared = {spec.name: spec for spec in endpoint.params.values()}
    for name in sorted(set(official_params) - set(declared)):
        problems.append(f"{name}: accepted by PVE but not declared (the simulator would reject it)")
    for name in sorted(set(declared) - set(official_params)):
        problems.append(f"{name}: declared but PVE does not accept it")
    for name in sorted(set(declared) & set(official_params)):
        problems += _compare_param(declared[name], official_params[name], name)

    assert not problems, f"{method} {path} differs from PVE 9.1:\n" + "\n".join(problems)


def test_every_required_endpoint_is_declared() -> None:
    missing = sorted(REQUIRED_ENDPOINTS - set(ENDPOINTS))
    assert not missing, f"endpoints the simulator serves but does not declare: {missing}"


@pytest.mark.parametrize(("method", "path"), list(ENDPOINTS), ids=ENDPOINT_IDS)
def test_declaration_is_internally_consistent(method: str, path: str) -> None:
    """Keys match names, path parameters are declared and required, formats are implemented,
    patterns compile, and ``[n]`` names go with an index range."""
    endpoint = ENDPOINTS[(method, path)]
    assert endpoint.method == method
    assert endpoint.path == path
    for key, spec in endpoint.params.items():
        assert key == spec.name
        assert spec.name.endswith("[n]") == (spec.index_max is not None), spec.name
        if spec.format is not None:
            assert spec.format in PROPERTY_STRING_FORMATS or is_known_format(spec.format), spec.format
        if spec.pattern is not None:
            re.compile(spec.pattern)
    for name in endpoint.path_params:
        assert name in endpoint.params, f"path parameter {name} not declared"
        assert not endpoint.params[name].optional, f"path parameter {name} must be required"


@pytest.mark.parametrize("format_name", sorted(PROPERTY_STRING_FORMATS))
def test_property_string_formats_use_implemented_formats(format_name: str) -> None:
    keys = PROPERTY_STRING_FORMATS[format_name]
    assert sum(spec.default_key for spec in keys.values()) <= 1
    for key, spec in keys.items():
        assert key == spec.name
        if spec.format is not None:
            assert is_known_format(spec.format), f"{format_name}.{key}: {spec.format}"


def test_every_property_string_format_is_used() -> None:
    used = {spec.format for ep in ENDPOINTS.values() for spec in ep.params.values()}
    assert set(PROPERTY_STRING_FORMATS) <= used


def test_pve_patterns_behave_the_same_in_python(reference: PveFacts) -> None:
    """The Perl-to-Python rewrite of a pattern must not change what it accepts; spot-check the
    patterns whose syntax differs most (NUL escape, escaped @, nested groups)."""
    create = _official_method(reference, "POST", "/nodes/{node}/lxc")["parameters"]["properties"]
    env = re.compile("^" + _perl_pattern(create["env"]["pattern"]) + "$")
    assert env.match("A=1\0B=two words")
    assert not env.match("A=1\0=2")
    permissions = _official_method(reference, "GET", "/access/permissions")["parameters"]["properties"]
    userid = re.compile("^" + _perl_pattern(permissions["userid"]["pattern"]) + "$")
    assert userid.match("root@pam!operator")
    assert not userid.match("root")
