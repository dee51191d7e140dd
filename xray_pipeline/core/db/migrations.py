"""SQL files: the numbered schema migrations and the named queries."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from xray_pipeline.core.db.connect import DatabaseError


def sql_dir() -> Path:
    """The numbered DDL files: `sql/` of a checkout, or the copy packaged in a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "sql", here.parents[2] / "sql"):
        if candidate.is_dir():
            return candidate
    raise DatabaseError("the sql/ folder of xray-pipeline is missing; reinstall the package")


def load_query(name: str) -> str:
    """A named query from sql/queries/<name>.sql."""
    return (sql_dir() / "queries" / f"{name}.sql").read_text(encoding="utf-8")


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
