"""Command line: ``python -m pve_sim serve|validate`` (console script ``pve-sim``).

``serve`` runs the simulator until SIGINT/SIGTERM and prints what a person needs to use it: the
URL, the CA file to verify TLS with, the scenario's users, passwords and API tokens (they are the
scenario's own throw-away credentials, and printing them is the point of this command — nothing
else ever logs them), the admin token for ``/_sim``, and a ready-to-paste ``curl``. ``--state-file``
writes the same details as JSON for scripts (the demo), atomically and readable by the owner only,
and removes it again at exit so a stale file never points at a dead server.

``validate`` checks a scenario file and exits non-zero with the ``ScenarioError`` message (file,
field, rule, line) when it is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from . import __version__
from .scenario import Scenario, ScenarioError, load_scenario
from .server import SimServer

DEFAULT_AUTH_FAILURE_DELAY_SECONDS = 3.0
"""PVE delays every 401 by 3 s; the CLI does too, so clients see realistic login failures."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pve-sim",
        description="Proxmox VE API simulator with a load model.",
    )
    parser.add_argument("--version", action="version", version=f"pve-sim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the PVE API for a scenario over HTTPS")
    serve.add_argument("--scenario", required=True, type=Path, help="scenario YAML file")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8006, help="port (default: 8006, as PVE; 0 = any free)")
    serve.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="real seconds per simulated second (1 = real time, 0.1 = 10x faster, 0 = manual clock "
        "with instant tasks); default: the scenario's",
    )
    serve.add_argument(
        "--cert-dir",
        type=Path,
        default=None,
        help="directory for the generated CA and server certificate (default: a temporary one)",
    )
    serve.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="write the connection details (URL, CA path, credentials, admin token) there as JSON",
    )
    serve.add_argument(
        "--auth-failure-delay",
        type=float,
        default=DEFAULT_AUTH_FAILURE_DELAY_SECONDS,
        metavar="SECONDS",
        help="delay of every 401 answer, as PVE (default: 3)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level on stderr; 'info' includes one access-log line per request (default: info)",
    )

    validate = commands.add_parser("validate", help="check a scenario file and report the first problem")
    validate.add_argument("scenario", type=Path, help="scenario YAML file")
    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.time_scale is not None and args.time_scale < 0:
            parser.error("--time-scale must be >= 0")
        if args.auth_failure_delay < 0:
            parser.error("--auth-failure-delay must be >= 0")
        if not 0 <= args.port <= 65535:
            parser.error("--port must be between 0 and 65535")
    return args


def connection_details(server: SimServer) -> dict[str, object]:
    """What a client needs to talk to ``server``: the payload of ``--state-file``."""
    users: list[dict[str, object]] = []
    for user in server.scenario.users:
        users.append(
            {
                "userid": user.userid,
                "password": user.password,
                "tokens": [
                    {"id": token.id, "fullId": f"{user.userid}!{token.id}", "secret": token.secret}
                    for token in user.tokens
                ],
            }
        )
    return {
        "url": server.url,
        "apiUrl": server.api_url,
        "host": server.host,
        "port": server.port,
        "caPath": str(server.ca_path),
        "adminToken": server.admin_token,
        "cluster": server.cluster.name,
        "pid": os.getpid(),
        "users": users,
    }


def example_curl(server: SimServer, scenario: Scenario) -> str:
    """A ready-to-paste ``curl`` that proves the setup works: ``GET /version`` with an API token.

    Without any token in the scenario it shows a ticket login instead.
    """
    ca = shlex.quote(str(server.ca_path))
    for user in scenario.users:
        for token in user.tokens:
            header = shlex.quote(f"Authorization: PVEAPIToken={user.userid}!{token.id}={token.secret}")
            return f"curl --cacert {ca} -H {header} {server.api_url}/version"
    for user in scenario.users:
        if user.password is not None:
            return (
                f"curl --cacert {ca} --data-urlencode {shlex.quote('username=' + user.userid)} "
                f"--data-urlencode {shlex.quote('password=' + user.password)} {server.api_url}/access/ticket"
            )
    return f"curl --cacert {ca} {server.api_url}/version"


def _banner(server: SimServer) -> str:
    scenario = server.scenario
    lines = [
        f"pve_sim {__version__}: cluster '{server.cluster.name}' with {len(scenario.nodes)} nodes "
        f"and {len(scenario.containers)} CTs (PVE {scenario.cluster.pve_version})",
        f"  API:          {server.api_url}",
        f"  CA file:      {server.ca_path}",
        f"  Admin token:  {server.admin_token}   (header 'Authorization: SimAdmin <token>' on {server.url}/_sim/...)",
        f"  Time scale:   {server.cluster.clock.time_scale:g} real s per simulated s",
        "  Credentials (from the scenario):",
    ]
    for user in scenario.users:
        password = user.password if user.password is not None else "(no password: tokens only)"
        lines.append(f"    {user.userid:<24} password: {password}")
        for token in user.tokens:
            lines.append(f"      API token {user.userid}!{token.id}  secret: {token.secret}")
    lines.append("  Try:")
    lines.append(f"    {example_curl(server, scenario)}")
    return "\n".join(lines)


def _write_state_file(path: Path, details: dict[str, object]) -> None:
    """Atomically write ``details`` readable by the owner only (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(details, handle, indent=2)
            handle.write("\n")
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"pve-sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pve-sim: cannot read scenario: {exc}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)

    server = SimServer(
        scenario,
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        cert_dir=args.cert_dir,
        auth_failure_delay_seconds=args.auth_failure_delay,
    )
    try:
        server.start()
    except OSError as exc:
        print(f"pve-sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        print(_banner(server), flush=True)
        if args.state_file is not None:
            _write_state_file(args.state_file, connection_details(server))
        while not stop_requested.wait(timeout=1.0):
            pass
        print("pve_sim: stopping", flush=True)
    finally:
        server.stop()
        if args.state_file is not None:
            args.state_file.unlink(missing_ok=True)
    return 0


def _validate(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"pve-sim: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pve-sim: cannot read scenario: {exc}", file=sys.stderr)
        return 1
    tokens = sum(len(user.tokens) for user in scenario.users)
    print(
        f"{args.scenario}: OK - cluster '{scenario.cluster.name}', {len(scenario.nodes)} nodes, "
        f"{len(scenario.storages)} storages, {len(scenario.containers)} CTs, "
        f"{len(scenario.users)} users, {tokens} API tokens, {len(scenario.events)} events"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pve_sim`` and the ``pve-sim`` console script."""
    args = _parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _validate(args)


if __name__ == "__main__":
    sys.exit(main())
