"""The days only in the archive (past [retention] hot_days) for GET /api/logs: the same filters
over their Parquet files (Polars' lazy scan, pruned by the files' statistics, in a worker
thread), then merged with PostgreSQL's rows in the same order."""

import datetime as dt
import re

import polars as pl

from xray_pipeline.api.queries.logs import IP_TEXT, decode_cursor, like
from xray_pipeline.core.archive.read import scan
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import LOGS

_COLD_PATHS = """
SELECT f.path FROM archive_files f
WHERE f.table_name = 'logs'
  AND to_regclass('logs_' || to_char(f.day, 'YYYY_MM_DD')) IS NULL
  AND (%(lo)s::date IS NULL OR f.day >= %(lo)s) AND (%(hi)s::date IS NULL OR f.day <= %(hi)s)
ORDER BY f.day DESC, f.part
"""
ORDER = ["ts", "source_id", "byte_offset"]


async def cold_paths(cur, from_: dt.datetime | None, to: dt.datetime | None) -> list[str]:
    """The files of the archived days no longer in PostgreSQL that [from_, to) can touch (a
    day either side: the days are local)."""
    day = dt.timedelta(days=1)
    await cur.execute(
        _COLD_PATHS,
        {"lo": from_.date() - day if from_ else None, "hi": to.date() + day if to else None},
    )
    return [r["path"] for r in await cur.fetchall()]


async def placed_sources(cur, country: str | None, asn: int | None) -> list[str]:
    """The sources (as rows keep them) placed in `country` / `asn`."""
    conds, params = [], {}
    if country is not None:
        conds.append("country = %(country)s")
        params["country"] = country.upper()
    if asn is not None:
        conds.append("asn = %(asn)s")
        params["asn"] = asn
    await cur.execute(f"SELECT address FROM ip_places WHERE {' AND '.join(conds)}", params)
    return [r["address"] for r in await cur.fetchall()]


def _icontains(column: str, text: str) -> pl.Expr:
    """ILIKE '%text%': a case-insensitive regex of the literal text (faster than lowering
    every value first)."""
    return pl.col(column).str.contains("(?i)" + re.escape(text))


async def searched_names(cur, search: str) -> tuple[list[str], list[str]]:
    """The users and destination hosts whose text holds `search`, found as build_filters
    finds them (the trigram indexes of `users` and `endpoints`)."""
    pattern = like(search)
    await cur.execute("SELECT email FROM users WHERE email ILIKE %s", (pattern,))
    users = [r["email"] for r in await cur.fetchall()]
    await cur.execute("SELECT DISTINCT host FROM endpoints WHERE host ILIKE %s", (pattern,))
    return users, [r["host"] for r in await cur.fetchall()]


def archive_filter(
    *, search, protocol, tag, user, status, node, from_, to, cursor, sources=None, names=None
) -> pl.Expr:
    """build_filters' conditions on the archive's columns (`sources`: the placed sources of
    a country or network filter; `names`: searched_names of a search, else the text is
    matched in every row)."""
    conds = [pl.lit(True)]
    if from_ is not None:
        conds.append(pl.col("ts") >= from_)
    if to is not None:
        conds.append(pl.col("ts") < to)
    if status is not None:
        conds.append(pl.col("status") == status)
    if protocol is not None:
        conds.append(pl.col("dest_protocol") == protocol)
    if tag is not None:
        conds.append((pl.col("inbound_tag") == tag) | (pl.col("outbound_tag") == tag))
    if user is not None:
        conds.append(pl.col("user") == user)
    if node is not None:
        conds.append(pl.col("node") == node)
    if sources is not None:
        conds.append(pl.coalesce("src_ip", "src_host").is_in(sources))
    if search:
        if names is not None:  # a lookup per row, not a match of the text
            found = pl.col("user").is_in(names[0]) | pl.col("dest_host").is_in(names[1])
        else:
            found = _icontains("user", search) | _icontains("dest_host", search)
        found = found | _icontains("src_host", search)
        if IP_TEXT.fullmatch(search):
            found = found | _icontains("src_ip", search)
        conds.append(found.fill_null(False))
    if cursor is not None:
        c_ts, c_src, c_off = decode_cursor(cursor)
        c_ts = c_ts if c_ts.tzinfo else c_ts.replace(tzinfo=dt.UTC)
        conds.append(
            (pl.col("ts") < c_ts)
            | ((pl.col("ts") == c_ts) & (pl.col("source_id") < c_src))
            | ((pl.col("ts") == c_ts) & (pl.col("source_id") == c_src)
               & (pl.col("byte_offset") < c_off))
        )  # fmt: skip
    return pl.all_horizontal(conds)


def archive_page(
    store: ArchiveStore, paths: list[str], condition: pl.Expr, rows: int, cap: int
) -> tuple[list[dict], int]:
    """The newest `rows` matching rows of the files `paths` (newest day first), as the API's
    items (without places), and how many match, up to `cap` + 1. Days are disjoint in time:
    once the newer days hold `rows` matches and the count passed `cap`, the older days are not
    read. The top is found on the sort columns alone; only its rows are read whole."""
    days: dict[str, list[str]] = {}
    for path in paths:
        days.setdefault(path.split("/", 1)[0], []).append(path)
    # the newest day, then the others in one scan: a common match is found in the newest
    # day; a rare one costs one scan of every file (each query has a fixed cost, and a count
    # and a top-k are bounded in memory whatever the files)
    groups = list(days.values())
    batches = [groups[0], [p for files in groups[1:] for p in files]] if groups else []
    tops, counted, used, found = [], 0, [], 0
    for files in batches:
        if not files or (found >= rows and counted > cap):
            break
        matching = scan(store, files, LOGS).filter(condition)
        wanted = []
        if counted <= cap:
            wanted.append(matching.head(cap + 1 - counted).select(pl.len()))
        if found < rows:  # an older day cannot enter a full top
            wanted.append(matching.select(ORDER).sort(ORDER, descending=True).head(rows))
        results = pl.collect_all(wanted)
        if counted <= cap:
            counted += results.pop(0).item()
        if results and results[0].height:
            tops.append(results[0])
            used += files
            found += results[0].height
    if not tops:
        return [], counted
    top = pl.concat(tops).sort(ORDER, descending=True).head(rows)
    lo, hi = top["ts"].min(), top["ts"].max()
    frame = (
        scan(store, used, LOGS)
        .filter(condition & (pl.col("ts") >= lo) & (pl.col("ts") <= hi))
        .join(top.lazy(), on=ORDER, how="semi")
        .sort(ORDER, descending=True)
        .collect()
    )
    items = frame.select(
        "ts", "status",
        pl.coalesce("src_ip", "src_host").alias("src_ip"), "src_port",
        pl.col("src_protocol").alias("src_network"), pl.col("dest_protocol").alias("dest_network"),
        "dest_host", "dest_port", "dest_url", "inbound_tag", "outbound_tag",
        pl.col("user").alias("email"), "reason", "node", "source", "source_id", "byte_offset",
    ).to_dicts()  # fmt: skip
    return items, counted


async def add_places(cur, items: list[dict]) -> None:
    """Set country and asn of the items' sources and destinations from `ip_places`."""
    wanted = {i["src_ip"] for i in items} | {i["dest_host"] for i in items}
    wanted.discard(None)
    await cur.execute(
        "SELECT address, country, asn FROM ip_places WHERE address = ANY(%s)", (list(wanted),)
    )
    placed = {r["address"]: (r["country"], r["asn"]) for r in await cur.fetchall()}
    for item in items:
        item["country"], item["asn"] = placed.get(item["src_ip"], (None, None))
        item["dest_country"], item["dest_asn"] = placed.get(item["dest_host"], (None, None))
