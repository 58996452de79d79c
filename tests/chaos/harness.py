"""The chaos lab, the invariants, and the scenario runner shared by tests/chaos.

A scenario: the lab (pve_sim with the two pool nodes plus a witness node outside the pool, the pool,
a policy with a few CTs, all ready) -> inject one fault -> hold it a while (or until it has done its
work) -> lift it -> poll until every invariant holds and the conditions say Ready=True, and record the
time from the lift to that moment ("time to recover"). The invariants are read from pve_sim's own
state through the real API as root@pam, never from the operator's status:

* lost:     CTs of the policy (VMID start+i, host name ct-web-ii, both ownership tags) missing for
            an index below the desired count;
* dup:      CTs in the policy's VMID range (the foreign CT aside) beyond one per expected
            (VMID, host name), and the most CTs seen sharing a host name at any sample after the lift;
* stopped:  CTs of ours not running and not tagged offloaded;
* foreign:  the foreign CT 3150 (legacy-db) differs from before the fault, in status or config;
* secret:   a token secret (every one the lab used) appears in the operator's log, the namespace's
            events, or the pool's or policy's status or annotations;
* truthful: pool Ready=True (Connected) and not Degraded; policy Ready=True with
            replicas == readyReplicas == the desired count, and not Degraded.

No timed assertions: waits are bounded (a scenario that does not recover within the bound fails),
but how long recovery took is only recorded and reported.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pve_operator.planning.ownership import MANAGED_TAG, OFFLOADED_TAG, normalize_tags, policy_tag
from tests.chaos.proxy import ChaosProxy
from tests.fixtures.kube import KubeCluster
from tests.fixtures.operator import OperatorProcess, apply_objects, connect_pool, policy_manifest, pool_manifest

REPO = Path(__file__).resolve().parents[2]
LAB_SCENARIO = REPO / "examples" / "scenarios" / "two-nodes.yaml"

SIM_TIME_SCALE = 0.05
"""Real seconds per simulated second (as in tests/e2e)."""
CREATE_SECONDS = 40
"""Simulated seconds of a vzcreate: 2 s real, so creations are in flight when faults strike."""
POOL, POLICY = "lab", "web"
POOL_NODES = ("srv-px1", "srv-px2")
WITNESS = "srv-witness"
VMID_START, VMID_END = 3100, 3199
FOREIGN_VMID = 3150  # legacy-db in the lab scenario: inside the range, never ours
TOKEN_USER, TOKEN_NAME = "ctoperator@pve", "operator"
TOKEN_ID = f"{TOKEN_USER}!{TOKEN_NAME}"

SETUP_TIMEOUT_S = 120.0
RECOVERY_TIMEOUT_S = 180.0
"""Bound on waiting for recovery after a lift (a deadline, not a measurement)."""
SETTLE_S = 5.0
"""After recovery, wait this long (2+ reconcile cycles of the test operator) and check again."""
POLL_S = 0.5

RECORDS_KEY = pytest.StashKey[list["RecoveryRecord"]]()


def expected_name(index: int) -> str:
    return f"ct-{POLICY}-{index:02d}"


def chaos_scenario(*, create_seconds: int = CREATE_SECONDS) -> Any:
    """The lab's scenario with slower creations and a third node outside the pool (quorum witness)."""
    from pve_sim.scenario import parse_scenario

    data = yaml.safe_load(LAB_SCENARIO.read_text())
    data["timing"]["createSeconds"] = create_seconds
    data["nodes"].append({**data["nodes"][1], "name": WITNESS})
    return parse_scenario(data, "<chaos lab>")


# -- records ---------------------------------------------------------------------------------------


@dataclass
class RecoveryRecord:
    """What one scenario found; printed as a row of the recovery table."""

    fault: str
    recovered_s: float | None = None
    lost: int | None = None
    dup: int | None = None
    stopped: int | None = None
    foreign_changed: bool | None = None
    secret_seen: list[str] = field(default_factory=list)
    noticed: str = ""
    outcome: str = "running"
    detail: str = ""
    ready_while_broken: int = 0
    """Samples after the lift in which both objects said Ready=True but pve_sim disagreed (informational:
    status is written once per cycle, so a sample can catch it a cycle behind)."""
    events: dict[str, int] = field(default_factory=dict)
    """The namespace's events by reason at the end (what the operator told), for the JSON report."""
    operator_log: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def render_table(records: list[RecoveryRecord]) -> str:
    header = ("fault", "recovered in", "lost", "dup", "stopped", "foreign changed", "secret seen", "noticed", "result")

    def cell(value: object) -> str:
        return "?" if value is None else str(value)

    rows = [
        (
            r.fault,
            f"{r.recovered_s:.1f} s" if r.recovered_s is not None else "not recovered",
            cell(r.lost),
            cell(r.dup),
            cell(r.stopped),
            cell(None if r.foreign_changed is None else ("yes" if r.foreign_changed else "no")),
            ", ".join(r.secret_seen) or "no",
            r.noticed or "-",
            r.outcome,
        )
        for r in records
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


# -- observation of pve_sim (as root) --------------------------------------------------------------


@dataclass
class Observation:
    complete: bool
    """Every node was online and listed (otherwise the counts below are partial)."""
    ours: dict[int, dict[str, Any]]
    in_range: list[dict[str, Any]]
    foreign: tuple[str, dict[str, Any]] | None


@dataclass
class Verdict:
    observation: Observation
    expected: set[tuple[int, str]]
    lost: int
    surplus: int
    same_name: int
    stopped: int
    foreign_changed: bool
    ready: bool
    conditions: str

    @property
    def invariants_hold(self) -> bool:
        return (
            self.observation.complete
            and self.lost == 0
            and self.surplus == 0
            and self.same_name == 0
            and self.stopped == 0
            and not self.foreign_changed
        )

    @property
    def recovered(self) -> bool:
        return self.invariants_hold and self.ready

    def describe(self) -> str:
        ours = sorted(
            (vmid, ct.get("name"), ct.get("status"), ct.get("node"), ct.get("lock"))
            for vmid, ct in self.observation.ours.items()
        )
        in_range = sorted((ct["vmid"], ct.get("name")) for ct in self.observation.in_range)
        return (
            f"complete={self.observation.complete} lost={self.lost} surplus={self.surplus} "
            f"same_name={self.same_name} stopped={self.stopped} foreign_changed={self.foreign_changed} "
            f"ready={self.ready}\n  conditions: {self.conditions}\n  ours: {ours}\n  in range: {in_range}\n"
            f"  expected: {sorted(self.expected)}"
        )


# -- the lab ---------------------------------------------------------------------------------------


@dataclass
class ChaosLab:
    kube: KubeCluster
    namespace: str
    sim: Any
    operator: OperatorProcess
    proxy: ChaosProxy | None = None
    desired: int = 0
    secrets: list[str] = field(default_factory=list)
    extra_servers: list[Any] = field(default_factory=list)
    stash: dict[str, Any] = field(default_factory=dict)
    """Room for a fault to keep what its lift needs (a revoked token, ...)."""
    _root: Any = None
    _root_for: Any = None

    # -- Kubernetes side ---------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = self.kube.kubectl_json("get", kind, name, "-n", self.namespace)
        assert isinstance(found, dict)
        return found

    def objects(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pool and the policy, read in one kubectl call."""
        listed = self.kube.kubectl_json("get", "proxmoxserverpools,containerpolicies", "-n", self.namespace)
        by_kind = {(item["kind"], item["metadata"]["name"]): item for item in listed["items"]}
        empty: dict[str, Any] = {"metadata": {}}
        return by_kind.get(("ProxmoxServerPool", POOL), empty), by_kind.get(("ContainerPolicy", POLICY), empty)

    def events(self) -> list[dict[str, Any]]:
        return list(self.kube.kubectl_json("get", "events", "-n", self.namespace).get("items", []))

    def apply_policy(self, replicas: int) -> None:
        manifest = policy_manifest(POLICY, replicas=replicas, vmid_start=VMID_START, vmid_end=VMID_END)
        apply_objects(self.kube, self.namespace, manifest)
        self.desired = replicas

    def scale(self, replicas: int) -> None:
        self.kube.kubectl("scale", "ctp", POLICY, f"--replicas={replicas}", "-n", self.namespace)
        self.desired = replicas

    def set_ca(self, ca_pem: str) -> None:
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pve-ca"},
            "data": {"ca.crt": ca_pem},
        }
        apply_objects(self.kube, self.namespace, configmap)

    def set_token_secret(self, secret: str) -> None:
        self.secrets.append(secret)
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "pve-credentials"},
            "type": "Opaque",
            "stringData": {"tokenId": TOKEN_ID, "tokenSecret": secret},
        }
        apply_objects(self.kube, self.namespace, manifest)

    def conditions(self) -> dict[str, dict[str, dict[str, Any]]]:
        pool, policy = self.objects()
        return {
            "pool": {c["type"]: c for c in (pool.get("status") or {}).get("conditions") or []},
            "policy": {c["type"]: c for c in (policy.get("status") or {}).get("conditions") or []},
        }

    def truthful_ready(self) -> tuple[bool, str]:
        pool, policy = self.objects()
        pool_conditions = {c["type"]: c for c in (pool.get("status") or {}).get("conditions") or []}
        policy_status = policy.get("status") or {}
        policy_conditions = {c["type"]: c for c in policy_status.get("conditions") or []}

        def says(conditions: dict[str, dict[str, Any]], kind: str) -> str:
            return " ".join(
                f"{kind}.{t}={c['status']}({c.get('reason')}"
                + (f": {str(c.get('message'))[:300]!r})" if t == "Ready" and c["status"] != "True" else ")")
                for t, c in sorted(conditions.items())
            )

        text = (
            f"{says(pool_conditions, 'pool')} {says(policy_conditions, 'policy')} "
            f"replicas={policy_status.get('replicas')} ready={policy_status.get('readyReplicas')} "
            f"desired={self.desired}"
        )
        pool_ok = (
            pool_conditions.get("Ready", {}).get("status") == "True"
            and pool_conditions.get("Ready", {}).get("reason") == "Connected"
            and pool_conditions.get("Degraded", {}).get("status") != "True"
        )
        policy_ok = (
            policy_conditions.get("Ready", {}).get("status") == "True"
            and policy_conditions.get("Degraded", {}).get("status") != "True"
            and policy_status.get("replicas") == self.desired
            and policy_status.get("readyReplicas") == self.desired
        )
        return pool_ok and policy_ok, text

    # -- Proxmox side (as root, through the real API) ----------------------------------------------

    def root(self) -> Any:
        if self._root is None or self._root_for is not self.sim:
            self._root = self.sim.proxmox(timeout=10)
            self._root_for = self.sim
        return self._root

    def policy_uid(self) -> str:
        uid = self.stash.get("policy_uid")
        if uid is None:
            uid = self.stash["policy_uid"] = self.get("containerpolicy", POLICY)["metadata"]["uid"]
        return str(uid)

    def observe(self) -> Observation:
        api = self.root()
        marks = {MANAGED_TAG, policy_tag(self.policy_uid())}
        complete = True
        cts: list[dict[str, Any]] = []
        for node in api.nodes.get():
            if node.get("status") != "online":
                complete = False
                continue
            cts += [{**ct, "node": node["node"]} for ct in api.nodes(node["node"]).lxc.get()]
        ours = {int(ct["vmid"]): ct for ct in cts if marks <= normalize_tags(ct.get("tags"))}
        in_range = [ct for ct in cts if VMID_START <= int(ct["vmid"]) <= VMID_END and int(ct["vmid"]) != FOREIGN_VMID]
        foreign = next((ct for ct in cts if int(ct["vmid"]) == FOREIGN_VMID), None)
        foreign_state = None
        if foreign is not None:
            config = dict(api.nodes(foreign["node"]).lxc(FOREIGN_VMID).config.get())
            foreign_state = (str(foreign["status"]), {**config, "node": foreign["node"]})
        return Observation(complete, ours, in_range, foreign_state)

    def verdict(self, foreign_before: tuple[str, dict[str, Any]] | None) -> Verdict:
        observed = self.observe()
        expected = {(VMID_START + i, expected_name(i)) for i in range(self.desired)}
        ours = {(vmid, str(ct.get("name"))) for vmid, ct in observed.ours.items()}
        in_range_pairs = [(int(ct["vmid"]), str(ct.get("name"))) for ct in observed.in_range]
        names = Counter(name for _, name in in_range_pairs)
        stopped = sum(
            1
            for ct in observed.ours.values()
            if ct.get("status") != "running" and OFFLOADED_TAG not in normalize_tags(ct.get("tags"))
        )
        ready, conditions = self.truthful_ready()
        return Verdict(
            observation=observed,
            expected=expected,
            lost=len(expected - ours),
            surplus=sum(1 for pair in in_range_pairs if pair not in expected),
            same_name=sum(count - 1 for count in names.values()),
            stopped=stopped,
            foreign_changed=observed.complete and observed.foreign != foreign_before,
            ready=ready,
            conditions=conditions,
        )

    def secret_places(self) -> list[str]:
        pool, policy = self.objects()
        places = {
            "operator log": self.operator.logs(),
            "events": json.dumps(self.events()),
            "pool status": json.dumps(pool.get("status")),
            "pool annotations": json.dumps(pool["metadata"].get("annotations")),
            "policy status": json.dumps(policy.get("status")),
            "policy annotations": json.dumps(policy["metadata"].get("annotations")),
        }
        assert places["operator log"], "the operator log is empty: the search would prove nothing"
        return sorted(where for where, text in places.items() if any(s and s in text for s in self.secrets))

    # -- pve_sim restarts --------------------------------------------------------------------------

    def stop_sim(self) -> None:
        self.stash["sim_port"] = self.sim.port  # a stopped server no longer knows its ephemeral port
        self.sim.stop()

    def restart_sim(self) -> Any:
        """pve_sim's API comes back on the same port with the same cluster state (pmxcfs survives a
        pveproxy restart) but a new certificate: the CA ConfigMap is updated, as after a CA rotation."""
        from tests.fixtures.sim import SimTestServer

        old = self.sim
        port = self.stash.pop("sim_port")
        new = SimTestServer(old.scenario, port=port, time_scale=SIM_TIME_SCALE, auth_failure_delay_seconds=0.0)
        new.cluster = old.cluster
        self.extra_servers.append(new)
        deadline = time.monotonic() + 30
        while True:  # the port may linger briefly after the stop
            try:
                new.start()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert new.port == port
        self.sim = new
        self.set_ca(Path(new.ca_path).read_text())
        return new


def start_chaos_lab(
    kube: KubeCluster,
    namespace: str,
    pve_sim_server: Callable[..., Any],
    pve_operator_process: Callable[..., OperatorProcess],
    *,
    replicas: int = 4,
    via_proxy: bool = False,
    operator_env: dict[str, str] | None = None,
) -> ChaosLab:
    sim = pve_sim_server(chaos_scenario(), time_scale=SIM_TIME_SCALE)
    connect_pool(kube, namespace, sim)
    proxy = None
    if via_proxy:
        proxy = ChaosProxy(sim.host, sim.port).start()
        apply_objects(kube, namespace, pool_manifest(POOL, endpoint=proxy.url))
    operator = pve_operator_process(namespace, **(operator_env or {}))
    lab = ChaosLab(kube, namespace, sim, operator, proxy=proxy, secrets=[sim.token_secret(TOKEN_USER, TOKEN_NAME)])
    wait_until(
        lambda: lab.conditions()["pool"].get("Ready", {}).get("reason") == "Connected",
        SETUP_TIMEOUT_S,
        "pool Ready=True (Connected)",
    )
    lab.apply_policy(replicas)
    wait_until(lambda: lab.truthful_ready()[0], SETUP_TIMEOUT_S, f"policy ready with {replicas} CTs")
    return lab


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(POLL_S)


# -- one scenario ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One row of the fault matrix."""

    id: str
    label: str
    inject: Callable[[ChaosLab], None]
    lift: Callable[[ChaosLab], None]
    hold_s: float
    """How long the fault stays at most."""
    done: Callable[[ChaosLab], bool] | None = None
    """The fault has done its work (e.g. its N answers were all given): lift it early."""
    min_hold_s: float = 0.0
    replicas: int = 4
    via_proxy: bool = False
    operator_env: dict[str, str] = field(default_factory=dict)
    fast: bool = False
    """In the fast subset that `make test` runs; otherwise only with `make chaos`."""
    xfail: str | None = None
    """An operator defect that makes this scenario fail (strict xfail)."""


def _not_ready(conditions: dict[str, dict[str, dict[str, Any]]]) -> set[str]:
    seen = set()
    for kind, by_type in conditions.items():
        ready = by_type.get("Ready")
        if ready is not None and ready.get("status") != "True":
            seen.add(f"{kind}:{ready.get('reason')}")
    return seen


def _safely(predicate: Callable[[ChaosLab], bool], lab: ChaosLab) -> bool:
    try:
        return predicate(lab)
    except AssertionError:  # a kubectl hiccup: ask again next time
        return False


def run_fault(lab: ChaosLab, fault: Fault, record: RecoveryRecord) -> None:
    """Inject, hold, lift, wait for recovery; fill ``record``; fail the test if an invariant is broken."""
    before = lab.observe()
    assert before.complete and before.foreign is not None, "the lab is not as expected before the fault"
    assert sorted(before.ours) == [VMID_START + i for i in range(lab.desired)], sorted(before.ours)
    foreign_before = before.foreign

    # -- the fault
    fault.inject(lab)
    started = time.monotonic()
    noticed: set[str] = set()
    while True:
        elapsed = time.monotonic() - started
        done_early = elapsed >= fault.min_hold_s and fault.done is not None and _safely(fault.done, lab)
        if elapsed >= fault.hold_s or done_early:
            break
        with contextlib.suppress(AssertionError):  # a kubectl hiccup: the Kubernetes side is not faulted
            noticed |= _not_ready(lab.conditions())
        time.sleep(1.0)
    record.noticed = " ".join(sorted(noticed))
    fault.lift(lab)
    lifted = time.monotonic()

    # -- recovery
    same_name_max = 0
    foreign_ever_changed = False
    verdict: Verdict | None = None
    last_error = ""
    while time.monotonic() - lifted < RECOVERY_TIMEOUT_S:
        try:
            verdict = lab.verdict(foreign_before)
        except Exception as error:  # PVE may still be coming back: keep polling within the bound
            last_error = f"{type(error).__name__}: {error}"
            time.sleep(POLL_S)
            continue
        same_name_max = max(same_name_max, verdict.same_name)
        foreign_ever_changed |= verdict.foreign_changed
        record.ready_while_broken += int(verdict.ready and not verdict.invariants_hold)
        if verdict.recovered:
            record.recovered_s = round(time.monotonic() - lifted, 1)
            break
        time.sleep(POLL_S)

    if verdict is not None and verdict.recovered:
        time.sleep(SETTLE_S)
        verdict = lab.verdict(foreign_before)
        same_name_max = max(same_name_max, verdict.same_name)
        foreign_ever_changed |= verdict.foreign_changed
    record.secret_seen = lab.secret_places()
    record.operator_log = str(lab.operator.log_path)
    record.events = dict(
        sorted(Counter(str(e.get("reason")) for e in lab.events() for _ in range(int(e.get("count") or 1))).items())
    )
    if verdict is None:
        record.outcome = "FAILED"
        record.detail = f"pve_sim never answered after the lift: {last_error}"
        pytest.fail(record.detail)
    record.lost = verdict.lost
    record.dup = max(verdict.surplus, same_name_max)
    record.stopped = verdict.stopped
    record.foreign_changed = foreign_ever_changed
    record.detail = verdict.describe()

    problems = []
    if record.recovered_s is None:
        problems.append(f"not recovered within {RECOVERY_TIMEOUT_S:.0f}s of the lift")
    elif not verdict.recovered:
        problems.append(f"recovered after {record.recovered_s} s but not {SETTLE_S:.0f}s later")
    if record.lost:
        problems.append(f"{record.lost} CT(s) of the policy lost")
    if record.dup:
        problems.append(f"{record.dup} duplicate/surplus CT(s) in the range")
    if record.stopped:
        problems.append(f"{record.stopped} CT(s) of ours stopped without the offloaded tag")
    if foreign_ever_changed:
        problems.append(f"the foreign CT {FOREIGN_VMID} changed")
    if record.secret_seen:
        problems.append(f"a token secret appears in: {', '.join(record.secret_seen)}")
    record.outcome = "FAILED" if problems else "ok"
    assert not problems, "; ".join(problems) + "\n" + verdict.describe()
