"""``python -m pve_operator``: run the operator (Kopf) against the current Kubernetes context."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

DESCRIPTION = "Run the pve-operator (Kopf) against the current Kubernetes context (KUBECONFIG or in-cluster)."
"""``--help``'s description: plain text, no reStructuredText markup (argparse prints it as it is)."""

EPILOG = """\
"run" is the default command: without one, the options above apply to run.

examples:
  python -m pve_operator -n pve-lab --log-format plain    run the operator for one namespace
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
            "--log-format", choices=["plain", "full", "json"], default="full", help="log format (default: full)"
        )
    sub.add_parser("plan", help="print the plan the operator would make now (changes nothing)", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plan"]:
        from pve_operator.plan_command import run as run_plan

        return run_plan(argv[1:])
    args = parser.parse_args(argv)

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
    namespaces = args.namespace
    kopf.run(
        standalone=True,
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
