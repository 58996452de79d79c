#!/usr/bin/env python3
"""Walk one LXC container through its life with proxmoxer, and watch node memory follow it.

Create -> start -> migrate (restart mode) -> stop -> delete, waiting on every task by its UPID with
proxmoxer's own ``Tasks.blocking_status`` and decoding every UPID with ``Tasks.decode_upid``. After
each step it reads ``GET /nodes/{node}/status`` on both nodes, so you can see the memory a running
CT uses appear on its node, move with it to the target, and disappear when it stops.

Nothing here is simulator-specific: it is plain proxmoxer and runs the same against a real PVE
cluster. Against the simulator (``make sim`` in another terminal; it prints the CA file path)::

    .venv/bin/python examples/proxmoxer_walkthrough.py --ca /tmp/pve-sim-tls-XXXX/pve-root-ca.pem

or with the JSON that ``pve-sim serve --state-file sim.json`` writes::

    .venv/bin/python examples/proxmoxer_walkthrough.py --state-file sim.json

The defaults (nodes ``srv-px1``/``srv-px2``, storage ``local-lvm``, the Debian template, root@pam
and its password) match ``examples/scenarios/two-nodes.yaml``; they are that scenario's throw-away
simulator credentials, not secrets. The test suite runs :func:`run_walkthrough` against an
in-process simulator (``tests/sim/test_http_walkthrough.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

LAB_TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
MIB = 1024 * 1024


@dataclass
class TaskStep:
    """One asynchronous step: the UPID the API returned, what it decodes to, how the task ended."""

    name: str
    upid: str
    decoded: dict[str, Any]
    status: dict[str, Any]


@dataclass
class MemoryReading:
    """``memory.used`` in bytes of every watched node after a step (``GET /nodes/{node}/status``)."""

    label: str
    used_bytes: dict[str, int]
    ct_mem_bytes: int | None = None
    """The CT's own ``mem`` from ``status/current`` at that moment (None once it is gone)."""


@dataclass
class WalkthroughReport:
    steps: list[TaskStep] = field(default_factory=list)
    memory: list[MemoryReading] = field(default_factory=list)
    gone_message: str | None = None
    """The API's answer for the CT after deletion (PVE: its config file does not exist)."""

    def reading(self, label: str) -> MemoryReading:
        for reading in self.memory:
            if reading.label == label:
                return reading
        raise KeyError(label)


class TaskFailed(RuntimeError):
    """A task ended, but not with ``OK``, or did not end in time."""


def wait_for_task(prox: Any, upid: str, *, poll_interval: float, timeout: float) -> dict[str, Any]:
    """Block until the task ends (``Tasks.blocking_status``) and insist on ``exitstatus == "OK"``.

    ``blocking_status`` returns None on timeout and does not look at the exit status itself.
    """
    status: dict[str, Any] | None = Tasks.blocking_status(
        prox, upid, timeout=timeout, polling_interval=poll_interval
    )
    if status is None:
        raise TaskFailed(f"task {upid} did not finish within {timeout:g} s")
    if status.get("exitstatus") != "OK":
        log_lines = prox.nodes(status["node"]).tasks(upid).log.get(limit=1000)
        raise TaskFailed(
            f"task {upid} ended with {status.get('exitstatus')!r}:\n{Tasks.decode_log(log_lines)}"
        )
    return status


def node_memory_used(prox: Any, nodes: Sequence[str]) -> dict[str, int]:
    return {node: int(prox.nodes(node).status.get()["memory"]["used"]) for node in nodes}


def run_walkthrough(
    prox: Any,
    *,
    source: str = "srv-px1",
    target: str = "srv-px2",
    vmid: int = 3901,
    ostemplate: str = LAB_TEMPLATE,
    storage: str = "local-lvm",
    memory_mib: int = 1024,
    poll_interval: float = 0.5,
    timeout: float = 300.0,
    say: Callable[[str], None] = print,
) -> WalkthroughReport:
    """Create, start, migrate, stop and delete CT ``vmid``; return what was observed."""
    report = WalkthroughReport()
    nodes = [source, target]

    def ct_mem(node: str) -> int:
        return int(prox.nodes(node).lxc(vmid).status.current.get()["mem"])

    def observe(label: str, ct_node: str | None) -> None:
        reading = MemoryReading(label, node_memory_used(prox, nodes), ct_mem(ct_node) if ct_node else None)
        report.memory.append(reading)
        shown = ", ".join(f"{node} {used / MIB:,.0f} MiB" for node, used in reading.used_bytes.items())
        ct_part = f"; CT {vmid} uses {reading.ct_mem_bytes / MIB:,.0f} MiB" if reading.ct_mem_bytes else ""
        say(f"    memory used: {shown}{ct_part}")

    def step(name: str, upid: str) -> None:
        decoded = Tasks.decode_upid(upid)
        say(f"{name}: {upid}")
        say(
            f"    decoded: node={decoded['node']} type={decoded['type']} id={decoded['id']} "
            f"user={decoded['user']} starttime={decoded['starttime']}"
        )
        status = wait_for_task(prox, upid, poll_interval=poll_interval, timeout=timeout)
        say(f"    task {status['status']}, exitstatus {status['exitstatus']}")
        report.steps.append(TaskStep(name, upid, decoded, status))

    say(f"Walking CT {vmid} through its life: create on {source}, migrate to {target}, delete.")
    observe("baseline", None)

    step(
        "create",
        prox.nodes(source).lxc.post(
            vmid=vmid,
            ostemplate=ostemplate,
            hostname=f"ct-walkthrough-{vmid}",
            memory=memory_mib,
            swap=512,
            cores=1,
            rootfs=f"{storage}:8",
            net0="name=eth0,bridge=vmbr0,ip=dhcp",
            unprivileged=1,  # always explicit: PVE 9 defaults to 1, PVE 8 to 0
        ),
    )
    observe("created", source)

    step("start", prox.nodes(source).lxc(vmid).status.start.post())
    observe("started", source)

    step("migrate", prox.nodes(source).lxc(vmid).migrate.post(target=target, restart=1))
    observe("migrated", target)
    where = prox.nodes(target).lxc(vmid).status.current.get()
    say(f"    CT {vmid} is now {where['status']} on {target}")

    step("stop", prox.nodes(target).lxc(vmid).status.stop.post())
    observe("stopped", target)

    step("delete", prox.nodes(target).lxc(vmid).delete(purge=1))
    observe("deleted", None)
    try:
        prox.nodes(target).lxc(vmid).status.current.get()
    except ResourceException as exc:
        report.gone_message = str(exc.content)
        say(f"    CT {vmid} is gone: {exc.status_code} {exc.content}")
    else:
        say(f"    CT {vmid} still answers after deletion (unexpected)")
    return report


def _connect(args: argparse.Namespace) -> Any:
    host, port, ca = args.host, args.port, args.ca
    user, password = args.user, args.password
    token_name, token_value = args.token_name, args.token_value
    if args.state_file is not None:
        details = json.loads(Path(args.state_file).read_text(encoding="utf-8"))
        host, port, ca = details["host"], details["port"], details["caPath"]
        for entry in details["users"]:
            if entry["userid"] == user and token_name is None and password is None:
                password = entry["password"]
    if ca is None:
        sys.exit("--ca (the simulator's CA file, printed by `make sim`) or --state-file is required")
    common: dict[str, Any] = {"port": port, "verify_ssl": str(ca), "timeout": 30}
    if token_name is not None:
        return ProxmoxAPI(host, user=user, token_name=token_name, token_value=token_value, **common)
    return ProxmoxAPI(host, user=user, password=password or "sim-root-password", **common)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument("--ca", help="CA certificate file to verify the server with")
    parser.add_argument("--state-file", help="JSON written by `pve-sim serve --state-file`")
    parser.add_argument("--user", default="root@pam")
    parser.add_argument("--password", default=None, help="default: the lab scenario's root password")
    parser.add_argument("--token-name", default=None)
    parser.add_argument("--token-value", default=None)
    parser.add_argument("--source", default="srv-px1")
    parser.add_argument("--target", default="srv-px2")
    parser.add_argument("--vmid", type=int, default=3901)
    parser.add_argument("--ostemplate", default=LAB_TEMPLATE)
    parser.add_argument("--storage", default="local-lvm")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args(argv)

    prox = _connect(args)
    version = prox.version.get()
    print(f"Connected: Proxmox VE {version['version']} ({version.get('release', '?')})")
    try:
        run_walkthrough(
            prox,
            source=args.source,
            target=args.target,
            vmid=args.vmid,
            ostemplate=args.ostemplate,
            storage=args.storage,
            poll_interval=args.poll_interval,
        )
    except (ResourceException, TaskFailed) as exc:
        print(f"walkthrough failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
