"""The README and docs tell the truth: every setting the code reads is documented, and every file
the docs name exists (or is one the code writes)."""

from __future__ import annotations

import re
import subprocess

from shoplake.core.settings import REPO_ROOT
from shoplake.core.stream_config import ENV_DEFAULTS

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
NAME = re.compile(r"SHOPLAKE_[A-Z0-9_]*[A-Z0-9]")


def tracked_text(*patterns: str) -> str:
    files = subprocess.run(
        ["git", "ls-files", *patterns], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return "\n".join((REPO_ROOT / f).read_text(errors="replace") for f in files)


def settings_table() -> set[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Configuration", 1)[1].split("\n## ", 1)[0]
    return {
        m
        for line in section.splitlines()
        if line.startswith("| `")
        for m in NAME.findall(line.split("|")[1])
    }


def test_every_setting_the_code_reads_is_in_the_readme():
    read = set(NAME.findall(tracked_text("*.py", "*.yml", "*.yaml", "*.sql", "*.sh", "Makefile")))
    table = settings_table()
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    undocumented = sorted(
        name
        for name in read
        if name not in table
        and name not in ENV_DEFAULTS  # the speed layer's own table, which the README points to
        and f"`{name}`" not in operations  # set by shoplake for its processes, listed there
    )
    assert undocumented == []
    assert {
        "SHOPLAKE_HOME",
        "SHOPLAKE_REPLAY_KEYS",
        "SHOPLAKE_CLOCK",
    } <= table  # it reads the table


def test_every_path_the_docs_name_exists_or_is_written_by_the_code():
    code = tracked_text("*.py")
    top = {p.name for p in REPO_ROOT.iterdir()}
    missing = []
    for doc in DOCS:
        for path in re.findall(r"`([\w./<>$-]+/[\w./<>*-]*)`", doc.read_text()):
            first = path.split("/", 1)[0]
            if first in (".shoplake", "$SHOPLAKE_HOME", "SHOPLAKE_HOME"):
                leaf = path.rstrip("/").rsplit("/", 1)[-1]
                if "<" not in leaf and "*" not in leaf and leaf not in code:
                    missing.append(f"{doc.name}: {path} (no code writes {leaf!r})")
            elif first in top and "<" not in path and "*" not in path:
                exists = (REPO_ROOT / path.split("#")[0].rstrip("/")).exists()
                missing += [] if exists else [f"{doc.name}: {path}"]
    assert missing == []
