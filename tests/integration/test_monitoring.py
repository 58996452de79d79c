"""deploy/monitoring/: the Grafana dashboard, the PrometheusRule and its plain rule file, checked with promtool.

- ``promtool check rules`` on the rule file, ``promtool test rules`` on deploy/monitoring/tests/alerts.test.yaml,
  and every alert has a unit test where it fires and one where it does not;
- the PrometheusRule's spec and alerts.rules.yaml are the same rules;
- every PromQL expression of the dashboard parses (written into a rule file as recording rules for promtool);
- every metric and label the dashboard and the rules select or group by is one the operator really exports,
  read from a /metrics scrape of the real operator process running against the local control plane and
  pve_sim, after it reconciled a pool and a policy (and hit an error and a refusal, so those series exist).
  Label values are checked against the operator's own vocabularies (action kinds, states, reasons, ...).

promtool is built from the upstream Go module by hack/build-promtool.sh (cached outside the clone); a failed
build fails these tests with the script's output, never skips them.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pve_operator.api.v1alpha1 import Thresholds
from pve_operator.api.v1alpha1.common import ActionKind, ActionResult
from pve_operator.api.v1alpha1.containerpolicy import ContainerState
from pve_operator.planning.balancing.proposal import RefusalKind
from pve_operator.pve import errors as pve_errors
from tests.fixtures.kube import KubeCluster, wait_for
from tests.fixtures.operator import apply_objects, connect_pool, policy_manifest, pool_manifest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES_FILE = MONITORING / "alerts.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RULE_TESTS = MONITORING / "tests" / "alerts.test.yaml"
DASHBOARD = MONITORING / "pve-operator-dashboard.json"
METRICS_SERVICE = REPO / "deploy" / "base" / "service-metrics.yaml"
BUILD_PROMTOOL = REPO / "hack" / "build-promtool.sh"
OPERATOR_SOURCES = REPO / "operator" / "pve_operator"

#: A cold build compiles Prometheus's dependency tree (minutes on a loaded 2-core machine); the test that
#: first needs promtool sets the session fixture up, so its timeout must cover the build.
PROMTOOL_BUILD_TIMEOUT_S = 3600

#: Series Prometheus itself creates for every target (not the operator's), with the target labels that
#: service discovery adds (Prometheus Operator ServiceMonitor and the usual kubernetes-service-endpoints job).
PROMETHEUS_TARGET_SERIES = {"up": frozenset({"job", "instance", "namespace", "service", "pod", "endpoint"})}

pytestmark = [pytest.mark.timeout(PROMTOOL_BUILD_TIMEOUT_S)]


# ---------------------------------------------------------------------------------------------------------
# promtool


@pytest.fixture(scope="session")
def promtool() -> Path:
    """hack/build-promtool.sh's binary (built on first use, then cached); a failed build fails the test."""
    result = subprocess.run(
        ["bash", str(BUILD_PROMTOOL)], capture_output=True, text=True, check=False, timeout=PROMTOOL_BUILD_TIMEOUT_S
    )
    if result.returncode != 0:
        pytest.fail(
            f"bash hack/build-promtool.sh exited with {result.returncode}: promtool (built from the Go module "
            "github.com/prometheus/prometheus) is needed to check deploy/monitoring/. Its output:\n"
            + result.stderr[-6000:],
            pytrace=False,
        )
    found = re.search(r"^PROMTOOL=(.+)$", result.stdout, re.MULTILINE)
    assert found, f"hack/build-promtool.sh printed no PROMTOOL= line:\n{result.stdout}"
    path = Path(found.group(1))
    assert path.is_file(), path
    return path


def run_promtool(promtool: Path, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *map(str, args)], capture_output=True, text=True, check=False, timeout=300, cwd=cwd
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)}\n--- stdout:\n{result.stdout}\n--- stderr:\n{result.stderr}"
    )


# ---------------------------------------------------------------------------------------------------------
# The files


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rule_groups() -> list[dict[str, Any]]:
    groups = load_yaml(RULES_FILE)["groups"]
    assert isinstance(groups, list) and groups
    return groups


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target."""
    found = []
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    return found


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def dashboard_variable_selectors() -> list[tuple[str, str, str]]:
    """(variable, selector, label) of every ``label_values(selector, label)`` query variable."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        matched = LABEL_VALUES.match(query)
        assert matched, f"variable {variable['name']}: only label_values(selector, label) queries are checked: {query}"
        found.append((variable["name"], matched.group("selector"), matched.group("label")))
    return found


GRAFANA_DURATION = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}"
)
GRAFANA_VARIABLE = re.compile(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?")


def without_grafana_variables(expr: str) -> str:
    """What Prometheus receives, near enough: durations for $__rate_interval & co, a regex for $pool & co."""
    return GRAFANA_VARIABLE.sub(".*", GRAFANA_DURATION.sub("5m", expr))


def test_prometheusrule_spec_is_the_rule_file() -> None:
    rule = load_yaml(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] and rule["metadata"]["namespace"] == "pve-operator"
    assert rule["spec"] == load_yaml(RULES_FILE), "copy alerts.rules.yaml's groups into prometheusrule.yaml's spec"


def test_every_alert_has_a_severity_summary_and_description() -> None:
    names = [rule["alert"] for rule in alerting_rules()]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule.get("for"), f"{rule['alert']} fires on one evaluation: give it a `for`"


def test_dashboard_takes_its_datasource_from_a_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in all_panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(board["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    for name, variable in variables.items():
        if name != "datasource":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
    assert "__inputs" not in board, "no import-time datasource: the ${datasource} variable chooses it"


def test_dashboard_covers_what_operators_watch() -> None:
    """Node utilisation, CTs by state, balancing actions and refusals, PVE API latency and errors, reconcile errors."""
    used = {
        selector.metric
        for _, expr in dashboard_expressions()
        for selector in parse_promql(without_grafana_variables(expr)).selectors
    }
    assert {
        "pve_operator_node_utilization_ratio",
        "pve_operator_managed_containers",
        "pve_operator_actions_total",
        "pve_operator_refusals_total",
        "pve_operator_pve_request_duration_seconds_bucket",
        "pve_operator_pve_request_duration_seconds_count",
        "pve_operator_reconcile_errors_total",
        "pve_operator_reconciliations_total",
    } <= used


def test_thresholds_written_in_are_the_api_defaults() -> None:
    """The operator does not export a pool's thresholds, so the alert and the dashboard use the API defaults:
    they must follow the model when its defaults change."""
    defaults = Thresholds()
    offload = defaults.offload_above_percent / 100
    rule = next(r for r in alerting_rules() if r["alert"] == "PveOperatorNodeAboveOffloadThresholdNoAction")
    assert f'pve_operator_node_utilization_ratio{{metric="{defaults.metric.value}"}}) > {offload:g}' in rule["expr"]
    assert f"{defaults.offload_above_percent}% of its" in rule["annotations"]["description"]
    lines = sorted({defaults.migrate_above_percent / 100, defaults.creation_ceiling_percent / 100, offload})
    utilisation_panels = [
        panel
        for panel in all_panels(dashboard()["panels"])
        if any("pve_operator_node_utilization_ratio" in t["expr"] for t in panel.get("targets", []))
    ]
    assert utilisation_panels
    for panel in utilisation_panels:
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if panel["fieldConfig"]["defaults"].get("unit") == "percentunit":
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert [s["value"] for s in steps[1:]] == lines, panel["title"]
        if "> " in exprs:
            assert f"> {offload:g}" in exprs and f'metric="{defaults.metric.value}"' in exprs, panel["title"]


def test_promtool_check_rules(promtool: Path) -> None:
    result = run_promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", RULES_FILE)
    assert_ok(result)
    assert f"SUCCESS: {len(alerting_rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts(promtool: Path) -> None:
    assert_ok(run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent))


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    tests = load_yaml(RULE_TESTS)
    assert [(RULE_TESTS.parent / f).resolve() for f in tests["rule_files"]] == [RULES_FILE.resolve()]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "alerts without a unit test where they fire"
    assert names - silent == set(), "alerts without a unit test where they do not fire"
    assert (firing | silent) - names == set(), "unit tests of alerts that do not exist"


def test_every_dashboard_expression_parses(promtool: Path, tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced) as the expression of a recording rule."""
    expressions = dashboard_expressions() + [
        (f"variable {name}", selector) for name, selector, _ in dashboard_variable_selectors()
    ]
    rules = [
        {"record": f"dashboard:query_{index}", "expr": without_grafana_variables(expr)}
        for index, (_, expr) in enumerate(expressions)
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    result = run_promtool(promtool, "check", "rules", path)
    assert_ok(result)
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_expression_fails_the_parse_check(promtool: Path, tmp_path: Path) -> None:
    """Control for the test above: promtool does reject a malformed query."""
    path = tmp_path / "broken.rules.yaml"
    broken = {"record": "dashboard:broken", "expr": "sum by (node (pve_operator_node_utilization_ratio)"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [broken]}]}))
    assert run_promtool(promtool, "check", "rules", path).returncode != 0


# ---------------------------------------------------------------------------------------------------------
# Selectors and labels of a PromQL expression (for the comparison with a real scrape). promtool checks that
# the expressions parse; this reads only what matters here: metric names, matchers and grouping labels.

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<number>[0-9.][0-9a-zA-Z.+]*)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){}\[\],@])
    )""",
    re.VERBOSE,
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
    | {"limitk", "limit_ratio"}
)
_KEYWORDS = (
    frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"})
    | _GROUPING
    | _AGGREGATIONS
)


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)


@dataclass
class Parsed:
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    expr = expr.rstrip()
    while position < len(expr):
        matched = _TOKEN.match(expr, position)
        assert matched and matched.end() > position, f"cannot read {expr[position:]!r} in {expr!r}"
        kind = next(k for k, v in matched.groupdict().items() if v is not None)
        tokens.append((kind, matched.group(kind)))
        position = matched.end()
    return tokens


def parse_promql(expr: str) -> Parsed:
    tokens = _tokens(expr)
    parsed = Parsed()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "ident" and text in _GROUPING and following == "(":
            i += 2
            while tokens[i][1] != ")":
                if tokens[i][0] == "ident":
                    parsed.grouping.add(tokens[i][1])
                i += 1
        elif kind == "ident" and following == "(":
            pass  # a function or an aggregation
        elif kind == "ident" and text not in _KEYWORDS:
            matchers = []
            if following == "{":
                i += 2
                while tokens[i][1] != "}":
                    if tokens[i][1] == ",":
                        i += 1
                        continue
                    label, op, value = tokens[i][1], tokens[i + 1][1], tokens[i + 2][1]
                    matchers.append((label, op, value[1:-1]))
                    i += 3
            parsed.selectors.append(Selector(text, tuple(matchers)))
        i += 1
    return parsed


def test_promql_reader_finds_selectors_matchers_and_grouping_labels() -> None:
    parsed = parse_promql(
        'sum by (kind, reason) (increase(a_total{kind="X", reason=~"A|B"}[10m])) > 0 '
        "unless on () sum(rate(b_bucket[5m])) / ignoring (le) group_left (pool) c offset 5m"
    )
    assert parsed.selectors == [
        Selector("a_total", (("kind", "=", "X"), ("reason", "=~", "A|B"))),
        Selector("b_bucket", ()),
        Selector("c", ()),
    ]
    assert parsed.grouping == {"kind", "reason", "le", "pool"}


# ---------------------------------------------------------------------------------------------------------
# Against a real scrape


def every_expression() -> list[tuple[str, str]]:
    rules = [(f"alert {rule['alert']}", rule["expr"]) for rule in alerting_rules()]
    variables = [(f"variable {name}", selector) for name, selector, _ in dashboard_variable_selectors()]
    return rules + dashboard_expressions() + variables


def label_vocabularies() -> dict[tuple[str, str], frozenset[str]]:
    """(metric, label) -> every value the operator can write, from its own enums and sources."""
    pve_error_classes = {
        name
        for name, value in vars(pve_errors).items()
        if isinstance(value, type) and issubclass(value, pve_errors.PveError)
    }
    actions = frozenset(k.value for k in ActionKind)
    # Condition reasons are string literals in the handlers (and ConfigurationError reasons in runtime.py).
    literals = frozenset(
        m.group(1)
        for path in OPERATOR_SOURCES.rglob("*.py")
        for m in re.finditer(r'"([A-Z][A-Za-z]+)"', path.read_text())
    )
    kinds = frozenset({"ProxmoxServerPool", "ContainerPolicy"})
    service = load_yaml(METRICS_SERVICE)["metadata"]["name"]
    return {
        ("pve_operator_reconciliations_total", "kind"): kinds,
        ("pve_operator_reconciliations_total", "result"): frozenset({"ok", "error"}),
        ("pve_operator_reconcile_errors_total", "kind"): kinds,
        ("pve_operator_reconcile_errors_total", "reason"): literals,
        ("pve_operator_actions_total", "action"): actions,
        ("pve_operator_actions_total", "result"): frozenset(r.value for r in ActionResult),
        ("pve_operator_refusals_total", "action"): frozenset({"Migrate", "Offload", "Restore"}),
        ("pve_operator_refusals_total", "reason"): frozenset(r.value for r in RefusalKind),
        ("pve_operator_managed_containers", "state"): frozenset(s.value for s in ContainerState),
        ("pve_operator_node_utilization_ratio", "metric"): frozenset({"cpu", "memory", "disk"}),
        ("pve_operator_pve_request_duration_seconds_count", "outcome"): frozenset({"ok"} | pve_error_classes),
        ("pve_operator_pve_request_duration_seconds_bucket", "outcome"): frozenset({"ok"} | pve_error_classes),
        ("up", "service"): frozenset({service}),
    }


def literal_values(op: str, value: str) -> list[str]:
    """The values a matcher names: itself for = and !=, the alternatives of a plain regex; none for patterns."""
    if "$" in value or value in ("", ".*", ".+"):
        return []
    if op in ("=", "!="):
        return [value]
    alternatives = value.split("|")
    return alternatives if all(re.fullmatch(r"[A-Za-z0-9_-]+", a) for a in alternatives) else []


def test_label_value_check_rejects_what_the_operator_never_writes() -> None:
    """Control for the check below: a misspelt action result or state is caught."""
    vocabularies = label_vocabularies()
    assert "Failed" in vocabularies[("pve_operator_actions_total", "result")]
    assert "Failure" not in vocabularies[("pve_operator_actions_total", "result")]
    assert "Deleted" not in vocabularies[("pve_operator_managed_containers", "state")]
    assert {"Unreachable", "AuthenticationFailed"} <= vocabularies[("pve_operator_reconcile_errors_total", "reason")]
    assert "PveUnreachable" in vocabularies[("pve_operator_pve_request_duration_seconds_count", "outcome")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, set[frozenset[str]]]:
    """Sample name -> the label-name sets of its series, from the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    series: dict[str, set[frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).add(frozenset(sample.labels))
    return series


def try_scrape(port: int) -> dict[str, set[frozenset[str]]]:
    try:
        return scrape(port)
    except OSError:
        return {}


@pytest.mark.kube
@pytest.mark.slow
def test_dashboard_and_rules_use_only_what_the_operator_exports(
    kube: KubeCluster, kube_namespace: str, installed_crds: Any, pve_sim_server: Any, pve_operator_process: Any
) -> None:
    # A pool and a policy that work, with both nodes above the migration threshold so the planner refuses
    # (NoTarget), and a pool whose Secret is missing, so a reconcile error is counted: every labelled series
    # the dashboard and the rules use then exists.
    sim = pve_sim_server(time_scale=0.05)
    thresholds = {
        "migrateAbovePercent": 75,
        "offloadAbovePercent": 95,
        "restoreBelowPercent": 60,
        "sustainedSamples": 1,
    }
    connect_pool(
        kube, kube_namespace, sim, thresholds=thresholds, balancing={"intervalSeconds": 5, "mode": "Automatic"}
    )
    apply_objects(kube, kube_namespace, pool_manifest("broken", endpoint=sim.url, secret="no-such-secret"))
    apply_objects(kube, kube_namespace, policy_manifest("web", replicas=2, memory_mib=1024))
    port = free_port()
    operator = pve_operator_process(kube_namespace, PVE_OPERATOR_METRICS_PORT=str(port))

    def running(count: int) -> bool:
        ready = kube.kubectl_json("get", "containerpolicy", "web", "-n", kube_namespace).get("status", {})
        return bool(ready.get("readyReplicas") == count)

    wait_for(lambda: running(2), timeout_s=180, what="the policy's 2 CTs running")
    sim.cluster.set_node_load("srv-px1", "memory", 0.85)
    sim.cluster.set_node_load("srv-px2", "memory", 0.85)

    wanted = {
        "pve_operator_reconciliations_total",
        "pve_operator_reconcile_errors_total",
        "pve_operator_actions_total",
        "pve_operator_refusals_total",
        "pve_operator_node_utilization_ratio",
        "pve_operator_managed_containers",
        "pve_operator_pve_request_duration_seconds_bucket",
    }
    wait_for(
        lambda: wanted <= set(try_scrape(port)),
        timeout_s=180,
        what=f"the operator's /metrics to have series of {sorted(wanted)}",
    )
    exported = scrape(port)
    assert operator.alive, operator.logs()[-4000:]

    vocabularies = label_vocabularies()
    problems = []
    for where, expr in every_expression():
        parsed = parse_promql(without_grafana_variables(expr))
        assert parsed.selectors, f"{where}: no metric found in {expr!r}"
        available: set[str] = set()
        for selector in parsed.selectors:
            if selector.metric in PROMETHEUS_TARGET_SERIES:
                labels = set(PROMETHEUS_TARGET_SERIES[selector.metric])
            elif selector.metric in exported:
                labels = set().union(*exported[selector.metric])
            else:
                problems.append(f"{where}: {selector.metric} is not exported by the operator")
                continue
            available |= labels
            for label, op, value in selector.matchers:
                if label not in labels:
                    problems.append(f"{where}: {selector.metric} has no label {label!r} (it has {sorted(labels)})")
                allowed = vocabularies.get((selector.metric, label))
                for literal in literal_values(op, value) if allowed is not None else []:
                    if allowed is not None and literal not in allowed:
                        problems.append(f"{where}: the operator never writes {selector.metric}{{{label}={literal!r}}}")
        for label in parsed.grouping - available:
            problems.append(f"{where}: groups by {label!r}, a label of none of its metrics {sorted(available)}")
    for name, query, label in dashboard_variable_selectors():
        metric = parse_promql(query).selectors[0].metric
        if label not in set().union(*exported.get(metric, [set()])):
            problems.append(f"variable {name}: {metric} has no label {label!r}")
    assert problems == [], "\n".join(problems)
