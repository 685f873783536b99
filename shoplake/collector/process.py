"""The collector as a background process: started detached, ready once /healthz says Kafka answers."""

from __future__ import annotations

import os
import sys

from shoplake.core.platform.process import (
    ProvisioningError,
    read_pid,
    spawn,
    stop_pid,
    wait_http,
)
from shoplake.core.settings import Settings


def start_collector(
    settings: Settings, env: dict[str, str] | None = None, timeout: float = 30, workers: int = 1
) -> int:
    """Start ``shoplake collector`` in the background; wait until /healthz says Kafka is reachable."""
    run = settings.home / "run"
    run.mkdir(parents=True, exist_ok=True)
    pidfile, logfile = run / "collector.pid", run / "collector.log"
    if (pid := read_pid(pidfile, marker="collector")) is not None:
        return pid
    cmd = [sys.executable, "-m", "shoplake.cli", "collector", "--workers", str(workers)]
    pid = spawn(cmd, logfile, pidfile, env=env or dict(os.environ))
    try:
        wait_http(f"{settings.collector_url}/healthz", timeout, logfile)
    except ProvisioningError:
        stop_pid(pid, 5)
        raise
    return pid


def stop_collector(settings: Settings) -> None:
    pidfile = settings.home / "run" / "collector.pid"
    if (pid := read_pid(pidfile, marker="collector")) is not None:
        stop_pid(pid, 10)
    pidfile.unlink(missing_ok=True)
