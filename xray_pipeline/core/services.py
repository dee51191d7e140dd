"""Run the Dagster webserver and daemon (`dagster dev`) as one child process group.

Used by `xray-pipeline up` and `demo`: one instance per XRAY_HOME (a locked pid file), the
instance's dagster.yaml written from the project's template with the storage URL of the
configured server, readiness = the first sensor tick (a web server can look healthy while the
daemon is stuck), and a shutdown that leaves no process behind.
"""

import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from xray_pipeline.core.pg import (
    DatabaseError,
    connect,
    dagster_storage_url,
    database_url,
    with_database,
)
from xray_pipeline.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class AlreadyRunning(RuntimeError):
    """Another `up`/`demo` holds this XRAY_HOME."""


@dataclass
class InstanceLock:
    """An exclusive lock on XRAY_HOME/up.pid, held while the services run."""

    path: Path
    fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"xray-pipeline is already running for {self.path.parent} (pid {other}); "
                f"stop it (Ctrl-C in its terminal, or kill {other}) or use another --home"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def prepare_dagster_home(settings: Settings) -> Path:
    """XRAY_HOME/dagster with a dagster.yaml whose storage is the configured server."""
    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    storage_url = dagster_storage_url(settings)
    ensure_database(storage_url)
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    config["storage"] = {"postgres": {"postgres_url": storage_url}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return home


def ensure_database(url: str) -> None:
    """Create the database of `url` on its server if it does not exist."""
    params = psycopg.conninfo.conninfo_to_dict(url.replace("+psycopg2", ""))
    name = params.get("dbname", "dagster")
    admin_url = with_database(url.replace("+psycopg2", ""), "postgres")
    with connect(admin_url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _reset_sigint() -> None:
    # `dagster dev` started from a script inherits an ignored SIGINT, which survives a new
    # session: restore the default so that the group stops on SIGINT and SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_dagster(
    settings: Settings, *, host: str, port: int, extra_env: dict[str, str], log_file: Path
) -> subprocess.Popen:
    """`dagster dev` on the code location, in its own process group, logging to `log_file`."""
    env = {**os.environ, **extra_env, "DAGSTER_HOME": str(prepare_dagster_home(settings))}
    env.setdefault("DAGSTER_TELEMETRY_DISABLED", "1")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out = log_file.open("ab")
    return subprocess.Popen(
        [
            sys.executable, "-m", "dagster", "dev",
            "-m", "xray_pipeline.definitions",
            "-h", host, "-p", str(port),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_reset_sigint,
    )  # fmt: skip


def start_api(settings: Settings, *, host: str, port: int, log_file: Path) -> subprocess.Popen:
    """`xray-pipeline serve` in its own process group, logging to `log_file`."""
    env = {**os.environ, **child_env(settings, list(settings.logfiles))}
    out = log_file.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "xray_pipeline.cli", "serve", "--host", host, "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_reset_sigint,
    )  # fmt: skip


def last_sensor_tick(settings: Settings) -> float | None:
    """The time of the newest recorded sensor tick in the instance, or None."""
    try:
        with connect(dagster_storage_url(settings).replace("+psycopg2", ""), timeout=2) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM max(timestamp)) FROM job_ticks"
            ).fetchone()
    except (DatabaseError, psycopg.Error):
        return None
    return float(row[0]) if row and row[0] is not None else None


def wait_ready(settings: Settings, proc: subprocess.Popen, *, timeout: float) -> bool:
    """Wait for the first sensor tick after now; False when the group died or time ran out."""
    started = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        tick = last_sensor_tick(settings)
        if tick is not None and tick >= started:
            return True
        time.sleep(1)
    return False


def stop_group(proc: subprocess.Popen, *, grace: float = 20.0) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace`."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def child_env(settings: Settings, logfiles: list[str]) -> dict[str, str]:
    """The environment that makes the code location see these settings."""
    env = {
        "XRAY_DATABASE_URL": database_url(settings),
        "XRAY_PARSER_LOGFILE": ",".join(logfiles),
        "XRAY_PARSER_TIMEZONE": settings.timezone,
        "XRAY_HOME": str(settings.home),
    }
    if settings.node:
        env["XRAY_PARSER_NODE"] = settings.node
    if settings.config_path:
        env["XRAY_CONFIG"] = str(Path(settings.config_path).resolve())
    return env
