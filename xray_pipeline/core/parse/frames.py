"""The parsed chunk: the access, dns and rejects frames made from the classified rows."""

from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np
import polars as pl

from xray_pipeline.core.parse.patterns import DURATION
from xray_pipeline.core.parse.steps import Steps
from xray_pipeline.core.parse.values import TS_FORMAT, duration_of, iso_ts
from xray_pipeline.core.schema import LINES_SCHEMA, access_schema, dns_schema, rejects_schema


@dataclass(frozen=True)
class ParsedChunk:
    """The three frames of one chunk; `lines` gives one canonical row per input line."""

    access: pl.DataFrame
    dns: pl.DataFrame
    rejects: pl.DataFrame
    rows: pl.DataFrame = field(repr=False)
    source: str
    base_offset: int
    end_offset: int

    @property
    def line_count(self) -> int:
        return self.rows.height

    @cached_property
    def lines(self) -> pl.DataFrame:
        """One row per input line, in order, with the spec's canonical fields (ts as printed,
        ISO form, no zone; every field but `kind` null for `other`). A time the zone skips
        (a DST gap: the wrong zone configured) is still printed: it is what the line says."""
        naive = pl.col("ts").str.to_datetime(TS_FORMAT, time_unit="us", strict=False)
        valid_ts = naive.is_not_null() & pl.col("kind").ne("other")
        return self.rows.select(
            [
                pl.when(valid_ts).then(iso_ts(pl.col("ts"))).alias("ts")
                if name == "ts"
                else pl.col(name)
                for name in LINES_SCHEMA
            ]
        ).cast(LINES_SCHEMA)


Frames = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]


@cache
def frame_steps(timezone: str) -> tuple[Steps, Steps, Steps]:
    """The access, dns and rejects frames, from classify()'s rows or the query that gives them."""
    bad_ts = pl.col("ts").is_not_null() & pl.col("ts_typed").is_null()
    is_access = pl.col("kind").eq("access") & pl.col("ts_typed").is_not_null()
    is_dns = pl.col("kind").eq("dns") & ~bad_ts
    access = (
        Steps()
        .filter(is_access)
        .select(
            [
                pl.col("ts_typed").alias("ts") if name == "ts" else pl.col(name)
                for name in access_schema(timezone)
            ]
        )
        .cast(access_schema(timezone))
    )
    dns = (
        Steps()
        .filter(is_dns)
        .with_columns(pl.col("elapsed").str.extract_groups(DURATION).alias("elapsed_parts"))
        .select(
            "line_no",
            "byte_offset",
            pl.col("ts_typed").alias("ts"),
            "server",
            "dns_status",
            pl.col("dest_host").alias("domain"),
            pl.when(pl.col("ips").str.strip_chars() == "")
            .then(pl.lit([], pl.List(pl.String)))
            .otherwise(pl.col("ips").str.split(", "))
            .alias("answers"),
            duration_of(pl.col("elapsed_parts")).alias("elapsed"),
            pl.col("reason").alias("error"),
        )
        .cast(dns_schema(timezone))
    )
    reject_reason = (
        pl.when(pl.col("kind").eq("other"))
        .then(pl.col("other_reason"))
        .when(bad_ts)
        .then(pl.lit("bad_timestamp"))
        .otherwise(pl.lit("no_timestamp"))
    )
    rejects = (
        Steps()
        .filter(~is_access & ~is_dns)
        .select(
            "line_no",
            "byte_offset",
            pl.col("ts_typed").alias("ts"),
            reject_reason.alias("reason"),
            pl.col("text").alias("raw"),
        )
        .cast(rejects_schema(timezone))
    )
    return access, dns, rejects


# PostgreSQL indexes these values (users, tags, endpoints, the daily source rollup), and a
# b-tree entry holds at most about 2,700 bytes: an access record with a longer one could
# never load. Such a line is kept in `rejects` as `value_too_long`, with its raw text.
MAX_VALUE_BYTES = 1024


INDEXED_VALUES = ("email", "inbound_tag", "outbound_tag", "dest_host", "src_ip")


def longest_line(lines: pl.DataFrame, end: int) -> int:
    """The byte length of the chunk's longest line, from the line starts (no string scan)."""
    starts = lines.get_column("byte_offset").to_numpy()
    if not len(starts):
        return 0
    return int(max(np.diff(starts).max(initial=0), end - starts[-1]))


def unindexable_to_rejects(
    access: pl.DataFrame, rejects: pl.DataFrame, rows: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Access records with a value longer than MAX_VALUE_BYTES, moved to the rejects."""
    too_long = pl.any_horizontal(
        pl.col(name).str.len_bytes() > MAX_VALUE_BYTES for name in INDEXED_VALUES
    ).fill_null(False)
    mask = access.select(too_long).to_series()
    if not mask.any():
        return access, rejects
    moved = access.filter(mask)
    raw = rows.get_column("text").gather(moved.get_column("line_no") - 1)
    extra = moved.select(
        "line_no", "byte_offset", "ts", pl.lit("value_too_long").alias("reason")
    ).with_columns(raw.alias("raw"))
    return access.filter(~mask), pl.concat([rejects, extra.cast(rejects.schema)]).sort("line_no")
