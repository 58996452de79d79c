#!/usr/bin/env python3
"""Extract the facts pve_sim's conformance test needs from Proxmox VE's official API schema.

Where the schema comes from
---------------------------
Proxmox generates its API documentation with ``scripts/extractapi.pl`` in the ``pve-docs``
repository (``PVE::RESTHandler::api_dump('PVE::API2')``) and ships the result as
``api-viewer/apidata.js``: a JavaScript file ``const apiSchema = [ ...tree... ];`` followed by the
viewer's code. Any of these copies of it works as input:

* ``api-viewer/apidata.js`` in https://git.proxmox.com/?p=pve-docs.git (GitHub mirror
  ``proxmox/pve-docs``) at the commit that bumps the version you want;
* ``/usr/share/pve-docs/api-viewer/apidoc.js`` on a Proxmox VE host (package ``pve-docs``), or
  inside ``pve-docs_<version>_all.deb`` from ``http://download.proxmox.com/debian/pve``
  (``dpkg-deb -x pve-docs_*.deb out/``);
* https://pve.proxmox.com/pve-docs/api-viewer/apidoc.js (the newest release only);
* the same tree as plain JSON, optionally gzipped (``.json``, ``.json.gz``).

The committed ``tests/data/pve-api-9.1-facts.json`` was extracted from ``proxmox/pve-docs`` commit
``e5010dcea566a205770572cfbc5fe0af220d5077`` ("bump version to 9.1.3", 2026-04-30; schema refreshed
in commit ``a8736b6d6169ea9679ee02285ea36fdab42e85c3``): 435 paths, 649 methods.

What is kept
------------
For every method of every path: the handler ``name``, ``allowtoken``, ``proxyto``, ``protected``,
``permissions`` and the ``parameters`` schema with every validation keyword (type, optional,
default, enum, minimum, maximum, minLength, maxLength, pattern, format (property strings key by
key), requires, default_key, ...). Documentation-only keywords (description, verbose_description,
typetext, format_description, title) and the ``returns`` schemas are dropped, which keeps the file
small enough to commit. Nothing outside the repository is read at build, test or run time; to
refresh the facts for a new PVE release, run this script once and commit its output::

    python hack/extract_pve_api_facts.py path/to/apidata.js \\
        --pve-version 9.1 --source 'proxmox/pve-docs@<commit> (pve-docs <version>)' \\
        --output tests/data/pve-api-9.1-facts.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

DOCUMENTATION_KEYWORDS = frozenset({"description", "verbose_description", "typetext", "format_description", "title"})
METHOD_FACTS = ("name", "allowtoken", "proxyto", "protected", "permissions", "parameters")
FACTS_FORMAT_VERSION = 1


def load_tree(source: Path) -> list[dict[str, Any]]:
    """The schema tree from ``apidata.js``/``apidoc.js`` or from a (gzipped) JSON copy of it."""
    if source.suffix == ".gz":
        with gzip.open(source, "rt", encoding="utf-8") as compressed:
            raw = compressed.read()
    else:
        raw = source.read_text("utf-8")
    text = raw.lstrip()
    if not text.startswith("["):
        # apidata.js: "const apiSchema = [ ... ];" then JavaScript; decode just the array literal.
        start = text.find("[", text.find("apiSchema"))
        if start < 0:
            raise SystemExit(f"{source}: no 'apiSchema' array found; is this PVE's apidata.js?")
        text = text[start:]
    tree, _end = json.JSONDecoder().raw_decode(text)
    if not isinstance(tree, list):
        raise SystemExit(f"{source}: the schema must be a list of path nodes")
    return tree


def strip_documentation(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema without its documentation keywords, recursively: parameter maps (``properties``),
    property-string formats (a ``format`` that is a map of keys) and array ``items``. Map keys are
    names, never keywords: a parameter called ``description`` stays."""
    stripped: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in DOCUMENTATION_KEYWORDS:
            continue
        if keyword in ("properties", "format") and isinstance(value, dict):
            value = {name: strip_documentation(sub) if isinstance(sub, dict) else sub for name, sub in value.items()}
        elif keyword == "items" and isinstance(value, dict):
            value = strip_documentation(value)
        stripped[keyword] = value
    return stripped


def _method_fact(key: str, value: Any) -> Any:
    return strip_documentation(value) if key == "parameters" else value


def extract_facts(tree: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{path: {method: facts}}`` for every path of the tree, sorted for stable diffs."""
    paths: dict[str, dict[str, Any]] = {}
    stack = list(tree)
    while stack:
        node = stack.pop()
        stack.extend(node.get("children") or [])
        methods = node.get("info") or {}
        paths[node["path"]] = {
            method: {key: _method_fact(key, info[key]) for key in METHOD_FACTS if key in info}
            for method, info in sorted(methods.items())
        }
    return dict(sorted(paths.items()))


def render(document: dict[str, Any]) -> str:
    """Compact JSON with one path per line, so a schema refresh diffs path by path."""
    compact = {"separators": (",", ":"), "sort_keys": True}
    header = {key: value for key, value in document.items() if key != "paths"}
    lines = [json.dumps(header, **compact)[:-1] + ',"paths":{']  # type: ignore[arg-type]
    entries = [f"{json.dumps(path)}:{json.dumps(methods, **compact)}" for path, methods in document["paths"].items()]  # type: ignore[arg-type]
    lines.append(",\n".join(entries))
    lines.append("}}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("schema", type=Path, help="apidata.js / apidoc.js, or the tree as .json or .json.gz")
    parser.add_argument("--pve-version", required=True, help="the PVE release the schema belongs to, e.g. 9.1")
    parser.add_argument("--source", required=True, help="where the schema came from (repository@commit, package)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    paths = extract_facts(load_tree(args.schema))
    document = {
        "formatVersion": FACTS_FORMAT_VERSION,
        "pveVersion": args.pve_version,
        "source": args.source,
        "generatedBy": "hack/extract_pve_api_facts.py",
        "paths": paths,
    }
    args.output.write_text(render(document), encoding="utf-8")
    methods = sum(len(m) for m in paths.values())
    size_kib = args.output.stat().st_size / 1024
    print(f"{args.output}: {len(paths)} paths, {methods} methods, {size_kib:.0f} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
