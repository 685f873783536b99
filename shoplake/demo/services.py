"""The processes a demo starts, and stopping exactly those (by pid), newest first."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from shoplake.core.platform.kafka import LocalKafka
from shoplake.core.platform.process import read_pid, spawn, stop_group, stop_pid, wait_http
from shoplake.core.settings import Settings
from shoplake.core.stream_config import runtime_from_env


@dataclass
class Demo:
    settings: Settings
    console: Console
    env: dict[str, str]
    started: list[tuple[str, int]] = field(default_factory=list)
    started_kafka: bool = False

    @property
    def stream_metrics_port(self) -> int:
        """Where the demo's speed layer serves its Prometheus metrics (SHOPLAKE_STREAM_METRICS_PORT)."""
        return runtime_from_env(self.env).metrics_port

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    def service(self, name: str, cmd: list[str], health: str | None, timeout: float = 90) -> int:
        """Start ``cmd`` detached unless a previous one still runs (then it is not ours to stop)."""
        pidfile, logfile = self.run_dir / f"{name}.pid", self.run_dir / f"{name}.log"
        marker = next((c for c in cmd if "." in c and "/" not in c), Path(cmd[0]).name)
        if (pid := read_pid(pidfile, marker=marker)) is not None:
            self.console.print(f"  {name}: already running (pid {pid}), left as it is")
            return pid
        pid = spawn(cmd, logfile, pidfile, env=self.env)
        self.started.append((name, pid))
        if health:
            wait_http(health, timeout, logfile)
        self.console.print(f"  {name}: pid {pid} (log {logfile})")
        return pid

    def stop_all(self) -> None:
        """Stop what this run started, newest first. A second Ctrl-C must not leave orphans, so
        interrupts are ignored until every process is down."""
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for name, pid in reversed(self.started):
                try:
                    if name == "collector":
                        stop_pid(pid, 10)
                    else:
                        stop_group(pid)
                except Exception as exc:  # keep stopping the others
                    self.console.print(f"  [red]could not stop {name} (pid {pid}): {exc}[/]")
                    continue
                (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
                self.console.print(f"  stopped {name} (pid {pid})")
            self.started.clear()
            if self.started_kafka:
                self.console.print(f"  {LocalKafka.from_settings(self.settings).stop()}")
                self.started_kafka = False
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
