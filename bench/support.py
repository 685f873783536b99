"""Real components for the benchmarks, also used by the tests' fixtures: a throw-away Kafka broker,
the collector as its own process, and the environment both run in.

The benches that start a broker or the collector call :func:`session_environment` first, so they
run as the tests do: on the tests' fixed date and without the shell's shoplake settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from shoplake.core import clock
from shoplake.core.platform.kafka import LocalKafka
from shoplake.core.platform.process import free_port
from shoplake.core.platform.topics import ensure_topics
from shoplake.core.settings import REPO_ROOT, get_settings

# The tests' (and these benches') date: the same simulated days on every day the code runs.
SESSION_CLOCK = "2026-06-15T12:00:00+00:00"
# Settings a developer's shell may pass on: the datasets folder, and a clock that moves the date
# (as CI does for month and year ends).
KEPT_FROM_SHELL = {"SHOPLAKE_DATASETS", clock.ENV}
JAR_CACHE = REPO_ROOT / ".shoplake" / "cache"


def session_environment() -> None:
    """Drop the shell's SHOPLAKE_/DAGSTER_ settings from this process (a developer's SHOPLAKE_HOME
    or DAGSTER_HOME would point it at real state) and put it on the fixed date, SESSION_CLOCK
    unless SHOPLAKE_CLOCK says otherwise, on one timeline shared with every process started with
    :func:`clean_env`."""
    for name in [n for n in os.environ if n.startswith(("SHOPLAKE_", "DAGSTER_"))]:
        if name not in KEPT_FROM_SHELL:
            del os.environ[name]
    os.environ.setdefault(clock.ENV, SESSION_CLOCK)
    os.environ[clock.ENV] = clock.env_value()


def start_broker(root: Path) -> LocalKafka:
    """A single-node broker in ``root`` on free ports, with shoplake's topics."""
    broker = LocalKafka(
        home=root, port=free_port(), controller_port=free_port(), heap="384m", cache=JAR_CACHE
    )
    broker.start(timeout=120)
    ensure_topics(broker.bootstrap)
    return broker


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a process to start: no shell settings, this process's clock
    (:func:`session_environment` must have run)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SHOPLAKE_", "DAGSTER_", "BYTEWAX_"))
    }
    env[clock.ENV] = os.environ[clock.ENV]
    env.update(extra)
    return env


def collector_env(home: Path, bootstrap: str, **extra: str) -> dict[str, str]:
    """A collector in ``home`` writing to ``bootstrap``, on a free port, with fixed test keys."""
    env = clean_env()
    env.update(
        SHOPLAKE_ENV="ci",
        SHOPLAKE_HOME=str(home),
        SHOPLAKE_KAFKA_BOOTSTRAP=bootstrap,
        SHOPLAKE_COLLECTOR_PORT=str(free_port()),
        SHOPLAKE_WRITE_KEYS="test-key,second-key",
        SHOPLAKE_REPLAY_KEYS="test-replay-key",
        SHOPLAKE_PII_KEY="test-pii-key",
        SHOPLAKE_DELIVERY_TIMEOUT_MS="3000",
    )
    env.update(extra)
    return env


class RunningCollector:
    """The collector as its own process (``workers`` uvicorn workers), started with ``env``."""

    def __init__(self, env: dict[str, str], workers: int = 1):
        from shoplake.collector.process import start_collector

        self.env = env
        self.settings = get_settings(env)
        self.pid = start_collector(self.settings, env=env, timeout=60, workers=workers)
        self.url = self.settings.collector_url

    def stop(self) -> None:
        from shoplake.collector.process import stop_collector

        stop_collector(self.settings)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc), to see who is busy during a phase."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
