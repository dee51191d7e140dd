"""The fast path: one one-pass capture for the shapes of nearly every line of a real file."""

from functools import cache

import polars as pl

from xray_pipeline.core.parse.patterns import (
    DNS_FAST_REST,
    EMAIL_FOR_TOLERANT,
    FAST_CAPTURE,
    LEVEL_LINE,
    PORTLESS_SOURCES,
    REJECTED_EMAIL,
    URL,
)
from xray_pipeline.core.parse.steps import Steps, struct_field
from xray_pipeline.core.parse.values import as_port


def _fast_ok() -> pl.Expr:
    """What FAST_CAPTURE's loose classes leave out, checked on short strings: on an access
    line a source port unless the source is a portless one, a rejection reason that does not
    end in whitespace (the tolerant path strips it), an email that ends in no whitespace but
    spaces (trimmed here) and holds no glued record; on a dnsLog line the domain the
    tolerant path requires. (Its timestamp is TS's own shape, ASCII digits: the tolerant path
    finds only that one, and checking it in the capture costs less than after it.)"""
    portless = struct_field("f", "src_ip").is_in(PORTLESS_SOURCES) | struct_field(
        "f", "src_network"
    ).eq("unix")
    access_ok = (
        (struct_field("f", "src_port").is_not_null() | portless)
        & (
            struct_field("f", "reason").is_null()
            | ~struct_field("f", "reason").str.contains(r"\s$")
        )
        & (
            struct_field("f", "email").is_null()
            | ~struct_field("f", "email").str.contains(EMAIL_FOR_TOLERANT)
        )
    )
    # a dnsLog line has no source (access_ok is null), an access line no domain
    return (struct_field("d", "domain").is_not_null() | access_ok).fill_null(False)


def fast_rows(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The fast path's row columns of `lines` (see _fast_steps)."""
    return _fast_steps()(lines)


@cache
def _fast_steps() -> Steps:
    """Every line -> the row columns as the fast path sees them, `fast` saying which lines
    it takes. Only `kind` and `status` are masked by it: on the other lines the fields are
    null or, where the capture matched but _fast_ok() did not, overwritten by the tolerant
    path (classify() writes every row column of those lines). The detour stays whole here:
    DetourTags looks its tags up. A dnsLog line's rest and a URL are read
    by the tolerant path's own regexes (on the few lines that have them), and an error-log
    line, which no one-pass regex can tell from a bracketed source, by LEVEL_LINE on the
    lines the capture did not take."""
    taken = pl.col("taken")
    reason = struct_field("f", "reason")
    email = struct_field("f", "email")
    is_dns = struct_field("f", "server").is_not_null()
    level_ts = pl.col("level_ts")
    return (
        Steps()
        .with_columns(pl.col("text").str.extract_groups(FAST_CAPTURE).alias("f"))
        .with_columns(
            struct_field("f", "dns").str.extract_groups(DNS_FAST_REST).alias("d"),
            struct_field("f", "dest_url").str.extract_groups(URL).alias("u"),
        )
        .with_columns(_fast_ok().alias("taken"))
        .with_columns(
            pl.when(~taken).then(pl.col("text")).str.extract(LEVEL_LINE, 1).alias("level_ts")
        )
        .select(
            "line_no",
            "byte_offset",
            "text",
            (taken | level_ts.is_not_null()).alias("fast"),
            pl.when(taken & is_dns)
            .then(pl.lit("dns"))
            .when(taken)
            .then(pl.lit("access"))
            .when(level_ts.is_not_null())
            .then(pl.lit("other"))
            .alias("kind"),
            pl.coalesce(struct_field("f", "ts"), level_ts).alias("ts"),
            struct_field("f", "src_network").alias("src_network"),
            pl.coalesce(struct_field("f", "src6"), struct_field("f", "src_ip")).alias("src_ip"),
            as_port(struct_field("f", "src_port")).alias("src_port"),
            pl.when(
                taken
                & (
                    struct_field("f", "dest_network").is_not_null()
                    | struct_field("f", "dest_url").is_not_null()
                )
            )
            .then(pl.lit("accepted"))
            .when(taken & reason.is_not_null())
            .then(pl.lit("rejected"))
            .alias("status"),
            struct_field("f", "dest_network").alias("dest_network"),
            # FAST_CAPTURE's URL host is never empty nor bracketed: URL's `h` it is. The rare
            # hosts are merged first: one pass over the common one (measured: a quarter less)
            pl.coalesce(
                struct_field("f", "dest_host"),
                pl.coalesce(
                    struct_field("f", "dest6"),
                    struct_field("u", "h"),
                    struct_field("d", "domain").str.strip_suffix("."),
                ),
            ).alias("dest_host"),
            pl.coalesce(
                as_port(struct_field("f", "dest_port")), as_port(struct_field("u", "p"))
            ).alias("dest_port"),
            struct_field("f", "dest_url").alias("dest_url"),
            struct_field("f", "detour").alias("detour"),
            pl.coalesce(
                # only V2Ray 4.21-4.33's `email:x ` ends in a space: trimmed where it does
                pl.when(email.str.ends_with(" "))
                .then(email.str.strip_chars_end())
                .otherwise(email),
                reason.str.extract(REJECTED_EMAIL, 1),
            ).alias("email"),
            pl.coalesce(reason, struct_field("d", "error")).alias("reason"),
            pl.when(level_ts.is_not_null()).then(pl.lit("error_log")).alias("other_reason"),
            struct_field("f", "server").alias("server"),
            struct_field("d", "dns_status").alias("dns_status"),
            struct_field("d", "ips").alias("ips"),
            struct_field("d", "elapsed").alias("elapsed"),
        )
    )
