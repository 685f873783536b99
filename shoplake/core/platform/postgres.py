"""A project-local PostgreSQL cluster from Debian's binaries, initdb'd into SHOPLAKE_HOME/postgres.

Trust authentication on loopback only, a free port chosen once and remembered. PostgreSQL refuses
to run as root, so when shoplake runs as root the server runs as the ``postgres`` system user
that Debian's package creates.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shoplake.core.platform.process import ProvisioningError, free_port, port_open, tail
from shoplake.core.settings import Settings

DATABASE = "shoplake"


def find_bindir() -> Path | None:
    """Newest /usr/lib/postgresql/<major>/bin that has pg_ctl and initdb."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    for pg_ctl in reversed(candidates):
        bindir = Path(pg_ctl).parent
        if (bindir / "initdb").exists():
            return bindir
    return None


def install_postgres() -> Path:
    """Install Debian's PostgreSQL server with apt-get when it is missing."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if shutil.which("apt-get") is None:
        raise ProvisioningError(
            "PostgreSQL server binaries are missing and apt-get is not available. Install PostgreSQL "
            "15+ yourself, or point shoplake at a server with SHOPLAKE_PG_DSN."
        )
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        [*sudo, "apt-get", "update", "-qq"],
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ProvisioningError(
                f"'{' '.join(cmd)}' failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
    bindir = find_bindir()
    if bindir is None:
        raise ProvisioningError(
            "apt-get installed postgresql but no pg_ctl was found under /usr/lib/postgresql"
        )
    return bindir


@dataclass
class LocalPostgres:
    home: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalPostgres:
        return cls(settings.home)

    @property
    def dir(self) -> Path:
        return self.home / "postgres"

    @property
    def server_root(self) -> Path:
        """Where the server's files live: the home, unless the 'postgres' user cannot reach it
        (running as root in a 0700 directory), then a directory under /var/lib/shoplake."""
        pointer = self.dir / "location"
        if pointer.exists():
            return Path(pointer.read_text().strip())
        return self.dir

    def _choose_server_root(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        root = self.dir
        if os.geteuid() == 0:
            self._chown(self.dir)
            probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(self.dir)])
            if probe.returncode != 0:
                digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:12]
                root = Path("/var/lib/shoplake") / f"postgres-{digest}"
                root.mkdir(parents=True, exist_ok=True)
                os.chmod(root.parent, 0o755)
        (self.dir / "location").write_text(f"{root}\n")
        return root

    @property
    def data(self) -> Path:
        return self.server_root / "data"

    @property
    def logfile(self) -> Path:
        return self.server_root / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.server_root / "run"

    @property
    def port(self) -> int:
        portfile = self.dir / "port"
        if portfile.exists():
            return int(portfile.read_text().strip())
        self.dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        portfile.write_text(f"{port}\n")
        return port

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    # Running as root: the server and its tools run as the 'postgres' user.
    def _as_owner(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ProvisioningError(
                "running as root, but there is no 'postgres' system user to run the server as"
            ) from None
        return ["runuser", "-u", "postgres", "--", *cmd]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for root, dirs, files in os.walk(path):
                os.chown(root, pw.pw_uid, pw.pw_gid)
                for name in dirs + files:
                    os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)

    def _run(
        self, bindir: Path, tool: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            self._as_owner([str(bindir / tool), *args]), capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            raise ProvisioningError(
                f"{tool} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}\n"
                f"--- last lines of {self.logfile} ---\n{tail(self.logfile)}"
            )
        return proc

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        bindir = find_bindir()
        if bindir is None or not self.initialized():
            return False
        return (
            self._run(bindir, "pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0
        )

    def _init(self, bindir: Path) -> None:
        root = self._choose_server_root()
        self.data.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.logfile.touch()
        self._chown(root)
        self._run(
            bindir,
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# shoplake\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = on\nmax_connections = 200\nshared_buffers = 256MB\n"
            )
        (self.data / "pg_hba.conf").write_text(
            "# shoplake: trust on loopback only\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"
        )
        self._chown(root)

    def start(self, timeout: float = 60.0) -> str:
        bindir = install_postgres()
        if not self.initialized():
            self._init(bindir)
        if self.running():
            self._ensure_database(bindir)
            return f"Postgres already running on port {self.port} ({self.dsn})"
        if port_open("127.0.0.1", self.port):
            (self.dir / "port").unlink()  # taken by someone else since we chose it
        port = self.port
        self._run(
            bindir,
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            f"-p {port}",
        )
        self._ensure_database(bindir)
        return f"Postgres started on port {port} ({self.dsn})"

    def _ensure_database(self, bindir: Path) -> None:
        psql = [
            str(bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
        ]
        deadline = time.monotonic() + 30
        while True:
            proc = subprocess.run(
                [*psql, f"select 1 from pg_database where datname = '{DATABASE}'"],
                capture_output=True,
                text=True,
            )
            if proc.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise ProvisioningError(f"Postgres does not accept connections: {proc.stderr}")
            time.sleep(0.3)
        if proc.stdout.strip() != "1":
            subprocess.run([*psql, f"create database {DATABASE}"], check=True, capture_output=True)

    def stop(self) -> str:
        bindir = find_bindir()
        if bindir is None or not self.running():
            return "Postgres is not running (nothing shoplake started)"
        proc = self._run(
            bindir,
            "pg_ctl",
            "stop",
            "-D",
            str(self.data),
            "-m",
            "fast",
            "-w",
            "-t",
            "30",
            check=False,
        )
        if proc.returncode != 0:
            self._run(
                bindir, "pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False
            )
            return "Postgres stopped (immediate)"
        return "Postgres stopped"

    def destroy(self) -> None:
        """Stop the cluster and delete its files (tests; 'make clean')."""
        self.stop()
        root = self.server_root
        if root != self.dir:
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def status(self) -> str:
        if not self.running():
            return "Postgres: stopped"
        return f"Postgres: running on port {self.port} ({self.dsn}), log {self.logfile}"


def ensure_postgres(settings: Settings) -> str:
    """The DSN to use: the configured server, or the local cluster (started if needed)."""
    if settings.pg_dsn:
        return settings.pg_dsn
    pg = LocalPostgres.from_settings(settings)
    pg.start()
    return pg.dsn
