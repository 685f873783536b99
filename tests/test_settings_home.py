"""Every environment variable is read in one place: Settings (shoplake/core/settings.py), the
speed layer's StreamConfig (shoplake/core/stream_config.py), or the clock's SHOPLAKE_CLOCK. Other
modules may pass the whole environment on to a child process, but never read a variable."""

from __future__ import annotations

import ast
from pathlib import Path

from shoplake.core.settings import REPO_ROOT

READERS = {
    "shoplake/core/settings.py",
    "shoplake/core/stream_config.py",
    "shoplake/core/clock.py",
}
PACKAGES = ("shoplake", "pipeline_assets", "resources", "streaming")


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read one variable: os.environ.get(..), os.environ[..], os.getenv(..)."""

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            if name == "getenv" or (name == "get" and is_environ(owner)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            lines += [node.lineno] if isinstance(node.ctx, ast.Load) else []
    return lines


def test_environment_reads_detects_every_form():
    code = "import os\na = os.environ.get('X')\nb = os.environ['Y']\nc = os.getenv('Z')\nd = dict(os.environ)\n"
    assert environment_reads(ast.parse(code)) == [2, 3, 4]


def test_only_settings_read_environment_variables():
    found = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if rel in READERS:
                continue
            found += [f"{rel}:{line}" for line in environment_reads(ast.parse(path.read_text()))]
    assert found == [], "read these through Settings or StreamConfig: " + ", ".join(found)
    assert all(Path(REPO_ROOT / r).exists() for r in READERS)
