"""A real PostgreSQL for the tests (the embedded server, or XRAY_TEST_DATABASE_URL), and the
markers that say what a test needs: `db` (a fixture of this file), `dagster` (its module uses
Dagster), `browser` and `slow` (set by the modules). `uv run pytest -m "not slow"` is the
quick loop; `uv run pytest` runs everything."""

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.embedded import EmbeddedServer
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.db.session import with_database
from xray_pipeline.core.synthetic.mmdb import write_mmdb

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEST_HOME = PROJECT_ROOT / ".xray" / "test"
TEMPLATE_DB = "xray_test_template"
DATABASE_FIXTURES = {
    "pg_server_url",
    "template_db",
    "db_url",
    "fresh_db_url",
    "empty_db_url",
    "conn",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "dg", None) is not None:
            item.add_marker(pytest.mark.dagster)


@contextmanager
def live_api(url: str, port: int | None = None, **options) -> Iterator[str]:
    """The sidecar served by uvicorn on loopback (`port`, default a free one), in a thread."""
    import uvicorn

    from xray_pipeline.api.main import create_app

    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(url, **options), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_cli(
    *args: str,
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
    preexec_fn=None,
) -> subprocess.CompletedProcess:
    """`xray-pipeline ARGS` in a child process, with this environment minus its XRAY_* and
    DATABASE_URL variables, plus `env` (and `preexec_fn` run in the child before it starts);
    never raises on a non-zero exit."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    full.pop("DATABASE_URL", None)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "xray_pipeline.cli", *args],
        env=full,
        cwd=cwd or PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=preexec_fn,
    )


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a maintenance database on a running server (the embedded one by default)."""
    external = os.environ.get("XRAY_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # The data folder stays under the project's state folder: the embedded package opens
    # read/execute on its parent folders when run as root.
    server = EmbeddedServer(TEST_HOME)
    was_running = server.status().running
    server.start()
    yield server.url("postgres")
    if not was_running:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> str:
    """A database with the schema applied, cloned for each test module."""
    with connect(pg_server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE_DB))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    with connect(with_database(pg_server_url, TEMPLATE_DB)) as conn:
        apply_migrations(conn)
        conn.commit()
    return TEMPLATE_DB


def _fresh_database(server_url: str, template: str, label: str) -> str:
    name = f"xt_{re.sub(r'[^a-z0-9]+', '_', label.lower())[-30:]}_{uuid.uuid4().hex[:8]}"
    with connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name


def _drop_database(server_url: str, name: str) -> None:
    with connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def db_url(pg_server_url: str, template_db: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the schema applied, for one test module."""
    name = _fresh_database(pg_server_url, template_db, request.module.__name__)
    yield with_database(pg_server_url, name)
    _drop_database(pg_server_url, name)


@pytest.fixture
def fresh_db_url(
    pg_server_url: str, template_db: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh database with the schema applied, for one test."""
    name = _fresh_database(pg_server_url, template_db, request.node.name)
    yield with_database(pg_server_url, name)
    _drop_database(pg_server_url, name)


@pytest.fixture
def empty_db_url(pg_server_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database without the schema."""
    name = _fresh_database(pg_server_url, "template1", request.node.name)
    yield with_database(pg_server_url, name)
    _drop_database(pg_server_url, name)


@pytest.fixture
def conn(fresh_db_url: str) -> Iterator[psycopg.Connection]:
    with connect(fresh_db_url) as connection:
        yield connection


def text_traces(conn: psycopg.Connection, texts: list[str]) -> list[tuple[str, str]]:
    """Every (table, column) whose text, address, array or JSON holds one of `texts`: every
    such column of every table in the schema, searched (the partitions of logs through logs)."""
    columns = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public' AND data_type IN ('text', 'inet', 'ARRAY', "
        "'character varying', 'jsonb', 'json') AND table_name NOT LIKE 'logs\\_%'"
    ).fetchall()
    found = []
    for table, column in columns:
        hit = conn.execute(
            sql.SQL("SELECT 1 FROM {} WHERE {}::text ILIKE ANY(%s) LIMIT 1").format(
                sql.Identifier(table), sql.Identifier(column)
            ),
            ([f"%{t}%" for t in texts],),
        ).fetchone()
        if hit:
            found.append((table, column))
    conn.commit()
    return sorted(set(found))


def archive_traces(root: Path, texts: list[str]) -> list[tuple[str, str]]:
    """Every (file, column) of the Parquet archive under `root` whose values hold one of
    `texts` (lists and every other type read as text), and every other file there (a
    manifest) whose bytes hold one."""
    import polars as pl

    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix != ".parquet":
            data = path.read_bytes().lower()
            found += [(str(path), "") for t in texts if t.lower().encode() in data]
            continue
        frame = pl.read_parquet(path)
        for column in frame.columns:
            values = frame[column]
            if isinstance(values.dtype, pl.List):
                values = values.list.join("|")
            values = values.cast(pl.String).str.to_lowercase()
            if any(values.str.contains(t.lower(), literal=True).any() for t in texts):
                found.append((str(path.relative_to(root)), column))
    return sorted(set(found))


def write_geo_databases(folder: Path) -> tuple[Path, Path]:
    """A country and an ASN database over the documentation ranges: 192.0.2.0/24 in DE (its
    lower half AS64500 "Example Mobile"), 2001:db8::/32 in NL, 203.0.113.0/24 AS64501."""
    country = write_mmdb(
        folder / "country.mmdb",
        {
            "192.0.2.0/24": {"country": {"iso_code": "DE"}},
            "2001:db8::/32": {"country": {"iso_code": "NL"}},
        },
        "Test-Country",
    )
    asn = write_mmdb(
        folder / "asn.mmdb",
        {
            "192.0.2.0/25": {
                "autonomous_system_number": 64500,
                "autonomous_system_organization": "Example Mobile",
            },
            "203.0.113.0/24": {"autonomous_system_number": 64501},
        },
        "Test-ASN",
    )
    return country, asn


# the longest a test that stamps its lines "now" takes
SAME_DAY_MARGIN_S = 90


@pytest.fixture
def same_day() -> None:
    """Start the test only when the UTC day will not change during it: a test that writes
    lines stamped now and follows today's runs (a tail run loads its own day's lines only)
    waits out a midnight closer than SAME_DAY_MARGIN_S."""
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    if (left := (midnight - now).total_seconds()) < SAME_DAY_MARGIN_S:
        time.sleep(left + 1)


@pytest.fixture
def instance():
    """An ephemeral Dagster instance for one test."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst
