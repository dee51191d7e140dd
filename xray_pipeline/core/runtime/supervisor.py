"""Run the Dagster webserver and daemon (`dagster dev`) as one child process group.

Used by `xray-pipeline up` and `demo`: one instance per XRAY_HOME (a locked pid file), the
instance's dagster.yaml written from the project's template with the storage URL of the
configured server, readiness = the first sensor tick (a web server can look healthy while the
daemon is stuck), and a shutdown that leaves no process behind.
"""

import datetime as dt
import fcntl
import os
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from xray_pipeline.core.db.connect import DatabaseError, connect
from xray_pipeline.core.db.session import (
    dagster_storage_url,
    database_url,
    embedded_server,
    session,
    with_database,
)
from xray_pipeline.core.ingest.files import expand_paths, rotated_siblings
from xray_pipeline.core.ingest.plan import earliest_day
from xray_pipeline.core.runtime.demo import Demo
from xray_pipeline.core.runtime.processes import PROJECT_ROOT, reset_sigint, stop_group
from xray_pipeline.settings import Settings


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


def start_date_file(settings: Settings) -> Path:
    """Where the first `up` or `demo` records the first day of the partitions."""
    return settings.home / "dagster" / "start_date"


def recorded_start_date(settings: Settings) -> str | None:
    try:
        return dt.date.fromisoformat(start_date_file(settings).read_text().strip()).isoformat()
    except (OSError, ValueError):
        return None


def record_start_date(settings: Settings, logfiles: list[str]) -> str:
    """The first day of the partitions, recorded once: the first day of the logs (and of
    their rotated copies), today when they hold none; [dagster] start_date wins."""
    if settings.dagster.start_date:
        return settings.dagster.start_date
    recorded = recorded_start_date(settings)
    if recorded:
        return recorded
    paths = [c for p in expand_paths(logfiles) for c in (p, *rotated_siblings(p))]
    today = dt.datetime.now(zoneinfo.ZoneInfo(settings.timezone)).date()
    first = min(earliest_day(paths) or today, today)
    start_date_file(settings).parent.mkdir(parents=True, exist_ok=True)
    start_date_file(settings).write_text(first.isoformat() + "\n")
    return first.isoformat()


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
        preexec_fn=reset_sigint,
    )  # fmt: skip


def start_api(settings: Settings, *, host: str, port: int, log_file: Path) -> subprocess.Popen:
    """`xray-pipeline serve` in its own process group, logging to `log_file`."""
    env = {**os.environ, **child_env(settings, list(settings.logfiles))}
    out = log_file.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "xray_pipeline.cli", "serve", "--host", host, "--port", str(port)],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=reset_sigint,
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
    secrets = {  # so that the Dagster UI shows the variables, not the secrets
        "XRAY_PRIVACY_SECRET": settings.privacy.secret,
        "XRAY_ALERTS_WEBHOOK_SECRET": settings.alerts.webhook_secret,
        "XRAY_TELEGRAM_BOT_TOKEN": settings.alerts.telegram_token,
    }
    for variable, secret in secrets.items():
        if secret:
            env[variable] = secret.get_secret_value()
    for key in ("country_db", "asn_db"):  # the demo's synthetic databases come this way
        if value := getattr(settings.geoip, key):
            env[f"XRAY_GEOIP_{key.upper()}"] = str(Path(value).expanduser().resolve())
    if settings.config_path:
        env["XRAY_CONFIG"] = str(Path(settings.config_path).resolve())
    return env


@dataclass
class Running:
    """The supervised children: `dagster dev` (webserver and daemon), the API sidecar, and
    the demo's parts."""

    dagster: subprocess.Popen
    dagster_log: Path
    api: subprocess.Popen | None = None
    demo: Demo | None = None


@contextmanager
def supervised(
    settings: Settings,
    logfiles: list[str],
    *,
    host: str,
    port: int,
    api_port: int | None = None,
    demo: Demo | None = None,
    before_start: Callable[[], None] | None = None,
) -> Iterator[Running]:
    """The services of `up` and `demo`, one instance per XRAY_HOME, until the block ends:
    the database (the embedded server is started, and stopped again if this started it),
    `dagster dev` and the API sidecar (with `api_port`), and the `demo`'s writers and nodes
    (these ship to the sidecar). On the way out every child process group is stopped.
    `before_start` runs once the instance lock is held (port checks)."""
    lock = InstanceLock(settings.home / "up.pid")
    lock.acquire()
    started_db = False
    children: list[subprocess.Popen] = []
    try:
        if before_start is not None:
            before_start()
        if settings.uses_embedded:
            started_db = not embedded_server(settings).status().running
        with session(settings) as conn:
            conn.commit()
        record_start_date(settings, logfiles)
        if demo is not None:
            demo.start()
        log_file = settings.home / "dagster" / "dagster-dev.log"
        dagster = start_dagster(
            settings,
            host=host,
            port=port,
            extra_env=child_env(settings, logfiles),
            log_file=log_file,
        )
        running = Running(dagster, log_file, demo=demo)
        children.append(dagster)
        if api_port:
            running.api = start_api(
                settings, host=host, port=api_port, log_file=settings.home / "api.log"
            )
            children.append(running.api)
            if demo is not None:
                central = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{api_port}"
                children.extend(demo.start_shippers(settings, central))
        yield running
    finally:
        if demo is not None:
            demo.stop()
        for child in children:
            stop_group(child)
        if started_db:
            embedded_server(settings).stop()
        lock.release()
