"""The abuse rules over a batch of access rows: pure functions (Polars, sliding windows by
time), no database. The caller hands them the rows of the subjects a load touched, from
`window` before the load's first row to its last, and gets the breaches with their evidence.

- IP limit: more than N distinct sources used by one user within W minutes, across nodes,
  counted by address, by prefix (IPv4 /24, IPv6 /64) or by ASN. What the rows keep is counted:
  a keyed hash is one address (its prefix is unknown), a masked network one prefix.
- Tagged traffic: more than K connections of one user routed to a watched tag within W minutes.
- Rejected storm: more than M rejected connections from one source within W minutes.
"""

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

import polars as pl

from xray_pipeline.core.privacy.policy import HASH_PREFIX, parse_ip
from xray_pipeline.settings.sections import RulesSettings

# the columns the rules read
DEFAULTS = RulesSettings()  # the defaults' one home: [rules]

ROWS_SCHEMA = {
    "ts": pl.Datetime("us", "UTC"),
    "user": pl.String,
    "source": pl.String,
    "node": pl.String,
    "country": pl.String,
    "asn": pl.Int64,
    "outbound_tag": pl.String,
    "status": pl.String,
}
COUNT_BY = ("address", "prefix", "asn")


@dataclass(frozen=True)
class IpLimitRule:
    limit: int = DEFAULTS.ip_limit
    window_minutes: int = DEFAULTS.ip_window_minutes
    count_by: str = DEFAULTS.ip_count_by

    def __post_init__(self) -> None:
        if self.count_by not in COUNT_BY:
            raise ValueError(f"count_by {self.count_by!r}: use address, prefix or asn")


@dataclass(frozen=True)
class TaggedRule:
    tags: tuple[str, ...] = DEFAULTS.watched_tags
    limit: int = DEFAULTS.tagged_limit
    window_minutes: int = DEFAULTS.tagged_window_minutes


@dataclass(frozen=True)
class RejectedRule:
    limit: int = DEFAULTS.rejected_limit
    window_minutes: int = DEFAULTS.rejected_window_minutes


@dataclass
class Breach:
    """A subject over a rule's limit: when first and last over it among the rows given, the
    highest count, and the evidence of the window at that peak."""

    rule: str
    subject: str
    first: dt.datetime
    last: dt.datetime
    peak: int
    limit: int
    evidence: list[dict] = field(default_factory=list)


def _unit(source: str | None, count_by: str) -> str | None:
    """What one source counts as (None: not a person's address, not counted)."""
    if not source:
        return None
    if source.startswith(HASH_PREFIX):
        return source
    if "/" in source:  # a masked network
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            return None
        return source
    ip = parse_ip(source)
    if ip is None:
        return None
    if count_by == "address":
        return str(ip)
    bits = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def with_units(rows: pl.DataFrame, count_by: str) -> pl.DataFrame:
    """`rows` with `unit`: decided once per distinct source (by ASN: the source's network,
    else its prefix)."""
    sources = rows["source"].drop_nulls().unique().to_list()
    base = "address" if count_by == "address" else "prefix"
    mapping = pl.DataFrame(
        {"source": sources, "unit": [_unit(s, base) for s in sources]},
        schema={"source": pl.String, "unit": pl.String},
    )
    rows = rows.join(mapping, on="source", how="left")
    if count_by == "asn":
        rows = rows.with_columns(
            pl.when(pl.col("asn").is_not_null() & pl.col("unit").is_not_null())
            .then(pl.concat_str(pl.lit("AS"), pl.col("asn").cast(pl.String)))
            .otherwise(pl.col("unit"))
            .alias("unit")
        )
    return rows


def _windowed(rows: pl.DataFrame, key: str, value: pl.Expr, minutes: int) -> pl.DataFrame:
    """Per row: `value` over the rows of the same `key` in (ts - minutes, ts]."""
    return (
        rows.sort(key, "ts")
        .rolling(index_column="ts", period=f"{minutes}m", group_by=key)
        .agg(value.alias("count"))
    )


def _breaches(
    rows: pl.DataFrame,
    counted: pl.DataFrame,
    rule: str,
    key: str,
    minutes: int,
    limits: pl.DataFrame,
    evidence_of,
    since: dt.datetime | None = None,
) -> list[Breach]:
    if since is not None:  # the rows before are context: their windows were judged before
        counted = counted.filter(pl.col("ts") >= since.astimezone(dt.UTC))
    over = (
        counted.join(limits, on=key, how="left")
        .filter(pl.col("count") > pl.col("limit"))
        .group_by(key)
        .agg(
            pl.col("ts").min().alias("first"),
            pl.col("ts").max().alias("last"),
            pl.col("count").max().alias("peak"),
            pl.col("ts").sort_by("count", descending=True).first().alias("peak_at"),
            pl.col("limit").first(),
        )
        .sort(key)
    )
    found = []
    for subject, first, last, peak, peak_at, limit in over.iter_rows():
        window = rows.filter(
            (pl.col(key) == subject)
            & (pl.col("ts") > peak_at - dt.timedelta(minutes=minutes))
            & (pl.col("ts") <= peak_at)
        )
        found.append(Breach(rule, subject, first, last, int(peak), int(limit), evidence_of(window)))
    return found


def _limits(subjects: pl.Series, key: str, default: int, overrides: dict[str, int]) -> pl.DataFrame:
    values = subjects.unique().drop_nulls().to_list()
    return pl.DataFrame(
        {key: values, "limit": [overrides.get(v, default) for v in values]},
        schema={key: pl.String, "limit": pl.Int64},
    )


def _source_evidence(window: pl.DataFrame, by: str) -> list[dict]:
    """The distinct sources (or units) of a window: nodes, country, ASN, first and last seen,
    connections."""
    return (
        window.group_by(by)
        .agg(
            pl.col("source").unique().sort().alias("sources"),
            pl.col("node").drop_nulls().unique().sort().alias("nodes"),
            pl.col("country").drop_nulls().first().alias("country"),
            pl.col("asn").drop_nulls().first().alias("asn"),
            pl.col("ts").min().alias("first_seen"),
            pl.col("ts").max().alias("last_seen"),
            pl.len().alias("connections"),
        )
        .sort("first_seen", by)
        .rename({by: "unit"})
        .to_dicts()
    )


@dataclass(frozen=True)
class _Count:
    """How one rule counts: its name, subject column, what it counts in a window, the column
    its evidence is grouped by."""

    name: str
    key: str
    value: pl.Expr
    evidence_by: str


def _judge(
    rows: pl.DataFrame,
    count: _Count,
    minutes: int,
    default: int,
    overrides: dict[str, int],
    since: dt.datetime | None,
) -> list[Breach]:
    if rows.is_empty():
        return []
    counted = _windowed(rows, count.key, count.value, minutes)
    limits = _limits(rows[count.key], count.key, default, overrides)
    return _breaches(
        rows, counted, count.name, count.key, minutes, limits,
        lambda window: _source_evidence(window, count.evidence_by), since,
    )  # fmt: skip


IP_LIMIT = _Count("ip_limit", "user", pl.col("unit").n_unique(), "unit")
TAGGED = _Count("tagged", "user", pl.len(), "outbound_tag")
REJECTED = _Count("rejected", "source", pl.len(), "source")


def ip_limit_breaches(
    rows: pl.DataFrame,
    rule: IpLimitRule,
    overrides: dict[str, int] | None = None,
    since: dt.datetime | None = None,
) -> list[Breach]:
    """Users over their limit of distinct sources (`overrides`: per-user limits) at a row of
    `since` or later."""
    counted = with_units(rows, rule.count_by).filter(
        pl.col("user").is_not_null() & pl.col("unit").is_not_null()
    )
    return _judge(counted, IP_LIMIT, rule.window_minutes, rule.limit, overrides or {}, since)


def tagged_breaches(
    rows: pl.DataFrame, rule: TaggedRule, since: dt.datetime | None = None
) -> list[Breach]:
    """Users with more than `limit` connections routed to a watched tag in the window."""
    tagged = rows.filter(pl.col("user").is_not_null() & pl.col("outbound_tag").is_in(rule.tags))
    return _judge(tagged, TAGGED, rule.window_minutes, rule.limit, {}, since)


def rejected_breaches(
    rows: pl.DataFrame, rule: RejectedRule, since: dt.datetime | None = None
) -> list[Breach]:
    """Sources with more than `limit` rejected connections in the window."""
    rejected = rows.filter((pl.col("status") == "rejected") & pl.col("source").is_not_null())
    return _judge(rejected, REJECTED, rule.window_minutes, rule.limit, {}, since)
