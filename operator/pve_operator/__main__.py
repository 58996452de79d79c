"""``python -m pve_operator``: run the operator (Kopf) against the current Kubernetes context."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import logging
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping, Sequence
from urllib.parse import urlsplit

from pve_operator.operator_namespace import ENV_VAR as OPERATOR_NAMESPACE_ENV_VAR

DESCRIPTION = "Run the pve-operator (Kopf) against the current Kubernetes context (KUBECONFIG or in-cluster)."
"""``--help``'s description: plain text, no reStructuredText markup (argparse prints it as it is)."""

EPILOG = """\
"run" is the default command: without one, the options above apply to run.

examples:
  python -m pve_operator -n pve-lab --log-format plain    run the operator for one namespace
  python -m pve_operator -A --leader-elect                 one of several replicas: only the Lease holder acts
  python -m pve_operator plan --pool lab -n pve-lab       what it would do now (changes nothing)
  python -m pve_operator plan --help                      plan's options
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pve_operator",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,plan}")
    run = sub.add_parser(
        "run",
        help="run the operator (the default)",
        description="Run the operator: watch ProxmoxServerPools and ContainerPolicies and act on them.",
    )
    for p in (parser, run):
        scope = p.add_mutually_exclusive_group()
        scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
        scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeat)")
        p.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
        p.add_argument("--verbose", action="store_true", help="debug logging, including Kopf's per-handler lines")
        p.add_argument(
            "--leader-elect",
            action="store_true",
            help="stand by until this process holds the Lease pve-operator-leader in the operator's namespace "
            "(for running several replicas; see pve_operator/leader_election.py)",
        )
        p.add_argument(
            "--log-format", choices=["plain", "full", "json"], default="full", help="log format (default: full)"
        )
    sub.add_parser("plan", help="print the plan the operator would make now (changes nothing)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plan"]:
        from pve_operator.plan_command import run as run_plan

        return run_plan(argv[1:])
    args = parser.parse_args(argv)
    namespaces = args.namespace
    keep_own_objects_beside_watched(namespaces, os.environ)

    import kopf

    import pve_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(
        verbose=args.verbose,
        log_format={"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}[
            args.log_format
        ],
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if not args.verbose:
        # Kopf logs every successful timer run at INFO: thousands of lines a day that say nothing.
        # Failures stay visible (WARNING and above); the operator's own decisions log under pve_operator.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    elector = None
    if args.leader_elect:
        from pve_operator.leader_election import LeaderElector
        from pve_operator.operator_namespace import operator_namespace

        elector = LeaderElector.for_this_process(operator_namespace())
        # The standby is healthy (and ready: the PodDisruptionBudget counts it) while it waits.
        with standby_liveness(args.liveness):
            elector.acquire()
        elector.start_renewing()
    try:
        kopf.run(
            standalone=True,
            clusterwide=args.all_namespaces or not namespaces,
            namespaces=namespaces,
            liveness_endpoint=args.liveness,
        )
    finally:
        if elector is not None:
            elector.release()
    return 0


def keep_own_objects_beside_watched(namespaces: Sequence[str], environ: MutableMapping[str, str]) -> None:
    """operator_namespace.py's promise: a local ``-n NS`` run keeps its own objects (the ownership key, the
    Lease) beside the objects it watches, unless ``$PVE_OPERATOR_NAMESPACE`` says otherwise. Called before
    anything reads it."""
    if namespaces and not environ.get(OPERATOR_NAMESPACE_ENV_VAR, "").strip():
        environ[OPERATOR_NAMESPACE_ENV_VAR] = namespaces[0]


class _StandbyProbe(http.server.BaseHTTPRequestHandler):
    path_served = "/"

    def do_GET(self) -> None:
        ok = urlsplit(self.path).path == self.path_served
        body = b'{"standby": true}' if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json" if ok else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a probe every few seconds is not worth a log line


@contextlib.contextmanager
def standby_liveness(url: str | None) -> Iterator[None]:
    """Answer 200 on the ``--liveness`` URL's path while standing by; the port is free again on exit, before
    Kopf binds it for its own probe endpoint."""
    if not url:
        yield
        return
    parts = urlsplit(url)
    handler = type("StandbyProbe", (_StandbyProbe,), {"path_served": parts.path or "/"})
    server = http.server.ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), handler)
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
