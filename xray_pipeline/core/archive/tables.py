"""What a day of the archive holds: per table, the Parquet schema (names resolved to values, so
that a file stands alone), the query that reads the rows from PostgreSQL and the sort order."""

from dataclasses import dataclass

import polars as pl

from xray_pipeline.core.db.migrations import load_query

# the version of the files' layout and columns, in each day's manifest; a reader refuses a
# version it does not know
SCHEMA_VERSION = 1
UTC_US = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class ArchivedTable:
    name: str
    schema: dict
    query: str
    # rows sorted so that a row group holds few users (a user's page reads few), then by time
    sort: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        """The columns that name a row (its line): a source and a byte offset."""
        return ("source_id", "byte_offset")


_COMMON = {
    "ts": UTC_US,
    "node": pl.String,
    "source": pl.String,
    "source_id": pl.Int32,
    "byte_offset": pl.Int64,
}
LOGS = ArchivedTable(
    "logs",
    {
        **_COMMON,
        "src_protocol": pl.String,
        "src_ip": pl.String,
        "src_host": pl.String,
        "src_port": pl.Int32,
        "status": pl.String,
        "dest_protocol": pl.String,
        "dest_host": pl.String,
        "dest_port": pl.Int32,
        "dest_url": pl.String,
        "inbound_tag": pl.String,
        "outbound_tag": pl.String,
        "user": pl.String,
        "reason": pl.String,
    },
    load_query("archive_logs"),
    ("user", "ts", "source_id", "byte_offset"),
)
DNS_QUERIES = ArchivedTable(
    "dns_queries",
    {
        **_COMMON,
        "server": pl.String,
        "status": pl.String,
        "domain": pl.String,
        "answers": pl.List(pl.String),
        "elapsed": pl.Duration("us"),
        "error": pl.String,
    },
    load_query("archive_dns_queries"),
    ("ts", "source_id", "byte_offset"),
)
REJECTS = ArchivedTable(
    "rejects",
    {**_COMMON, "reason": pl.String, "raw": pl.String},
    load_query("archive_rejects"),
    ("ts", "source_id", "byte_offset"),
)
TABLES = (LOGS, DNS_QUERIES, REJECTS)
