"""The documentation says what the code does: generated reference, links, make targets, reasons, names.

* ``docs/configuration.md`` is exactly what ``python -m pve_operator.api.docgen`` generates;
* every relative link in README.md and docs/*.md points to a file that exists;
* every ``make <target>`` the docs show is a target of the Makefile;
* every condition reason docs/troubleshooting.md documents is in the operator's source, and every
  reason the handlers set is documented there (the same for event reasons, where they are literal);
* the README lists every environment variable of ``runtime.py`` and every metric of
  ``metrics.py``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pve_operator.api import docgen
from pve_operator.api.v1alpha1 import ConditionReason

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
SOURCE = REPO / "operator" / "pve_operator"
HANDLERS = SOURCE / "handlers"
TROUBLESHOOTING = DOCS / "troubleshooting.md"

#: The kinds ``OperatorRuntime._read_object_data`` reads: the credentials Secret, and the CA from a Secret
#: or a ConfigMap (``TLSConfig.ca_reference``). Its reasons are built as f"{kind}NotFound" and the like.
OBJECT_KINDS = ("Secret", "ConfigMap")
#: Calls whose first argument is a condition reason.
#: ``kopf.info`` and ``kopf.warn``: the calls that post events.
EVENT_CALLS = frozenset({"info", "warn"})

FENCED_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
BACKTICKED_NAME = re.compile(r"`([A-Z][A-Za-z0-9]+)`")
#: A command line that runs make (after optional VAR=value assignments): `DEMO_SECONDS=180 make demo`.
MAKE_COMMAND = re.compile(r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*make\s+([a-z][-a-z0-9_]*)", re.MULTILINE)


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """Markdown without code blocks and code spans (links in code are not links)."""
    return INLINE_CODE.sub("", FENCED_BLOCK.sub("", text))


def code(text: str) -> Iterator[str]:
    """The code blocks and code spans of a Markdown text."""
    for match in FENCED_BLOCK.finditer(text):
        yield match.group(0)
    for match in INLINE_CODE.finditer(FENCED_BLOCK.sub("", text)):
        yield match.group(0)


# -- the generated reference --------------------------------------------------------------------


def test_configuration_reference_is_current() -> None:
    output = DOCS / "configuration.md"
    diff = docgen.drift(output, docgen.render_reference())
    assert not diff, (
        "docs/configuration.md is out of date: run `python -m pve_operator.api.docgen --output "
        f"docs/configuration.md`\n{diff}"
    )


def test_docgen_check_exits_non_zero_on_drift(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# stale\n")
    assert docgen.main(["--check", "--output", str(stale)]) == 1
    assert docgen.main(["--output", str(stale)]) == 0
    assert docgen.main(["--check", "--output", str(stale)]) == 0


def test_reference_covers_every_spec_field() -> None:
    """A field added to a model shows up in the reference (guards the walker, not just the file)."""
    text = docgen.render_reference()
    for path in (
        "spec.thresholds.migrateAbovePercent",
        "spec.tls.caConfigMapRef.key",
        "spec.nodes[].weight",
        "spec.template.networks[].vlan",
        "spec.placement.nodeWeights[].weight",
        "status.inFlight[].wasRunning",
        "status.lastHandledConfiguration",
    ):
        assert f"`{path}`" in text, path


# -- links and make targets ---------------------------------------------------------------------


def anchors(document: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file (lower case, punctuation dropped, '-' for spaces)."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCED_BLOCK.sub("", document.read_text()), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("document", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(document: Path) -> None:
    text = prose(document.read_text())
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    broken = []
    for target in targets:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # a URL with a scheme
        path, _, fragment = target.split("?", 1)[0].partition("#")
        linked = document if not path else document.parent / path
        if not linked.exists() or (fragment and linked.suffix == ".md" and fragment not in anchors(linked)):
            broken.append(target)
    assert not broken, f"{document.name} links to missing files or headings: {broken}"


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:(?!=)", text, re.MULTILINE))


@pytest.mark.parametrize("document", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_make_targets_shown_exist(document: Path) -> None:
    shown = {target for snippet in code(document.read_text()) for target in MAKE_COMMAND.findall(snippet.strip("`"))}
    missing = shown - makefile_targets()
    assert not missing, f"{document.name} shows make targets the Makefile lacks: {sorted(missing)}"


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    for command in ("make demo", "make test", "DEMO_SECONDS=180 make demo", "DEMO_USE_CURRENT_CONTEXT=1"):
        assert command in text, command


# -- condition and event reasons ----------------------------------------------------------------


def _sections(text: str, title: str) -> str:
    """The text of the level-2 section whose heading starts with ``title`` (up to the next one)."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"troubleshooting.md has no '## {title}' section"
    return match.group(1)


def documented(title: str) -> set[str]:
    """Reasons named in backticks in the ``###`` headings of a troubleshooting.md section."""
    section = _sections(TROUBLESHOOTING.read_text(), title)
    headings = re.findall(r"^###\s+(.*)$", section, re.MULTILINE)
    return {name for heading in headings for name in BACKTICKED_NAME.findall(heading)}


def _strings(node: ast.expr) -> Iterator[str]:
    """Constant strings an expression can evaluate to (constants and both branches of ``a if c else b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def _template(node: ast.expr) -> re.Pattern[str] | None:
    """An f-string like f"{kind}NotFound" as a pattern of the names it can produce."""
    if not isinstance(node, ast.JoinedStr):
        return None
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(re.escape(str(value.value)))
        else:
            parts.append("[A-Z][A-Za-z]*")
    return re.compile("".join(parts))


def _trees(directory: Path) -> Iterator[ast.Module]:
    for path in sorted(directory.rglob("*.py")):
        yield ast.parse(path.read_text(), filename=str(path))


def source_strings() -> tuple[set[str], list[re.Pattern[str]]]:
    """Every string literal in the operator's source, and every f-string as a pattern."""
    literals: set[str] = set()
    templates: list[re.Pattern[str]] = []
    for tree in _trees(SOURCE):
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.JoinedStr):
                template = _template(node)
                if template is not None and any(isinstance(v, ast.Constant) for v in node.values):
                    templates.append(template)
    return literals, templates


def in_source(reason: str, literals: set[str], templates: list[re.Pattern[str]]) -> bool:
    return reason in literals or any(t.fullmatch(reason) for t in templates)


def test_the_documented_condition_reasons_are_exactly_the_enum() -> None:
    """Every reason a condition can carry is a ConditionReason (mypy holds the handlers to that), and
    troubleshooting.md explains each of them, no more, no fewer."""
    documented_reasons = documented("Condition reasons")
    assert len(documented_reasons) >= 20, f"too few reasons found in troubleshooting.md: {sorted(documented_reasons)}"
    members = {reason.value for reason in ConditionReason}
    assert sorted(members - documented_reasons) == [], "reasons troubleshooting.md does not explain"
    assert sorted(documented_reasons - members) == [], "troubleshooting.md explains reasons the operator never sets"


def test_every_condition_reason_is_set_somewhere() -> None:
    """No member is dead: each is named in the operator's source, or built from a kind
    (``ConditionReason(f"{kind}NotFound")`` for a Secret or ConfigMap the pool names)."""
    source = "".join(path.read_text() for path in SOURCE.rglob("*.py") if path.name != "common.py")
    built = {kind + suffix for kind in OBJECT_KINDS for suffix in ("NotFound", "Forbidden")}
    assert 'ConditionReason(f"{kind}NotFound")' in source and 'ConditionReason(f"{kind}Forbidden")' in source
    unused = sorted(
        r.value for r in ConditionReason if f"ConditionReason.{r.name}" not in source and r.value not in built
    )
    assert not unused, f"condition reasons nothing sets: {unused}"


def event_reasons_in_handlers() -> tuple[set[str], set[str]]:
    """Literal reasons of kopf.info/kopf.warn calls and of the reason tables, and suffixes of templated ones."""
    literals: set[str] = set()
    suffixes: set[str] = set()
    for tree in _trees(HANDLERS):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EVENT_CALLS:
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        literals.update(_strings(keyword.value))
                        if isinstance(keyword.value, ast.JoinedStr):
                            last = keyword.value.values[-1]
                            if isinstance(last, ast.Constant):
                                suffixes.add(str(last.value))
            elif isinstance(node, ast.Dict) and node.values and all(
                isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.endswith("ed") for v in node.values
            ):
                # {"Create": "Created", ...} and {"Migrate": "Migrated", ...}: action kind -> event reason.
                literals.update(str(v.value) for v in node.values if isinstance(v, ast.Constant))
    return literals, suffixes


def test_event_reasons_are_documented() -> None:
    documented_events = documented("Events")
    literals, suffixes = event_reasons_in_handlers()
    assert {"BalancingFailed", "DeletionBlocked", "Migrated", "Created"} <= literals
    missing = sorted(literals - documented_events - documented("Condition reasons"))
    assert not missing, f"troubleshooting.md does not document these event reasons: {missing}"
    for suffix in suffixes:
        assert any(r.endswith(suffix) for r in documented_events), f"no *{suffix} event documented"
    source_literals, templates = source_strings()
    unknown = sorted(r for r in documented_events if not in_source(r, source_literals, templates))
    assert not unknown, f"troubleshooting.md documents events the operator never posts: {unknown}"


def test_balancing_doc_explains_every_refusal_kind() -> None:
    from pve_operator.planning.balancing import RefusalKind

    text = (DOCS / "balancing.md").read_text()
    missing = sorted(kind.value for kind in RefusalKind if f"| `{kind.value}` |" not in text)
    assert not missing, f"docs/balancing.md does not explain the refusal kinds {missing}"


# -- names the README lists ---------------------------------------------------------------------


def test_readme_lists_every_environment_variable() -> None:
    names = set(re.findall(r"\b(PVE_OPERATOR_[A-Z_]+)\b", (SOURCE / "runtime.py").read_text()))
    assert names, "no PVE_OPERATOR_* variables found in runtime.py"
    text = README.read_text()
    missing = sorted(n for n in names if n not in text)
    assert not missing, f"README.md does not list {missing}"
    everywhere = "".join(p.read_text() for p in [*SOURCE.rglob("*.py"), *(REPO / "hack").rglob("*.py")])
    everywhere += (REPO / "hack" / "build-controlplane.sh").read_text()
    unknown = sorted(n for n in set(re.findall(r"\b(PVE_OPERATOR_[A-Z_]+)\b", text)) if n not in everywhere)
    assert not unknown, f"README.md lists variables nothing reads: {unknown}"


def test_readme_lists_every_metric() -> None:
    names = set(re.findall(r"\"(pve_operator_[a-z_]+)\"", (SOURCE / "metrics.py").read_text()))
    assert len(names) >= 5
    text = README.read_text()
    missing = sorted(n for n in names if n not in text)
    assert not missing, f"README.md does not list the metrics {missing}"
