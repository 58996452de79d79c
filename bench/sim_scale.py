#!/usr/bin/env python3
"""How the simulator holds up at benchmark scale: 50 nodes, 5,000 running CTs.

Starts ``pve-sim serve`` as a separate process (so the memory figure is the simulator's own RSS,
not the client's), on ``examples/scenarios/large.yaml``, and drives it over verified HTTPS with
keep-alive the way the operator does: proxmoxer for ``/cluster/resources`` (one call per
reconcile cycle, ~5,000 entries) and plain ``requests`` sessions for the per-CT
``status/current`` calls, sequentially and from 2 and 4 client threads. Prints a table; asserts
nothing (a benchmark reports, the reader judges). Request counts are bounded and traffic stays on
loopback.

    .venv/bin/python bench/sim_scale.py [--scenario FILE] [--resources N] [--status N]

Targets shown in the table: ``/cluster/resources`` median under 100 ms, simulator RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests
from proxmoxer import ProxmoxAPI

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = REPO_ROOT / "examples" / "scenarios" / "large.yaml"
RESOURCES_TARGET_MS = 100.0
RSS_TARGET_MB = 300.0


@dataclass
class Row:
    what: str
    requests: int
    median_ms: float | None = None
    p95_ms: float | None = None
    rps: float | None = None
    note: str = ""


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    """Seconds per call, for ``calls`` sequential calls."""
    samples = []
    for index in range(calls):
        started = time.perf_counter()
        call(index)
        samples.append(time.perf_counter() - started)
    return samples


def latency_row(what: str, samples: list[float], note: str = "") -> Row:
    return Row(
        what,
        len(samples),
        median_ms=statistics.median(samples) * 1000,
        p95_ms=percentile(samples, 0.95) * 1000,
        rps=len(samples) / sum(samples),
        note=note,
    )


def start_simulator(scenario: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any], float]:
    state_file = workdir / "sim.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "simulator"), env.get("PYTHONPATH", "")])
    log = (workdir / "sim.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pve_sim", "serve",
            "--scenario", str(scenario),
            "--port", "0",
            "--time-scale", "1",
            "--auth-failure-delay", "0",
            "--log-level", "warning",  # no access log: its I/O is not what is being measured
            "--cert-dir", str(workdir / "tls"),
            "--state-file", str(state_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        cwd=REPO_ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not state_file.exists():
        if process.poll() is not None:
            raise SystemExit(f"pve-sim exited ({process.returncode}); see {workdir / 'sim.log'}")
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("pve-sim did not start within 300 s")
        time.sleep(0.05)
    return process, json.loads(state_file.read_text()), time.perf_counter() - started


def token_auth(details: dict[str, Any]) -> tuple[str, str, str]:
    """(userid, token name, secret) of the first API token in the scenario."""
    for user in details["users"]:
        for token in user["tokens"]:
            return user["userid"], token["id"], token["secret"]
    raise SystemExit("the scenario declares no API token")


def new_session(details: dict[str, Any]) -> requests.Session:
    userid, name, secret = token_auth(details)
    session = requests.Session()
    session.trust_env = False  # loopback; and REQUESTS_CA_BUNDLE would override `verify`
    session.verify = details["caPath"]
    session.headers["Authorization"] = f"PVEAPIToken={userid}!{name}={secret}"
    return session


def concurrent_status(
    details: dict[str, Any], targets: list[tuple[str, int]], threads: int, total: int
) -> tuple[list[float], float]:
    """``total`` status/current calls spread over ``threads`` keep-alive sessions; (samples, wall s)."""
    per_thread = total // threads
    samples: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def worker(slot: int) -> None:
        session = new_session(details)
        rng = random.Random(slot)
        url = details["apiUrl"]
        session.get(f"{url}/version").raise_for_status()  # connect before the clock starts
        barrier.wait()
        try:
            for _ in range(per_thread):
                node, vmid = rng.choice(targets)
                started = time.perf_counter()
                session.get(f"{url}/nodes/{node}/lxc/{vmid}/status/current").raise_for_status()
                samples[slot].append(time.perf_counter() - started)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            session.close()

    workers = [threading.Thread(target=worker, args=(slot,)) for slot in range(threads)]
    for thread in workers:
        thread.start()
    barrier.wait()
    wall_started = time.perf_counter()
    for thread in workers:
        thread.join()
    wall = time.perf_counter() - wall_started
    if errors:
        raise errors[0]
    return [s for slot in samples for s in slot], wall


def print_table(rows: list[Row], facts: list[tuple[str, str]]) -> None:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    header = f"{'measurement':<58} {'n':>5} {'median ms':>10} {'p95 ms':>9} {'req/s':>8}  note"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.what:<58} {row.requests:>5} {cell(row.median_ms, '.1f'):>10} "
            f"{cell(row.p95_ms, '.1f'):>9} {cell(row.rps, '.0f'):>8}  {row.note}"
        )
    print()
    for name, value in facts:
        print(f"{name:<40} {value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument("--resources", type=int, default=30, help="GET /cluster/resources calls (default 30)")
    parser.add_argument("--status", type=int, default=400, help="status/current calls per phase (default 400)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pve-sim-bench-") as tmp:
        process, details, startup_s = start_simulator(args.scenario, Path(tmp))
        sim = psutil.Process(process.pid)
        try:
            rss_idle_mb = sim.memory_info().rss / 1e6
            userid, name, secret = token_auth(details)
            prox = ProxmoxAPI(
                details["host"],
                port=details["port"],
                user=userid,
                token_name=name,
                token_value=secret,
                verify_ssl=details["caPath"],
                timeout=60,
            )
            resources = prox.cluster.resources.get()
            cts = [(entry["node"], int(entry["vmid"])) for entry in resources if entry["type"] == "lxc"]
            nodes = sorted({entry["node"] for entry in resources if entry["type"] == "node"})
            session = new_session(details)
            url = details["apiUrl"]
            raw = session.get(f"{url}/cluster/resources", headers={"Accept-Encoding": "identity"})
            zipped = session.get(f"{url}/cluster/resources", stream=True)
            zipped_bytes = len(zipped.raw.read(decode_content=False))

            rows: list[Row] = []
            for _ in range(3):  # warm-up: caches, TLS session, first pvestatd snapshot
                prox.cluster.resources.get()
            samples = timed(args.resources, lambda _i: prox.cluster.resources.get())
            mark = "OK" if statistics.median(samples) * 1000 < RESOURCES_TARGET_MS else "MISSED"
            rows.append(
                latency_row(
                    "GET /cluster/resources (proxmoxer, all types)",
                    samples,
                    f"target median < {RESOURCES_TARGET_MS:.0f} ms: {mark}",
                )
            )
            samples = timed(args.resources, lambda _i: prox.cluster.resources.get(type="vm"))
            rows.append(latency_row("GET /cluster/resources?type=vm (proxmoxer)", samples))

            rng = random.Random(7)
            picks = [rng.choice(cts) for _ in range(args.status)]
            samples = timed(
                args.status,
                lambda i: prox.nodes(picks[i][0]).lxc(picks[i][1]).status.current.get(),
            )
            rows.append(latency_row("GET .../lxc/{vmid}/status/current (proxmoxer, 1 client)", samples))
            samples = timed(
                args.status,
                lambda i: session.get(f"{url}/nodes/{picks[i][0]}/lxc/{picks[i][1]}/status/current").raise_for_status(),
            )
            rows.append(latency_row("GET .../lxc/{vmid}/status/current (requests, 1 client)", samples))
            node_picks = [rng.choice(nodes) for _ in range(args.status // 4)]
            samples = timed(len(node_picks), lambda i: prox.nodes(node_picks[i]).status.get())
            rows.append(latency_row("GET /nodes/{node}/status (proxmoxer, 1 client)", samples))
            for threads in (2, 4):
                samples, wall = concurrent_status(details, cts, threads, args.status)
                row = latency_row(f"GET .../status/current (requests, {threads} client threads)", samples)
                row.rps = len(samples) / wall
                rows.append(row)
            rss_loaded_mb = sim.memory_info().rss / 1e6
            cpu = sim.cpu_times()
            session.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    rss_mark = "OK" if max(rss_idle_mb, rss_loaded_mb) < RSS_TARGET_MB else "MISSED"
    print(f"pve_sim scale benchmark: {args.scenario.name}: {len(nodes)} nodes, {len(cts)} CTs")
    print(f"(machine: {os.cpu_count()} CPUs; client and simulator share them)\n")
    print_table(
        rows,
        [
            ("simulator startup (process to serving)", f"{startup_s:.2f} s"),
            ("/cluster/resources entries", f"{len(resources)}"),
            ("/cluster/resources body", f"{len(raw.content) / 1e3:.0f} kB JSON, {zipped_bytes / 1e3:.0f} kB gzipped"),
            ("simulator RSS after start", f"{rss_idle_mb:.0f} MB"),
            ("simulator RSS after the runs", f"{rss_loaded_mb:.0f} MB  (target < {RSS_TARGET_MB:.0f} MB: {rss_mark})"),
            ("simulator CPU time (user + system)", f"{cpu.user + cpu.system:.1f} s"),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
