"""Mutation testing of the business rules with mutmut: which mutants of each rule the tests kill.

    .venv/bin/python -m bench.mutation [--jobs 2] [--modules streaming/dedupe.py ...]
    .venv/bin/python -m bench.mutation --report /tmp/mutation-report.txt --keep

Not part of CI: a full run takes hours (2 CPUs). Needs mutmut 3 in the venv (the dev extra).

1. Copies the working tree (git ls-files: tracked and untracked-not-ignored files, edits
   included) into a temporary directory; mutmut works there, so its mutants/ folder never
   touches the checkout. --keep leaves it behind (then `mutmut show NAME` / `mutmut browse` in it).
2. mutmut mutates the function bodies of the speed-layer rules (streaming/alerts.py,
   sessions.py, dedupe.py, daily.py) and, in pipeline_assets/silver/events/, only the bot and
   dedupe rules (agents.cadence_bots, dedupe.resolve).
   mutmut never mutates module-level constants (BOT_GAP, BOT_MIN_CLICKS, ...).
3. Each mutant runs, with -x and fastest first, the tests of TESTS (the flow, the stateful
   steps and silver) that execute the mutated function (mutmut's stats pass finds them; a
   mutant of a function none of them executes is "no tests").
4. Prints per module: mutants generated, killed, survived, timeout, other (no tests, suspicious,
   segfault) and the score killed / (killed + survived); then every surviving mutant as
   file:line  original -> mutated.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# file -> the functions to run mutants of (None: all of them)
TARGETS: dict[str, tuple[str, ...] | None] = {
    "streaming/alerts.py": None,
    "streaming/sessions.py": None,
    "streaming/dedupe.py": None,
    "streaming/daily.py": None,
    "pipeline_assets/silver/events/agents.py": ("cadence_bots",),
    "pipeline_assets/silver/events/dedupe.py": ("resolve",),
}
TESTS = (
    "tests/test_streaming_flows.py",
    "tests/test_streaming_memory.py",
    "tests/test_silver.py",
)
SEP = "\u01c1"  # mutmut's separator in the names of methods' mutants: xǁClassǁmethod__mutmut_3


def module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mutmut_exe() -> str:
    exe = Path(sys.executable).with_name("mutmut")
    found = str(exe) if exe.exists() else shutil.which("mutmut")
    if not found:
        sys.exit(
            "mutmut is not installed: .venv/bin/uv pip install --python .venv/bin/python -e '.[dev]'"
        )
    return found


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it (a fresh clone, or edits in progress), without .git."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def write_config(work: Path, targets: dict[str, tuple[str, ...] | None]) -> None:
    """mutmut's settings ([mutmut] in setup.cfg: the copy's pyproject.toml has no [tool.mutmut]).
    The mutated packages are the source paths, everything else is copied next to them, so the
    tests import the whole project from mutants/ and nothing from the checkout."""
    sources = sorted({t.split("/")[0] for t in targets})
    others = sorted(
        p.name for p in work.iterdir() if p.name not in sources and p.name != "setup.cfg"
    )

    def lines(values: list[str] | tuple[str, ...]) -> str:
        return "".join(f"\n    {v}" for v in values)

    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths ={lines(sources)}\n"
        f"only_mutate ={lines(list(targets))}\n"
        f"also_copy ={lines(others)}\n"
        f"pytest_add_cli_args_test_selection ={lines(TESTS)}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
        # Polars and Bytewax start threads: fork the mutants from a process that has not run a test.
        "process_isolation = forkserver\n"
        "use_git_change_detection = false\n"
    )


def patterns(targets: dict[str, tuple[str, ...] | None]) -> list[str]:
    """mutmut mutant-name patterns (fnmatch) of the mutants to run."""
    out = []
    for path, functions in targets.items():
        module = module_of(path)
        if functions is None:
            out.append(f"{module}.*")
        else:
            out += [f"{module}.x_{f}__mutmut_*" for f in functions]
    return out


@dataclass
class Mutant:
    name: str
    status: str
    path: str
    function: str  # Class.method or function

    @property
    def row(self) -> str:
        """The table row it counts in: its file, or file::function for a restricted file."""
        if TARGETS.get(self.path) is None:
            return self.path
        return f"{self.path}::{self.function}"


def parse_name(name: str) -> tuple[str, str]:
    """'streaming.alerts.xǁWindowAlertsLogicǁ_judge__mutmut_4' -> (streaming/alerts.py,
    WindowAlertsLogic._judge)."""
    mangled = name.partition("__mutmut_")[0]
    module, _, func = mangled.rpartition(".")
    if func.startswith("x" + SEP):
        _, cls, method = func.split(SEP)
        func = f"{cls}.{method}"
    else:
        func = func.removeprefix("x_")
    return module.replace(".", "/") + ".py", func


def read_results(work: Path, mutmut: str) -> list[Mutant]:
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=work, capture_output=True, text=True, check=True
    ).stdout
    mutants = []
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            mutants.append(Mutant(name, status, *parse_name(name)))
    return mutants


def functions_in(source: str) -> dict[str, tuple[int, int]]:
    """'func' / 'Class.method' -> (first line incl. decorators, last line) in the file."""
    spans = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                spans[prefix + node.name] = (first, node.end_lineno or node.lineno)
            elif isinstance(node, ast.ClassDef) and not prefix:
                visit(node.body, node.name + ".")

    visit(ast.parse(source).body, "")
    return spans


HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


def describe(work: Path, mutmut: str, m: Mutant, sources: dict[str, list[str]]) -> str:
    """'path:line  original -> mutated' from `mutmut show` (a diff of the function)."""
    diff = subprocess.run(
        [mutmut, "show", m.name], cwd=work, capture_output=True, text=True, check=False
    ).stdout.splitlines()
    removed, added, rel, line_in_func = [], [], 0, None
    for line in diff:
        if hit := HUNK.match(line):
            rel = int(hit.group(1))
        elif line.startswith(("---", "+++", "#")):
            continue
        elif line.startswith("-"):
            line_in_func = line_in_func or rel
            removed.append(line[1:])
            rel += 1
        elif line.startswith("+"):
            line_in_func = line_in_func or rel
            added.append(line[1:])
        elif line.startswith(" "):
            rel += 1
    lines = sources[m.path]
    first, last = functions_in("\n".join(lines)).get(m.function, (1, len(lines)))
    lineno = first + (line_in_func or 1) - 1
    if removed and (lineno > len(lines) or lines[lineno - 1] != removed[0]):
        # leading comments shift the function's text: the nearest identical line of the function
        same = [i for i in range(first, last + 1) if lines[i - 1] == removed[0]]
        lineno = min(same, key=lambda i: abs(i - lineno), default=lineno)

    def code(text: list[str]) -> str:
        return " / ".join(t.strip() for t in text) or "(nothing)"

    return f"{m.path}:{lineno}  {code(removed)}  ->  {code(added)}   [{m.name.rpartition('.')[2]}]"


def score(killed: int, survived: int) -> str:
    return f"{100 * killed / (killed + survived):.1f} %" if killed + survived else "-"


def mutmut_version(mutmut: str, work: Path) -> str:
    out = subprocess.run(
        [mutmut, "--version"], cwd=work, capture_output=True, text=True, check=False
    )
    return out.stdout.strip().rpartition(" ")[2]


def report(
    work: Path, mutmut: str, mutants: list[Mutant], seconds: float, cmd: str, jobs: int
) -> str:
    rows: dict[str, Counter] = defaultdict(Counter)
    skipped: Counter = Counter()
    for m in mutants:
        if m.path not in TARGETS:
            continue
        wanted = TARGETS[m.path]
        if wanted is not None and m.function not in wanted:
            skipped[m.path] += 1  # generated for the rest of the file, not run
            continue
        rows[m.row]["generated"] += 1
        rows[m.row][m.status] += 1
    cols = ("generated", "killed", "survived", "timeout", "other")
    width = max([len(r) for r in rows] + [6])
    out = [
        f"command: {cmd}",
        f"mutmut {mutmut_version(mutmut, work)}, {jobs} mutants at once",
        f"wall time: {seconds / 3600:.2f} h ({seconds:.0f} s)",
        "tests per mutant: those of " + ", ".join(TESTS) + " that execute the mutated function"
        " (mutmut's stats), -x, fastest first",
        "",
        f"{'module':<{width}}  " + "  ".join(f"{c:>9}" for c in cols) + "      score",
    ]
    total: Counter = Counter()
    for row in sorted(rows, key=lambda r: list(TARGETS).index(r.split("::")[0])):
        c = rows[row]
        c["other"] = c["generated"] - c["killed"] - c["survived"] - c["timeout"]
        total.update(c)
        out.append(
            f"{row:<{width}}  "
            + "  ".join(f"{c[k]:>9}" for k in cols)
            + f"  {score(c['killed'], c['survived']):>9}"
        )
    out.append(
        f"{'total':<{width}}  "
        + "  ".join(f"{total[k]:>9}" for k in cols)
        + f"  {score(total['killed'], total['survived']):>9}"
    )
    others = sorted(
        {m.status for m in mutants if m.row in rows} - {"killed", "survived", "timeout"}
    )
    out.append(
        "score = killed / (killed + survived)" + (f"; other: {', '.join(others)}" if others else "")
    )
    for path, n in skipped.items():
        out.append(f"{path}: {n} mutants of its other functions generated, not run")

    sources = {p: (work / p).read_text().splitlines() for p in TARGETS if (work / p).exists()}
    wanted = [m for m in mutants if m.row in rows]
    out += ["", "surviving mutants (file:line  original -> mutated   [mutant]):"]
    for row in rows:
        survivors = [m for m in wanted if m.row == row and m.status == "survived"]
        if not survivors:
            continue
        out += ["", f"{row} ({len(survivors)})"]
        survivors.sort(key=lambda m: int(m.name.rpartition("_")[2]))
        described = [describe(work, mutmut, m, sources) for m in survivors]
        described.sort(key=lambda d: int(d.split(":")[1].split()[0]))
        out += ["  " + d for d in described]
    uncovered = Counter(f"{m.path}::{m.function}" for m in wanted if m.status == "no tests")
    if uncovered:
        out += ["", "functions no selected test executes (their mutants are 'no tests'):"]
        out += [f"  {f}: {n} mutants" for f, n in uncovered.items()]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    ap.add_argument("--modules", nargs="+", choices=list(TARGETS), help="a subset of the targets")
    ap.add_argument("--report", type=Path, help="also write the report to this file")
    ap.add_argument("--keep", action="store_true", help="keep mutmut's working directory")
    args = ap.parse_args()
    targets = {p: f for p, f in TARGETS.items() if not args.modules or p in args.modules}
    mutmut = mutmut_exe()

    work = Path(tempfile.mkdtemp(prefix="shoplake-mutation-"))
    started = time.monotonic()
    try:
        copy_tree(work)
        write_config(work, targets)
        cmd = [mutmut, "run", "--max-children", str(args.jobs), *patterns(targets)]
        print(f"mutmut in {work}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        run = subprocess.run(cmd, cwd=work, check=False)
        seconds = time.monotonic() - started
        if run.returncode != 0:
            sys.exit(f"mutmut run failed (exit {run.returncode}); its files are in {work}")
        mutants = read_results(work, mutmut)
        text = report(work, mutmut, mutants, seconds, " ".join(sys.argv), args.jobs)
        print("\n" + text, end="")
        if args.report:
            args.report.write_text(text)
    finally:
        if args.keep or ("run" in locals() and run.returncode != 0):
            print(f"mutmut's working directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
