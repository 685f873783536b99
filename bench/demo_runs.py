"""``shoplake demo --once`` N times in a row, each on a fresh home and free ports, as a newcomer's
``make demo`` would run it: how many runs verify, and the largest speed-vs-gold difference seen.

    .venv/bin/python -m bench.demo_runs --runs 10 [--days 3 --users 400 --duration 60]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shoplake.core.platform.process import free_port
from shoplake.core.settings import REPO_ROOT

PORTS = (
    "SHOPLAKE_KAFKA_PORT",
    "SHOPLAKE_KAFKA_CONTROLLER_PORT",
    "SHOPLAKE_COLLECTOR_PORT",
    "SHOPLAKE_DAGSTER_PORT",
    "SHOPLAKE_DASHBOARD_PORT",
    "SHOPLAKE_DAGSTER_EXPORTER_PORT",
    "SHOPLAKE_STREAM_METRICS_PORT",
)
WORST = re.compile(r"largest relative difference over \d+ days: ([0-9.]+)%")


def one_run(days: int, users: int, duration: float, keep: Path) -> tuple[bool, float | None, float]:
    """(verified, largest difference in %, seconds) of one demo --once on a fresh home."""
    with tempfile.TemporaryDirectory(prefix="shoplake-demo-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOPLAKE_", "DAGSTER_"))}
        env.update(
            {k: str(free_port()) for k in PORTS},
            SHOPLAKE_HOME=str(Path(tmp) / "home"),
            DEMO_DURATION=str(duration),
        )
        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "shoplake.cli",
                "demo",
                "--once",
                "--days",
                str(days),
                "--users",
                str(users),
            ],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        seconds = time.perf_counter() - t
    out = proc.stdout + proc.stderr
    keep.write_text(out)
    found = WORST.search(out)
    verified = proc.returncode == 0 and "demo verified" in out
    return verified, float(found.group(1)) if found else None, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--duration", type=float, default=60, help="live traffic seconds per run")
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "demo-runs")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    passed, worst = 0, 0.0
    for i in range(1, args.runs + 1):
        log = args.logs / f"run-{i}.log"
        ok, diff, seconds = one_run(args.days, args.users, args.duration, log)
        passed += ok
        worst = max(worst, diff or 0.0)
        shown = "-" if diff is None else f"{diff:.4f}%"
        print(
            f"run {i}: {'verified' if ok else 'FAILED'} in {seconds:.0f}s, "
            f"largest speed-vs-gold difference {shown} (log {log})",
            flush=True,
        )
    print(
        f"{passed}/{args.runs} runs verified; largest difference seen {worst:.4f}% (tolerance 0.5%)"
    )
    sys.exit(0 if passed == args.runs else 1)


if __name__ == "__main__":
    main()
