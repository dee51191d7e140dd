"""The tolerant path: every shape of the spec, collector prefixes and paste damage included."""

from functools import cache

import polars as pl

from xray_pipeline.core.parse.patterns import (
    ACCEPTED_REST,
    ACCESS,
    AFTER_DEST,
    DNS,
    DNS_TAIL,
    LEVEL,
    LOCATE_TS,
    PORTLESS_SOURCES,
    REJECTED_EMAIL,
    TS,
    URL,
)
from xray_pipeline.core.parse.steps import Steps, nonempty, struct_field
from xray_pipeline.core.parse.values import as_port


def tolerant_rows(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The tolerant grammar's row columns of `lines` (see _tolerant_steps)."""
    return _tolerant_steps()(lines)


@cache
def _tolerant_steps() -> Steps:
    """Every shape of the spec -> the row columns (`other_reason` for what is no record).

    Each step's struct is masked once to the lines it applies to (an access record's fields
    are null on a dnsLog line), so that the columns read from it need no condition of their
    own: on a few thousand lines a chunk, the number of expressions is most of the cost.
    """
    slow = pl.col("slow")
    # step 1: the Xray timestamp; most lines start with it (an anchored match, no capture),
    # the rest are searched for the first one anywhere (it skips collector prefixes)
    lead = slow.str.extract(rf"^{TS}", 0)
    staged = (
        Steps()
        .with_columns(pl.col("text").str.strip_chars().alias("slow"))
        .with_columns(lead.alias("lead"))
        .with_columns(
            pl.when(pl.col("lead").is_null()).then(slow).str.extract_groups(LOCATE_TS).alias("loc")
        )
        .with_columns(
            pl.coalesce(pl.col("lead"), struct_field("loc", "ts")).alias("ts"),
            pl.coalesce(
                slow.str.slice(pl.col("lead").str.len_chars()), struct_field("loc", "body"), slow
            )
            .str.strip_chars()
            .alias("body"),
        )
        .with_columns(
            pl.col("body").str.contains(LEVEL).alias("is_level"),
            pl.col("body").str.extract_groups(ACCESS).alias("a"),
            pl.col("body").str.extract_groups(DNS).alias("d"),
        )
    )
    a_port = as_port(struct_field("a", "src_port"))
    a_src = pl.coalesce(struct_field("a", "src_b"), struct_field("a", "src_h"))
    portless_ok = (
        a_port.is_not_null()
        | struct_field("a", "src_network").eq("unix")
        | a_src.is_in(PORTLESS_SOURCES)
    )
    is_dns = ~pl.col("is_level") & struct_field("d", "server").is_not_null()
    is_access = (
        ~pl.col("is_level") & ~is_dns & struct_field("a", "status").is_not_null() & portless_ok
    )
    staged = staged.with_columns(
        pl.when(is_access).then(pl.col("a")).alias("a"),
        pl.when(is_dns).then(pl.col("d")).alias("d"),
        pl.when(is_dns)
        .then(pl.lit("dns"))
        .when(is_access)
        .then(pl.lit("access"))
        .otherwise(pl.lit("other"))
        .alias("kind"),
    )
    # from here `a` is null but on access records, `d` but on dnsLog lines
    status = struct_field("a", "status")
    accepted = status.eq("accepted")
    rejected_rest = pl.when(status.eq("rejected")).then(struct_field("a", "rest"))
    staged = staged.with_columns(
        pl.when(accepted)
        .then(struct_field("a", "rest"))
        .str.extract_groups(ACCEPTED_REST)
        .alias("r"),
        struct_field("d", "dtail").str.extract_groups(DNS_TAIL).alias("dt"),
    )
    dest_found = (
        struct_field("r", "dest_network").is_not_null() | struct_field("r", "url").is_not_null()
    )
    after = (
        pl.when(dest_found)
        .then(struct_field("r", "after"))
        .when(accepted)
        .then(struct_field("a", "rest"))
    )
    staged = staged.with_columns(
        after.str.extract_groups(AFTER_DEST).alias("t"),
        struct_field("r", "url").str.extract_groups(URL).alias("u"),
    )
    other_reason = (
        pl.when(pl.col("text").str.strip_chars() == "")
        .then(pl.lit("empty"))
        .when(pl.col("is_level"))
        .then(pl.lit("error_log"))
        .otherwise(pl.lit("not_a_record"))
    )
    dest_host = pl.coalesce(
        struct_field("r", "dest_b"),
        struct_field("r", "dest_h"),
        struct_field("u", "h6"),
        nonempty(struct_field("u", "h")),
        struct_field("d", "domain").str.strip_suffix("."),
    )
    return staged.select(
        "line_no",
        "byte_offset",
        "text",
        "kind",
        "ts",
        struct_field("a", "src_network").alias("src_network"),
        a_src.alias("src_ip"),
        a_port.alias("src_port"),
        status.alias("status"),
        struct_field("r", "dest_network").alias("dest_network"),
        dest_host.alias("dest_host"),
        as_port(pl.coalesce(struct_field("r", "dest_port"), struct_field("u", "p"))).alias(
            "dest_port"
        ),
        struct_field("r", "url").alias("dest_url"),
        struct_field("t", "inbound_tag").alias("inbound_tag"),
        struct_field("t", "outbound_tag").alias("outbound_tag"),
        pl.coalesce(struct_field("t", "email"), rejected_rest.str.extract(REJECTED_EMAIL, 1)).alias(
            "email"
        ),
        pl.coalesce(nonempty(rejected_rest), struct_field("dt", "error")).alias("reason"),
        pl.when(pl.col("kind").eq("other")).then(other_reason).alias("other_reason"),
        struct_field("d", "server").alias("server"),
        struct_field("d", "dns_status").alias("dns_status"),
        struct_field("dt", "ips").alias("ips"),
        struct_field("dt", "elapsed").alias("elapsed"),
    )
