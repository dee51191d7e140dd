"""The configured database: its URL (the embedded server or an external one), a session with the
schema applied, the API's and Dagster's URLs."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from xray_pipeline.core.db.connect import DATABASE_NAME, connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.settings import Settings


def embedded_server(settings: Settings):
    """The embedded server of the settings' state folder (core/embedded.py)."""
    from xray_pipeline.core.db.embedded import EmbeddedServer

    return EmbeddedServer(settings.home)


def psql_executable(settings: Settings) -> str:
    """The psql of the embedded package, else one on PATH."""
    from xray_pipeline.core.db.embedded import psql_executable as find

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
