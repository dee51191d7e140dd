"""Load one parsed chunk in one transaction: dims upsert, COPY into daily partitions, ledger."""

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg import sql

from xray_pipeline.core.db.partitions import ensure_partitions
from xray_pipeline.core.ingest.references import SourceRef, upsert_endpoints, upsert_names
from xray_pipeline.core.parse import ParsedChunk
from xray_pipeline.core.privacy.forget import drop_forgotten
from xray_pipeline.core.privacy.places import chunk_addresses, store_places
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy

LOGS_COLUMNS = (
    "ts",
    "source_id",
    "byte_offset",
    "ingest_id",
    "src_protocol_id",
    "src_ip",
    "src_host",
    "src_port",
    "status",
    "dest_protocol_id",
    "endpoint_id",
    "dest_url",
    "inbound_tag_id",
    "outbound_tag_id",
    "user_id",
    "reason",
)
DNS_COLUMNS = (
    "ts",
    "source_id",
    "byte_offset",
    "ingest_id",
    "server",
    "status",
    "domain",
    "answers",
    "elapsed",
    "error",
)
REJECT_COLUMNS = ("source_id", "byte_offset", "ingest_id", "ts", "reason", "raw")


@dataclass
class LoadResult:
    """What one chunk load did; `already_loaded` when the ledger had the range."""

    source: str
    start_offset: int
    end_offset: int
    already_loaded: bool = False
    ingest_id: int | None = None
    lines: int = 0
    access_rows: int = 0
    dns_rows: int = 0
    reject_rows: int = 0
    new_users: int = 0
    new_endpoints: int = 0
    new_protocols: int = 0
    new_tags: int = 0
    new_places: int = 0
    days: list[dt.date] = field(default_factory=list)
    oldest_ts: dt.datetime | None = None
    newest_ts: dt.datetime | None = None

    @property
    def bytes(self) -> int:
        return self.end_offset - self.start_offset


def chunk_days(parsed: ParsedChunk) -> list[dt.date]:
    """The local days (in the parse's zone) of the chunk's access rows."""
    if parsed.access.is_empty():
        return []
    return sorted(parsed.access.select(pl.col("ts").dt.date().unique()).to_series().to_list())


def _csv(frame: pl.DataFrame, columns: tuple[str, ...]) -> bytes:
    if frame.is_empty():
        return b""
    buffer = io.BytesIO()
    frame.select(columns).write_csv(
        buffer, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z"
    )
    return buffer.getvalue()


def copy_prepared(conn: psycopg.Connection, prepared: "PreparedChunk") -> None:
    """COPY a prepared chunk's rows into logs, dns_queries and rejects (caller's transaction)."""
    _copy_bytes(conn, "logs", LOGS_COLUMNS, prepared.logs_csv)
    _copy_bytes(conn, "dns_queries", DNS_COLUMNS, prepared.dns_csv)
    _copy_bytes(conn, "rejects", REJECT_COLUMNS, prepared.rejects_csv)


def _copy_bytes(conn: psycopg.Connection, table: str, columns: tuple[str, ...], data: bytes):
    if not data:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        copy.write(data)


def _pg_array(col: pl.Expr) -> pl.Expr:
    """A list of strings as a PostgreSQL array literal: {"a","b"}."""
    quoted = col.list.eval(
        pl.concat_str(
            pl.lit('"'),
            pl.element()
            .str.replace_all("\\", "\\\\", literal=True)
            .str.replace_all('"', '\\"', literal=True),
            pl.lit('"'),
        )
    )
    return pl.concat_str(pl.lit("{"), quoted.list.join(","), pl.lit("}"))


def build_log_rows(
    conn: psycopg.Connection,
    access: pl.DataFrame,
    source_id: int,
    ingest_id: int,
    policy: RowPolicy = DEFAULT_POLICY,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Access rows -> rows of `logs` with reference ids (dims upserted set-wise), sources and
    destinations kept as `policy` says, their places stored in ip_places."""
    access = policy.destinations(access)
    sources = policy.sources(access["src_ip"].drop_nulls().unique().to_list())
    new_places = store_places(conn, policy.geoip, chunk_addresses(sources, access))
    protocols, new_protocols = upsert_names(
        conn,
        "protocols",
        "name",
        sorted(
            set(access["src_network"].drop_nulls().unique().to_list())
            | set(access["dest_network"].drop_nulls().unique().to_list())
        ),
    )
    # sorted: concurrent loads then insert shared keys in the same order (no deadlock)
    users, new_users = upsert_names(
        conn, "users", "email", sorted(access["email"].drop_nulls().unique().to_list())
    )
    tags, new_tags = upsert_names(
        conn,
        "tags",
        "name",
        sorted(
            set(access["inbound_tag"].drop_nulls().unique().to_list())
            | set(access["outbound_tag"].drop_nulls().unique().to_list())
        ),
    )
    pairs = (
        access.select("dest_host", "dest_port")
        .drop_nulls("dest_host")
        .unique()
        .sort("dest_host", "dest_port", nulls_last=True)
    )
    endpoints, new_endpoints = upsert_endpoints(conn, pairs)

    proto = protocols.rename({"name": "key"})
    rows = (
        access.lazy()
        .join(proto.lazy().rename({"id": "src_protocol_id"}), left_on="src_network",
              right_on="key", how="left")
        .join(proto.lazy().rename({"id": "dest_protocol_id"}), left_on="dest_network",
              right_on="key", how="left")
        .join(users.lazy().rename({"id": "user_id"}), on="email", how="left")
        .join(tags.lazy().rename({"name": "inbound_tag", "id": "inbound_tag_id"}),
              on="inbound_tag", how="left")
        .join(tags.lazy().rename({"name": "outbound_tag", "id": "outbound_tag_id"}),
              on="outbound_tag", how="left")
        .join(endpoints.lazy(), on=["dest_host", "dest_port"], how="left", nulls_equal=True)
        .join(sources.lazy().drop("address"), on="src_ip", how="left")
        .with_columns(
            pl.lit(source_id).alias("source_id"),
            pl.lit(ingest_id).alias("ingest_id"),
            pl.col("ts").dt.convert_time_zone("UTC"),
            pl.col("stored_ip").alias("src_ip"),
            pl.col("stored_host").alias("src_host"),
        )
        .select(LOGS_COLUMNS)
        .collect()
    )  # fmt: skip
    counts = {
        "new_users": new_users,
        "new_endpoints": new_endpoints,
        "new_protocols": new_protocols,
        "new_tags": new_tags,
        "new_places": new_places,
    }
    return rows, counts


@dataclass
class PreparedChunk:
    """A parsed chunk turned into COPY-ready CSV for its three tables, ids resolved."""

    parsed: ParsedChunk
    ingest_id: int
    logs_csv: bytes
    dns_csv: bytes
    rejects_csv: bytes
    counts: dict[str, int]
    days: list[dt.date]
    erased: int = 0


def prepare_chunk(
    conn: psycopg.Connection,
    parsed: ParsedChunk,
    source: SourceRef,
    *,
    timezone: str,
    ingest_id: int | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> PreparedChunk:
    """Everything a load needs before its transaction: partitions, reference ids, CSV.

    It runs on its own autocommitted connection, so that it can overlap the COPY of the
    previous chunk. What it writes is idempotent and harmless on its own: reference values
    (users, tags, endpoints, protocols), the day's partition, an ingest id from the sequence.
    """
    parsed, erased = drop_forgotten(conn, parsed)
    days = chunk_days(parsed)
    if days:
        ensure_partitions(conn, days, timezone)
    if ingest_id is None:
        ingest_id = conn.execute(
            "SELECT nextval(pg_get_serial_sequence('ingest_ledger', 'id'))"
        ).fetchone()[0]
    logs, counts = build_log_rows(conn, parsed.access, source.id, ingest_id, policy)
    dns = parsed.dns.with_columns(
        pl.lit(source.id).alias("source_id"),
        pl.lit(ingest_id).alias("ingest_id"),
        pl.col("ts").dt.convert_time_zone("UTC"),
        pl.col("dns_status").alias("status"),
        _pg_array(pl.col("answers")).alias("answers"),
        pl.concat_str(
            pl.col("elapsed").dt.total_microseconds().cast(pl.String),
            pl.lit(" microseconds"),
        ).alias("elapsed"),
    )
    rejects = parsed.rejects.with_columns(
        pl.lit(source.id).alias("source_id"),
        pl.lit(ingest_id).alias("ingest_id"),
        pl.col("ts").dt.convert_time_zone("UTC"),
    )
    return PreparedChunk(
        parsed=parsed,
        ingest_id=ingest_id,
        logs_csv=_csv(logs, LOGS_COLUMNS),
        dns_csv=_csv(dns, DNS_COLUMNS),
        rejects_csv=_csv(rejects, REJECT_COLUMNS),
        counts=counts,
        days=days,
        erased=erased,
    )


def commit_chunk(
    conn: psycopg.Connection,
    prepared: PreparedChunk,
    source: SourceRef,
    *,
    run_id: str | None,
    status: str = "loaded",
    before_commit: Callable[[], None] | None = None,
) -> LoadResult:
    """The ledger row and the three COPYs in one transaction: all of the chunk or nothing.

    A range the ledger already holds (or one overlapping it) is not loaded again: the result
    says `already_loaded`. `before_commit` lets tests crash a load at its most delicate point.
    """
    parsed = prepared.parsed
    access = parsed.access
    result = LoadResult(source.path, parsed.base_offset, parsed.end_offset)
    first_ts = access["ts"].min() if not access.is_empty() else None
    last_ts = access["ts"].max() if not access.is_empty() else None
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO ingest_ledger (id, source_id, start_offset, end_offset, status, run_id,
                lines, access_rows, dns_rows, reject_rows, first_ts, last_ts, erased)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            (
                prepared.ingest_id,
                source.id,
                parsed.base_offset,
                parsed.end_offset,
                status,
                run_id,
                parsed.line_count,
                access.height,
                parsed.dns.height,
                parsed.rejects.height,
                first_ts,
                last_ts,
                prepared.erased,
            ),
        ).fetchone()
        if row is None:
            result.already_loaded = True
            return result
        copy_prepared(conn, prepared)
        if before_commit is not None:
            before_commit()
    result.ingest_id = prepared.ingest_id
    result.lines = parsed.line_count
    result.access_rows = access.height
    result.dns_rows = parsed.dns.height
    result.reject_rows = parsed.rejects.height
    result.days = prepared.days
    result.oldest_ts = first_ts
    result.newest_ts = last_ts
    for key, value in prepared.counts.items():
        setattr(result, key, value)
    return result


def load_chunk(
    conn: psycopg.Connection,
    parsed: ParsedChunk,
    source: SourceRef,
    *,
    run_id: str | None,
    timezone: str,
    status: str = "loaded",
    before_commit: Callable[[], None] | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> LoadResult:
    """Load `parsed` (the bytes [base_offset, end_offset) of `source`) exactly once, on one
    connection: prepare, then commit (see prepare_chunk and commit_chunk)."""
    previous = conn.autocommit
    conn.commit()
    conn.autocommit = True
    try:
        prepared = prepare_chunk(conn, parsed, source, timezone=timezone, policy=policy)
    finally:
        conn.autocommit = previous
    return commit_chunk(
        conn, prepared, source, run_id=run_id, status=status, before_commit=before_commit
    )
