"""The repository needs nothing beside it: a user's clone has no sibling folders of ours.

The developers' reference material (PVE's API schema, studies of other projects) lives outside
the repository. Facts the project needs from it are copied in, with their source named (for
example ``tests/data/pve-api-9.1-facts.json``, written by ``hack/extract_pve_api_facts.py``).
This test fails when a tracked file names a path outside the clone's root that only the
developers' machines have, which is how the conformance suite once failed on every user's clone.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: A path that leaves the clone into the developers' shared folder, however it is spelled: the
#: sibling folder by a relative path, or its reference subfolder joined in parts. Built from parts
#: so this file does not name the folder itself.
OUTSIDE_PATH = re.compile(
    r"\.\./"
    + "shared"
    + r"\b"
    + r"|[\"']"
    + "shared"
    + r"[\"']\s*/\s*[\"']reference"
    + r"|\b"
    + "shared"
    + r"/reference\b"
)
#: Where build, test and run-time code lives; prose (docs/, the README) may mention anything.
CHECKED_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".env", ".json", ""}


def tracked_files() -> list[Path]:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    return [REPO / name for name in listed if name and (REPO / name).is_file()]


def test_no_file_reads_the_developers_shared_folder() -> None:
    offenders = []
    for path in tracked_files():
        if path == Path(__file__).resolve():
            continue
        if path.suffix not in CHECKED_SUFFIXES and path.name != "Makefile":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "files that reach outside the clone (copy the facts in instead):\n" + "\n".join(offenders)


def test_the_pattern_catches_the_spellings_that_broke_the_suite() -> None:
    assert OUTSIDE_PATH.search('REPO_ROOT.parent / "shared" / "reference"')
    assert OUTSIDE_PATH.search("cat ../" + "shared" + "/reference/x.json")
    assert not OUTSIDE_PATH.search("shared=storage_spec.shared")
    assert not OUTSIDE_PATH.search('"shared": 1 if storage.shared else 0')
