"""Argo CD health checks and ignored updates for ProxmoxServerPool and ContainerPolicy.

The Lua scripts in deploy/argocd/health/ run here under Lua 5.1 (lupa) in a sandbox shaped like the one
Argo CD gives them (util/lua/lua.go in argo-cd: gopher-lua, a Lua 5.1, with only the base, package
and table libraries and a reduced ``os``; no ``string`` library, so no methods on strings either),
on objects shaped exactly as the operator writes them (tests/data/argocd/*.json). A script that
would fail or answer differently inside Argo CD fails here.

The ignoreResourceUpdates jq expressions run with jq itself, in the ``del(<expression>)`` form Argo
CD wraps them in (util/argo/normalizers/diff_normalizer.go).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaError, LuaRuntime

from pve_operator.api.v1alpha1 import (
    ApiModel,
    ContainerPolicySpec,
    ContainerPolicyStatus,
    ProxmoxServerPoolSpec,
    ProxmoxServerPoolStatus,
    StatusModel,
)

REPO = Path(__file__).resolve().parents[2]
ARGOCD_DIR = REPO / "deploy" / "argocd"
HEALTH_DIR = ARGOCD_DIR / "health"
ARGOCD_CM = ARGOCD_DIR / "argocd-cm.yaml"
DATA_DIR = REPO / "tests" / "data" / "argocd"
CRDS_DIR = REPO / "crds"

GROUP = "pve.ctoperator.io"
KINDS = ("ProxmoxServerPool", "ContainerPolicy")
HEALTH_KEY = "resource.customizations.health."
IGNORE_UPDATES_KEY = "resource.customizations.ignoreResourceUpdates."
KOPF_ANNOTATION_PREFIX = f"{GROUP}/"
"""Kopf's progress and diff-base annotations (settings.persistence in handlers/lifecycle.py)."""

ARGOCD_HEALTH_CODES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})
"""What Argo CD accepts from a health script (isValidHealthStatusCode); anything else becomes Unknown."""

# Argo CD opens the base, package and table libraries and a 'safe' os (clock, date, difftime, time).
# The runtime's string metatable is removed: without the string library gopher-lua has none, so
# ("x"):sub(1) fails inside Argo CD and must fail here too.
_SANDBOX = """
debug.setmetatable("", nil)
local base = {
  "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "print", "rawequal",
  "rawget", "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "unpack", "xpcall",
  "_VERSION", "require", "module", "load", "loadstring", "getfenv", "setfenv",
}
local table_lib, os_time, os_date, os_clock, os_difftime = table, os.time, os.date, os.clock, os.difftime
return function(source, obj)
  local env = { obj = obj, table = table_lib }
  for _, name in ipairs(base) do env[name] = _G[name] end
  env.os = { time = os_time, date = os_date, clock = os_clock, difftime = os_difftime }
  env._G = env
  local chunk, err = loadstring(source, "=health.lua")
  if chunk == nil then error(err, 0) end
  setfenv(chunk, env)
  return chunk()
end
"""


@dataclass(frozen=True)
class Health:
    status: str
    message: str | None


def run_health(script: str, obj: Mapping[str, Any]) -> Health:
    """Run a health script on ``obj`` like Argo CD does; the table it returns as a Health."""
    lua = LuaRuntime(register_eval=False, register_builtins=False)
    sandboxed = lua.execute(_SANDBOX)
    result = sandboxed(script, lua.table_from(dict(obj), recursive=True))
    assert lua.eval("type")(result) == "table", f"a health script must return a table, not {result!r}"
    fields = dict(result.items())
    assert set(fields) <= {"status", "message"}, f"unexpected fields in the health table: {sorted(fields)}"
    status = fields.get("status")
    assert status in ARGOCD_HEALTH_CODES, f"Argo CD would turn status {status!r} into Unknown"
    message = fields.get("message")
    assert message is None or isinstance(message, str)
    return Health(status=str(status), message=message)


def health_script(kind: str) -> str:
    return (HEALTH_DIR / f"{GROUP}_{kind}.lua").read_text()


def load_object(name: str) -> dict[str, Any]:
    document = json.loads((DATA_DIR / name).read_text())
    assert isinstance(document, dict)
    return document


def condition_message(obj: Mapping[str, Any], condition_type: str) -> str:
    for condition in obj["status"]["conditions"]:
        if condition["type"] == condition_type:
            return str(condition["message"])
    raise AssertionError(f"{obj['metadata']['name']} has no {condition_type} condition")


# ---------------------------------------------------------------------------------------------------------
# What each recorded object must look like in Argo CD


@dataclass(frozen=True)
class Expectation:
    file: str
    status: str
    message_of: str | None = None
    """The health message is this condition's message, verbatim."""
    message_contains: str | None = None
    """The health message contains this text; ``{generation}`` is the object's metadata.generation."""

    def expected_message(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        """("equals" | "contains", text)."""
        if self.message_of is not None:
            return "equals", condition_message(obj, self.message_of)
        assert self.message_contains is not None
        return "contains", self.message_contains.format(generation=obj["metadata"].get("generation"))


EXPECTATIONS = (
    # ---- ContainerPolicy
    Expectation("containerpolicy-ready.json", "Healthy", message_of="Ready"),
    Expectation("containerpolicy-creating.json", "Progressing", message_of="Progressing"),
    Expectation("containerpolicy-degraded-unreachable.json", "Degraded", message_of="Degraded"),
    Expectation("containerpolicy-degraded-actions-failed.json", "Degraded", message_of="Degraded"),
    Expectation("containerpolicy-pool-full.json", "Degraded", message_of="Progressing"),
    Expectation("containerpolicy-unschedulable.json", "Degraded", message_of="Progressing"),
    Expectation("containerpolicy-paused.json", "Suspended", message_of="Progressing"),
    Expectation("containerpolicy-stale-generation.json", "Progressing", message_contains="generation {generation}"),
    Expectation("containerpolicy-being-deleted.json", "Progressing", message_contains="Being deleted"),
    Expectation("containerpolicy-no-status.json", "Progressing", message_contains="Waiting for the operator"),
    # ---- ProxmoxServerPool: it has no Progressing condition (nothing like creating CTs or PoolFull);
    # it is Progressing only until the operator has probed the current generation.
    Expectation("proxmoxserverpool-ready.json", "Healthy", message_of="Ready"),
    Expectation("proxmoxserverpool-degraded-unreachable.json", "Degraded", message_of="Degraded"),
    Expectation("proxmoxserverpool-degraded-authentication.json", "Degraded", message_of="Degraded"),
    Expectation("proxmoxserverpool-degraded-node-offline.json", "Degraded", message_of="Degraded"),
    Expectation("proxmoxserverpool-stale-generation.json", "Progressing", message_contains="generation {generation}"),
    Expectation("proxmoxserverpool-being-deleted.json", "Progressing", message_contains="Being deleted"),
    Expectation("proxmoxserverpool-no-status.json", "Progressing", message_contains="Waiting for the operator"),
    # ---- Recorded from a real run by hack/record_status_objects.py (real operator, API server and pve_sim).
    Expectation("recorded-proxmoxserverpool-ready.json", "Healthy", message_of="Ready"),
    Expectation("recorded-proxmoxserverpool-unreachable.json", "Degraded", message_of="Degraded"),
    Expectation("recorded-containerpolicy-creating.json", "Progressing", message_of="Progressing"),
    Expectation("recorded-containerpolicy-ready.json", "Healthy", message_of="Ready"),
    Expectation("recorded-containerpolicy-pool-full.json", "Degraded", message_of="Progressing"),
    Expectation("recorded-containerpolicy-unreachable.json", "Degraded", message_of="Degraded"),
)


def test_every_recorded_object_has_an_expectation() -> None:
    """A file added to tests/data/argocd/ (e.g. recorded from an end-to-end run) must say what Argo CD shows."""
    recorded = sorted(p.name for p in DATA_DIR.glob("*.json"))
    expected = sorted(e.file for e in EXPECTATIONS)
    assert recorded == expected


@pytest.mark.parametrize("expectation", EXPECTATIONS, ids=lambda e: e.file.removesuffix(".json"))
def test_health_of_recorded_object(expectation: Expectation) -> None:
    obj = load_object(expectation.file)
    health = run_health(health_script(obj["kind"]), obj)

    assert health.status == expectation.status, health.message
    how, text = expectation.expected_message(obj)
    assert health.message, "Argo CD shows the message next to the status: it must say why"
    if how == "equals":
        assert health.message == text
    else:
        assert text in health.message


@pytest.mark.parametrize("name", sorted(p.name for p in DATA_DIR.glob("*.json")))
def test_recorded_objects_are_shaped_as_the_operator_writes_them(name: str) -> None:
    """The status (and spec) parse with the operator's own models and nothing is lost on the way back.

    metav1.Condition fields, camelCase names, RFC 3339 timestamps: what the models write is what the scripts
    are tested on, so a renamed status field or condition breaks this test rather than Argo CD's health.
    """
    obj = load_object(name)
    models: dict[str, tuple[type[ApiModel], type[StatusModel]]] = {
        "ProxmoxServerPool": (ProxmoxServerPoolSpec, ProxmoxServerPoolStatus),
        "ContainerPolicy": (ContainerPolicySpec, ContainerPolicyStatus),
    }
    spec_model, status_model = models[obj["kind"]]
    assert obj["apiVersion"] == f"{GROUP}/v1alpha1"
    spec_model.model_validate(obj["spec"])
    if "status" not in obj:
        return
    written = status_model.model_validate(obj["status"]).to_dict()
    for key, value in obj["status"].items():
        assert written.get(key) == value, f"status.{key} is not what the operator writes"
    for condition in obj["status"]["conditions"]:
        assert set(condition) == {"type", "status", "observedGeneration", "lastTransitionTime", "reason", "message"}


# ---------------------------------------------------------------------------------------------------------
# Edge cases derived from the recorded objects


def _with_conditions(name: str, *changes: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    obj = load_object(name)
    for condition_type, fields in changes:
        for condition in obj["status"]["conditions"]:
            if condition["type"] == condition_type:
                condition.update(fields)
    return obj


@pytest.mark.parametrize("kind", KINDS)
def test_empty_conditions_list_is_progressing(kind: str) -> None:
    obj = load_object(f"{kind.lower()}-ready.json")
    obj["status"]["conditions"] = []

    assert run_health(health_script(kind), obj).status == "Progressing"


@pytest.mark.parametrize("kind", KINDS)
def test_condition_set_for_an_older_generation_does_not_count(kind: str) -> None:
    """Top-level observedGeneration is current, but Ready is left over from generation 1: not Healthy yet."""
    obj = _with_conditions(f"{kind.lower()}-ready.json", ("Ready", {"observedGeneration": 1}))
    obj["metadata"]["generation"] = 2
    obj["status"]["observedGeneration"] = 2
    for condition in obj["status"]["conditions"]:
        if condition["type"] != "Ready":
            condition["observedGeneration"] = 2

    assert run_health(health_script(kind), obj).status == "Progressing"


@pytest.mark.parametrize("kind", KINDS)
def test_degraded_without_message_shows_the_reason(kind: str) -> None:
    obj = _with_conditions(
        f"{kind.lower()}-ready.json", ("Degraded", {"status": "True", "reason": "PermissionDenied", "message": ""})
    )

    assert run_health(health_script(kind), obj) == Health("Degraded", "PermissionDenied")


def test_retained_policy_being_deleted_says_its_cts_are_released() -> None:
    obj = load_object("containerpolicy-being-deleted.json")
    obj["spec"]["deletionPolicy"] = "Retain"

    health = run_health(health_script("ContainerPolicy"), obj)
    assert health.status == "Progressing"
    assert health.message is not None and "Retain" in health.message


def test_ready_unknown_is_progressing() -> None:
    obj = _with_conditions("proxmoxserverpool-ready.json", ("Ready", {"status": "Unknown", "reason": "Probing"}))

    assert run_health(health_script("ProxmoxServerPool"), obj).status == "Progressing"


# ---------------------------------------------------------------------------------------------------------
# The sandbox is as strict as Argo CD's (otherwise the tests above would prove little)


@pytest.mark.parametrize(
    "script",
    [
        'return { status = string.format("%s", "Healthy") }',
        'return { status = ("Healthy"):sub(1) }',
        "return { status = tostring(math.floor(1)) }",
        "return { status = io.read() }",
        'os.execute("true"); return { status = "Healthy" }',
    ],
)
def test_sandbox_lacks_what_argocd_lacks(script: str) -> None:
    with pytest.raises(LuaError):
        run_health(script, {"metadata": {}})


def test_sandbox_offers_what_argocd_offers() -> None:
    """Table functions, tostring of numbers (integers print without a fraction) and os.time work in Argo CD."""
    script = """
    local parts = {}
    table.insert(parts, "Heal")
    table.insert(parts, "thy")
    local now = os.time()
    return { status = table.concat(parts), message = "generation " .. obj.metadata.generation }
    """
    assert run_health(script, {"metadata": {"generation": 7}}) == Health("Healthy", "generation 7")


# ---------------------------------------------------------------------------------------------------------
# argocd-cm.yaml


def _argocd_cm() -> dict[str, Any]:
    document = yaml.safe_load(ARGOCD_CM.read_text())
    assert isinstance(document, dict)
    return document


def test_argocd_cm_embeds_exactly_the_lua_files() -> None:
    data = _argocd_cm()["data"]
    embedded = {key.removeprefix(HEALTH_KEY): text for key, text in data.items() if key.startswith(HEALTH_KEY)}
    files = {path.stem: path.read_text() for path in HEALTH_DIR.glob("*.lua")}

    assert sorted(embedded) == sorted(files) == sorted(f"{GROUP}_{kind}" for kind in KINDS)
    for name, text in files.items():
        assert embedded[name] == text, f"argocd-cm.yaml's copy of health/{name}.lua differs: copy the file again"


def test_argocd_cm_keys_name_the_kinds_the_crds_define() -> None:
    """resource.customizations keys are <group>_<Kind>: a typo silently disables the customization."""
    defined = set()
    for path in CRDS_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        defined.add(f"{crd['spec']['group']}_{crd['spec']['names']['kind']}")
    data = _argocd_cm()["data"]
    customized = {
        key.removeprefix(prefix)
        for key in data
        for prefix in (HEALTH_KEY, IGNORE_UPDATES_KEY)
        if key.startswith(prefix)
    }

    assert customized == defined
    assert data["resource.ignoreResourceUpdatesEnabled"] == "true"


def _ignore_rules(kind: str) -> dict[str, list[str]]:
    rules = yaml.safe_load(_argocd_cm()["data"][f"{IGNORE_UPDATES_KEY}{GROUP}_{kind}"])
    assert isinstance(rules, dict)
    assert set(rules) <= {"jsonPointers", "jqPathExpressions", "managedFieldsManagers"}
    return rules


def _jq_delete(expression: str, document: Mapping[str, Any]) -> Any:
    jq = shutil.which("jq")
    if jq is None:
        pytest.fail("jq is not installed (apt-get install jq): it checks the ignoreResourceUpdates expressions")
    result = subprocess.run(
        [jq, "-c", f"del({expression})"], input=json.dumps(document), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"jq failed on {expression!r}: {result.stderr}"
    outputs = result.stdout.splitlines()
    assert len(outputs) == 1, "Argo CD rejects an expression that yields more than one document"
    return json.loads(outputs[0])


def _recorded_objects(kind: str) -> Iterator[dict[str, Any]]:
    for path in sorted(DATA_DIR.glob(f"{kind.lower()}-*.json")):
        yield load_object(path.name)


@pytest.mark.parametrize("kind", KINDS)
def test_updates_of_kopf_bookkeeping_and_status_are_ignored(kind: str) -> None:
    """Every pve.ctoperator.io/ annotation goes (Kopf's diff base and per-handler progress), nothing else does."""
    rules = _ignore_rules(kind)
    assert rules.get("jsonPointers") == ["/status"]
    removed_any = False
    for obj in _recorded_objects(kind):
        normalized = obj
        for expression in rules.get("jqPathExpressions", []):
            normalized = _jq_delete(expression, normalized)
        before = obj["metadata"].get("annotations", {})
        after = normalized["metadata"].get("annotations", {})
        assert after == {k: v for k, v in before.items() if not k.startswith(KOPF_ANNOTATION_PREFIX)}
        assert {k: v for k, v in normalized.items() if k != "metadata"} == {
            k: v for k, v in obj.items() if k != "metadata"
        }
        removed_any = removed_any or after != before
    assert removed_any, "no recorded object carries Kopf's annotations: the check above proved nothing"


@pytest.mark.parametrize("kind", KINDS)
def test_ignore_expressions_accept_objects_without_annotations(kind: str) -> None:
    """Argo CD drops an expression that errors; one that fails on an object without annotations is useless."""
    obj = load_object(f"{kind.lower()}-ready.json")
    del obj["metadata"]["annotations"]
    for expression in _ignore_rules(kind).get("jqPathExpressions", []):
        assert _jq_delete(expression, obj) == obj


@pytest.mark.parametrize("kind", KINDS)
def test_ignore_expressions_cover_every_handler_progress_key(kind: str) -> None:
    """Keys Kopf derives from handler ids (with dots, hashed suffixes) are covered without listing them."""
    obj = load_object(f"{kind.lower()}-ready.json")
    kopf_keys = {
        f"{GROUP}/policy_changed.spec": '{"started":"2026-11-20T09:00:00+00:00","retries":1}',
        f"{GROUP}/pool_changed": '{"started":"2026-11-20T09:00:00+00:00","retries":0}',
        f"{GROUP}/touch-dummy": "2026-11-20T09:00:00.000000",
        f"{GROUP}/a-very-long-handler-identifier-that-kopf-shortens-wit-Yl2nRA": "{}",
    }
    obj["metadata"]["annotations"].update(kopf_keys)
    normalized = obj
    for expression in _ignore_rules(kind).get("jqPathExpressions", []):
        normalized = _jq_delete(expression, normalized)

    assert not set(kopf_keys) & set(normalized["metadata"]["annotations"])
    assert "argocd.argoproj.io/tracking-id" in normalized["metadata"]["annotations"]
