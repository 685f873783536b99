"""Starting the dataflow as ``python -m bytewax.run streaming.run:flow`` processes, with recovery.

Used by ``shoplake stream``; tests call :func:`run` to start, kill and resume real processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bytewax.recovery import init_db_dir

from shoplake.core.platform.process import free_port
from shoplake.core.settings import REPO_ROOT

FLOW = "streaming.run:flow"


@dataclass(frozen=True)
class Launch:
    workers: int = 1
    processes: int = 1  # local processes forming one cluster
    process_id: int | None = None  # with addresses: this process in a multi-host cluster
    addresses: str | None = None
    recovery_dir: Path | None = None  # None: no recovery
    recovery_parts: int | None = None
    snapshot_seconds: int = 5
    eof: bool = False
    start: str = "beginning"
    metrics_port: int | None = None


def ensure_recovery(directory: Path, parts: int) -> bool:
    """Create the recovery partitions if there are none; True if they were created."""
    if any(directory.glob("part-*.sqlite3")):
        return False
    directory.mkdir(parents=True, exist_ok=True)
    init_db_dir(directory, parts)
    return True


def reset_recovery(directory: Path) -> None:
    """Forget all progress: the next start reads from the configured start offset again."""
    if directory.exists():
        shutil.rmtree(directory)


def command(
    launch: Launch, process_id: int | None = None, addresses: str | None = None
) -> list[str]:
    cmd = [sys.executable, "-m", "bytewax.run", FLOW, "-w", str(launch.workers)]
    if launch.recovery_dir is not None:
        cmd += ["-r", str(launch.recovery_dir), "-s", str(launch.snapshot_seconds), "-b", "0"]
    else:
        cmd += ["-s", str(launch.snapshot_seconds)]
    if process_id is not None:
        cmd += ["-i", str(process_id), "-a", addresses or ""]
    return cmd


def environment(
    launch: Launch, process_id: int, base: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["SHOPLAKE_STREAM_EOF"] = "1" if launch.eof else "0"
    env["SHOPLAKE_STREAM_START"] = launch.start
    env["SHOPLAKE_STREAM_PROCESS_ID"] = str(process_id)
    if launch.metrics_port is not None:
        env["SHOPLAKE_STREAM_METRICS_PORT"] = str(launch.metrics_port)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def start(launch: Launch, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Start the process(es) of one execution; returns them without waiting."""
    if launch.recovery_dir is not None:
        ensure_recovery(
            launch.recovery_dir, launch.recovery_parts or max(4, launch.workers * launch.processes)
        )
    if launch.addresses is not None:  # one member of a multi-host cluster
        pid = launch.process_id or 0
        return [
            subprocess.Popen(
                command(launch, pid, launch.addresses), env=environment(launch, pid, env)
            )
        ]
    if launch.processes == 1:
        return [subprocess.Popen(command(launch), env=environment(launch, 0, env))]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(launch.processes))
    return [
        subprocess.Popen(command(launch, i, addresses), env=environment(launch, i, env))
        for i in range(launch.processes)
    ]


def wait(procs: list[subprocess.Popen], timeout: float | None = None) -> int:
    """Wait for all processes; if one fails, stop the others. Returns the first non-zero code."""
    deadline = None if timeout is None else time.monotonic() + timeout
    code = 0
    try:
        while procs:
            for p in list(procs):
                rc = p.poll()
                if rc is None:
                    continue
                procs.remove(p)
                if rc != 0 and code == 0:
                    code = rc
                    stop(procs)
            if deadline is not None and time.monotonic() > deadline:
                stop(procs)
                raise TimeoutError(f"the stream did not finish within {timeout}s")
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop(procs)
        raise
    return code


def stop(procs: list[subprocess.Popen], grace: float = 5) -> None:
    """SIGINT (Bytewax stops at once; recovery resumes from the last snapshot), then SIGTERM,
    then SIGKILL. Processes started in the background ignore SIGINT, hence the escalation."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        if not alive:
            return
        for p in alive:
            p.send_signal(sig)
        end = time.monotonic() + grace
        for p in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, end - time.monotonic()))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(launch: Launch, env: dict[str, str] | None = None, timeout: float | None = None) -> int:
    """Start the execution and wait for it; SIGTERM (as from a process manager) stops it too."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return wait(start(launch, env), timeout)
    finally:
        signal.signal(signal.SIGTERM, previous)
