"""The rows a load writes: parsed frames turned into rows of `logs` (reference ids resolved,
sources and destinations as the row policy keeps them), `dns_queries` and `rejects`, as CSV for
COPY; and what a load did (`LoadResult`). The transaction itself is batch.py's."""

import datetime as dt
import io
from dataclasses import dataclass, field

import polars as pl
import psycopg
from psycopg import sql

from xray_pipeline.core.ingest.references import upsert_endpoints, upsert_names
from xray_pipeline.core.privacy.places import chunk_addresses, store_places
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy

LOGS_COLUMNS = (
    "ts",
    "source_id",
    "byte_offset",
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
    "server",
    "status",
    "domain",
    "answers",
    "elapsed",
    "error",
)
REJECT_COLUMNS = ("source_id", "byte_offset", "ts", "reason", "raw")


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


def chunk_days(access: pl.DataFrame) -> list[dt.date]:
    """The local days (in the parse's zone) of access rows."""
    if access.is_empty():
        return []
    return sorted(access.select(pl.col("ts").dt.date().unique()).to_series().to_list())


def csv_of(frame: pl.DataFrame, columns: tuple[str, ...]) -> bytes:
    if frame.is_empty():
        return b""
    buffer = io.BytesIO()
    frame.select(columns).write_csv(
        buffer, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%z"
    )
    return buffer.getvalue()


def copy_csv(conn: psycopg.Connection, table: str, columns: tuple[str, ...], data: bytes) -> None:
    """COPY `data` (CSV of `columns`) into `table`, in the caller's transaction."""
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
    source_id: int | None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Access rows -> rows of `logs` with reference ids (dims upserted set-wise), sources and
    destinations kept as `policy` says, their places stored in ip_places. `source_id`: the
    rows' own, or None where `access` has it as a column (a batch, whose `part` column is
    kept too)."""
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
            *_ids(source_id),
            pl.col("ts").dt.convert_time_zone("UTC"),
            pl.col("stored_ip").alias("src_ip"),
            pl.col("stored_host").alias("src_host"),
        )
        .select(*LOGS_COLUMNS, *(["part"] if "part" in access.columns else []))
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


def _ids(source_id: int | None) -> list[pl.Expr]:
    return [] if source_id is None else [pl.lit(source_id, pl.Int64).alias("source_id")]


def dns_rows(dns: pl.DataFrame, source_id: int | None) -> pl.DataFrame:
    """The dnsLog frame as rows of `dns_queries`."""
    return dns.with_columns(
        *_ids(source_id),
        pl.col("ts").dt.convert_time_zone("UTC"),
        pl.col("dns_status").alias("status"),
        _pg_array(pl.col("answers")).alias("answers"),
        pl.concat_str(
            pl.col("elapsed").dt.total_microseconds().cast(pl.String),
            pl.lit(" microseconds"),
        ).alias("elapsed"),
    )


def reject_rows(rejects: pl.DataFrame, source_id: int | None) -> pl.DataFrame:
    """The rejects frame as rows of `rejects`."""
    return rejects.with_columns(*_ids(source_id), pl.col("ts").dt.convert_time_zone("UTC"))
