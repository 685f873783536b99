"""A single-node Apache Kafka 4 broker in KRaft mode, resolved from Maven Central and run with java.

Layout under ``SHOPLAKE_HOME``::

    cache/kafka-<version>/libs/   jars from `mvn dependency:copy-dependencies` on infra/kafka/pom.xml
    kafka/server.properties       written on every start from the settings
    kafka/data/                   KRaft metadata + logs, formatted on first start
    kafka/broker.pid, broker.log
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shoplake.core import clock
from shoplake.core.platform.process import (
    ProvisioningError,
    port_open,
    read_pid,
    spawn,
    stop_pid,
    tail,
)
from shoplake.core.settings import REPO_ROOT, Settings

POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
MARKER = "kafka.Kafka"


log = logging.getLogger("shoplake.kafka")


class KafkaUnavailable(RuntimeError):
    """No broker answers at the configured address."""


def kafka_version(pom: Path = POM) -> str:
    m = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text())
    if not m:
        raise ProvisioningError(f"{pom} has no <kafka.version> property")
    return m.group(1)


LOG4J2 = """\
Configuration:
  name: shoplake-kafka
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: WARN
      - name: kafka.request.logger
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


@dataclass
class LocalKafka:
    """The broker shoplake provisions when ``SHOPLAKE_KAFKA_BOOTSTRAP`` is not set."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    cache: Path | None = None  # where resolved jars live (default: <home>/cache); tests share one

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalKafka:
        return cls(settings.home, settings.kafka_port, settings.kafka_controller_port)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        return (self.cache or self.home / "cache") / f"kafka-{kafka_version()}" / "libs"

    @property
    def dir(self) -> Path:
        return self.home / "kafka"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def pidfile(self) -> Path:
        return self.dir / "broker.pid"

    @property
    def logfile(self) -> Path:
        return self.dir / "broker.log"

    # -- install -------------------------------------------------------------------------------
    def installed(self) -> bool:
        return (self.libs / ".complete").exists()

    def install(self, quiet: bool = False) -> Path:
        """Resolve the broker jars from Maven Central (once; later calls are no-ops)."""
        if self.installed():
            return self.libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ProvisioningError(
                "Maven (mvn) is not on PATH; it resolves the Kafka broker from Maven Central. "
                "Install it with 'make system-deps' (apt-get install maven openjdk-17-jre-headless) "
                "or set SHOPLAKE_KAFKA_BOOTSTRAP to use an existing cluster."
            )
        if shutil.which("java") is None:
            raise ProvisioningError("java is not on PATH; install Java 17+ ('make system-deps').")
        staging = self.libs.with_name("libs.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-B",
            "-q" if quiet else "-ntp",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=quiet, text=True)
        if proc.returncode != 0:
            detail = (proc.stdout or "") + (proc.stderr or "") if quiet else ""
            raise ProvisioningError(
                f"mvn could not resolve Kafka {kafka_version()} (exit {proc.returncode}).\n{detail[-3000:]}"
            )
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        (self.libs / ".complete").write_text(kafka_version() + "\n")
        return self.libs

    # -- lifecycle -----------------------------------------------------------------------------
    def pid(self) -> int | None:
        return read_pid(self.pidfile, marker=MARKER)

    def running(self) -> bool:
        return self.pid() is not None

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "60000",
            "message.max.bytes": "2097152",
        }
        if clock.is_moved():
            # The broker's clock cannot follow a moved shoplake clock: with it, records of the
            # clock's days would look too old (deleted by retention) or too new (refused).
            props["log.retention.check.interval.ms"] = str(365 * 86_400_000)
            props["log.initial.task.delay.ms"] = str(365 * 86_400_000)  # the first check, too
            props["log.message.timestamp.after.max.ms"] = str(2**63 - 1)
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j2.yaml").write_text(LOG4J2)
        return path

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.yaml'}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def _format(self, config: Path, cluster_id: str | None = None) -> None:
        if (self.data / "meta.properties").exists():
            return
        cluster_id = cluster_id or base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # "--cluster-id=<id>" in one argument: about one id in 64 starts with "-", which the
        # tool's argument parser would otherwise take for an option.
        proc = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)
            ),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise ProvisioningError(f"formatting Kafka storage failed:\n{proc.stdout}{proc.stderr}")

    def start(self, timeout: float = 90.0) -> str:
        """Start the broker in the background and wait until it answers metadata requests."""
        if (pid := self.pid()) is not None:
            wait_for_broker(self.bootstrap, timeout=timeout)
            return f"Kafka already running (pid {pid}) on {self.bootstrap}"
        for p in (self.port, self.controller_port):
            if port_open("127.0.0.1", p):
                raise ProvisioningError(
                    f"port {p} is taken by a process shoplake did not start. Stop it, or choose "
                    "other ports with SHOPLAKE_KAFKA_PORT / SHOPLAKE_KAFKA_CONTROLLER_PORT, or "
                    "use that cluster with SHOPLAKE_KAFKA_BOOTSTRAP."
                )
        self.install(quiet=True)
        config = self._write_config()
        self._format(config)
        pid = spawn(self._java("kafka.Kafka", str(config)), self.logfile, self.pidfile)
        try:
            wait_for_broker(self.bootstrap, timeout=timeout, pid=pid)
        except KafkaUnavailable as exc:
            stop_pid(pid, grace_seconds=5)
            raise ProvisioningError(
                f"{exc}\n--- last lines of {self.logfile} ---\n{tail(self.logfile)}"
            ) from None
        return f"Kafka {kafka_version()} started (pid {pid}) on {self.bootstrap}"

    def stop(self) -> str:
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return "Kafka is not running (nothing shoplake started)"
        graceful = stop_pid(pid, grace_seconds=30)
        self.pidfile.unlink(missing_ok=True)
        return f"Kafka stopped (pid {pid}, {'graceful' if graceful else 'killed'})"

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return "Kafka: stopped"
        return f"Kafka: running (pid {pid}) on {self.bootstrap}, log {self.logfile}"


def wait_for_broker(bootstrap: str, timeout: float = 60.0, pid: int | None = None) -> None:
    """Block until ``bootstrap`` answers a metadata request; raise KafkaUnavailable on timeout."""
    from confluent_kafka.admin import AdminClient

    from shoplake.core.platform.process import pid_alive

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise KafkaUnavailable(f"the broker process (pid {pid}) exited during start-up")
        try:
            md = admin.list_topics(timeout=2)
            if md.brokers:
                return
        except Exception as exc:  # KafkaException while the broker boots
            last = str(exc)
        time.sleep(0.3)
    log.debug("no broker at %s: %s", bootstrap, last)
    raise KafkaUnavailable(
        f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s. "
        "Start one with 'shoplake kafka start' or set SHOPLAKE_KAFKA_BOOTSTRAP."
    )


def ensure_kafka(settings: Settings) -> str:
    """The bootstrap address to use: the configured cluster, or the local broker (started if needed)."""
    if not settings.kafka_provisioned:
        wait_for_broker(settings.bootstrap_servers, timeout=30)
        return settings.bootstrap_servers
    broker = LocalKafka.from_settings(settings)
    broker.start()
    return broker.bootstrap
