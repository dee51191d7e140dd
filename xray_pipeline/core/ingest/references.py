"""The reference tables of a load: the source of a file, and the ids of users, endpoints, protocols
and tags (inserted when new)."""

from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import sql


@dataclass(frozen=True)
class SourceRef:
    """A registered source file: its id in `sources`, identity and path."""

    id: int
    identity: str
    path: str
    node: str | None = None


def register_source(
    conn: psycopg.Connection, identity: str, path: str, node: str | None = None
) -> SourceRef:
    """The `sources` row for this identity, created on first sight; the path is kept current."""
    row = conn.execute(
        """
        INSERT INTO sources (identity, path, node) VALUES (%s, %s, %s)
        ON CONFLICT (identity) DO UPDATE SET path = EXCLUDED.path,
            node = COALESCE(EXCLUDED.node, sources.node)
        RETURNING id, node
        """,
        (identity, path, node),
    ).fetchone()
    assert row is not None
    return SourceRef(id=row[0], identity=identity, path=path, node=row[1])


def register_sources(
    conn: psycopg.Connection, files: list[tuple[str, str, str | None]]
) -> list[SourceRef]:
    """register_source for many (identity, path, node) at once: one statement, rows taken in
    the identities' order (two loads never wait for each other in a circle)."""
    if not files:
        return []
    rows = conn.execute(
        """
        INSERT INTO sources (identity, path, node)
        SELECT i, p, n FROM unnest(%s::text[], %s::text[], %s::text[]) AS u (i, p, n)
        ORDER BY i
        ON CONFLICT (identity) DO UPDATE SET path = EXCLUDED.path,
            node = COALESCE(EXCLUDED.node, sources.node)
        RETURNING identity, id, node
        """,
        [list(column) for column in zip(*files, strict=True)],
    ).fetchall()
    found = {identity: (sid, node) for identity, sid, node in rows}
    return [
        SourceRef(id=found[i][0], identity=i, path=path, node=found[i][1]) for i, path, _ in files
    ]


def upsert_names(
    conn: psycopg.Connection, table: str, column: str, names: list[str]
) -> tuple[pl.DataFrame, int]:
    """Insert the missing names (one statement), then read all their ids (one statement)."""
    if not names:
        return pl.DataFrame(schema={column: pl.String, "id": pl.Int64}), 0
    names_sql = {"table": sql.Identifier(table), "column": sql.Identifier(column)}
    inserted = conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({column}) SELECT unnest(%s::text[]) "
            "ON CONFLICT ({column}) DO NOTHING"
        ).format(**names_sql),
        (names,),
    ).rowcount
    rows = conn.execute(
        sql.SQL("SELECT {column}, id FROM {table} WHERE {column} = ANY(%s)").format(**names_sql),
        (names,),
    ).fetchall()
    frame = pl.DataFrame(rows, schema={column: pl.String, "id": pl.Int64}, orient="row")
    return frame, max(inserted, 0)


def upsert_endpoints(conn: psycopg.Connection, pairs: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    schema = {"dest_host": pl.String, "dest_port": pl.Int32, "endpoint_id": pl.Int64}
    if pairs.is_empty():
        return pl.DataFrame(schema=schema), 0
    hosts = pairs["dest_host"].to_list()
    ports = pairs["dest_port"].to_list()
    inserted = conn.execute(
        "INSERT INTO endpoints (host, port) SELECT * FROM unnest(%s::text[], %s::int[]) "
        "ON CONFLICT ON CONSTRAINT endpoints_host_port_key DO NOTHING",
        (hosts, ports),
    ).rowcount
    rows = conn.execute(
        "SELECT u.host, u.port, e.id FROM unnest(%s::text[], %s::int[]) AS u(host, port) "
        "JOIN endpoints e ON e.host = u.host AND e.port IS NOT DISTINCT FROM u.port",
        (hosts, ports),
    ).fetchall()
    return pl.DataFrame(rows, schema=schema, orient="row"), max(inserted, 0)
