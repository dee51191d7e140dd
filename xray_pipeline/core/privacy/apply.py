"""`privacy apply`: rewrite the rows of older days to the current [privacy] settings, one local
day per transaction, resumable (a day done under the same settings is not done again).

Sources stored as full addresses become masked networks or keyed hashes (their places moved
to what the rows keep, looked up first when databases are configured); destinations become
registrable domains or nothing. A source already masked or hashed stays as it is: its address
is gone. The day's rollups are rebuilt from the rewritten rows, and at the end the places and
destinations that no row keeps any more are removed."""

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import psycopg

from xray_pipeline.core.archive.read import cold_days
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.privacy.cold import apply_cold_day
from xray_pipeline.core.privacy.places import MOVE_PLACES, store_places
from xray_pipeline.core.privacy.policy import RowPolicy

_DAY_SOURCES = """
SELECT DISTINCT host(l.src_ip) FROM logs l, xray_day_bounds(%(day)s, %(tz)s) b
WHERE l.ts >= b.lo AND l.ts < b.hi AND l.src_ip IS NOT NULL
"""
_REWRITE_SOURCES = """
UPDATE logs l SET src_ip = NULL, src_host = m.kept
FROM unnest(%(ip)s::inet[], %(kept)s::text[]) AS m (ip, kept), xray_day_bounds(%(day)s, %(tz)s) b
WHERE l.ts >= b.lo AND l.ts < b.hi AND l.src_ip = m.ip
"""
_DAY_ENDPOINTS = """
SELECT DISTINCT e.id, e.host, e.port FROM logs l JOIN endpoints e ON e.id = l.endpoint_id,
    xray_day_bounds(%(day)s, %(tz)s) b
WHERE l.ts >= b.lo AND l.ts < b.hi
"""


def signature(policy: RowPolicy) -> str:
    """Names the settings a day was rewritten under (a new hashing secret is new settings;
    the secret itself is not in it)."""
    source = policy.source_ip
    if source == "mask":
        source += f"/{policy.ipv4_prefix}/{policy.ipv6_prefix}"
    elif source == "hash":
        check = hmac.new(policy.secret or b"", b"xray-pipeline", hashlib.sha256).hexdigest()
        source += f":{check[:8]}"
    return f"source_ip={source} destination={policy.destination}"


@dataclass
class DayResult:
    day: dt.date
    sources: int = 0
    rows: int = 0
    endpoints: int = 0
    skipped: bool = False


@dataclass
class ApplyReport:
    signature: str
    days: list[DayResult] = field(default_factory=list)
    places_removed: int = 0
    endpoints_removed: int = 0


def days_before(conn: psycopg.Connection, before: dt.date, timezone: str) -> list[dt.date]:
    """The local days with rows in `logs` before `before`, oldest first."""
    first = conn.execute("SELECT min(ts) FROM logs").fetchone()[0]
    if first is None:
        return []
    day = first.astimezone(_zone(timezone)).date()
    found = []
    while day < before:
        found.append(day)
        day += dt.timedelta(days=1)
    return found


def days_to_apply(
    conn: psycopg.Connection, before: dt.date, timezone: str, archive: ArchiveStore | None
) -> list[dt.date]:
    """The days before `before` in `logs` and, with `archive`, those only in the archive."""
    days = set(days_before(conn, before, timezone))
    if archive is not None:
        days |= set(cold_days(conn, hi=before - dt.timedelta(days=1)))
    return sorted(days)


def _zone(name: str):
    import zoneinfo

    return zoneinfo.ZoneInfo(name)


def apply_policy(
    conn: psycopg.Connection,
    policy: RowPolicy,
    *,
    before: dt.date,
    timezone: str,
    on_day: Callable[[DayResult, int, int], None] | None = None,
    archive: ArchiveStore | None = None,
) -> ApplyReport:
    """Rewrite every day before `before` to `policy`; the days already done under the same
    settings are skipped (a killed run resumes). With `archive`, the archived days too: a day
    still in PostgreSQL is archived again from its rewritten rows, a day only in the archive
    has its files rewritten (core/privacy/cold.py)."""
    from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup

    report = ApplyReport(signature(policy))
    days = days_to_apply(conn, before, timezone, archive)
    archived, cold = set(), set()
    if archive is not None:
        archived = {r[0] for r in conn.execute("SELECT day FROM archive_days")}
        cold = set(cold_days(conn, hi=before - dt.timedelta(days=1)))
    done = {
        r[0]
        for r in conn.execute(
            "SELECT day FROM privacy_applied WHERE signature = %s", (report.signature,)
        )
    }
    conn.commit()
    for i, day in enumerate(days, 1):
        if day in done:
            result = DayResult(day, skipped=True)
        elif day in cold:
            result = DayResult(day, rows=apply_cold_day(conn, archive, policy, day))
        else:
            result = _apply_day(conn, policy, day, timezone)
            for table in ROLLUPS:
                rebuild_rollup(conn, table, day, timezone)
            if day in archived:
                archive_day(conn, archive, day, timezone)
        if not result.skipped:
            conn.execute(
                "INSERT INTO privacy_applied (day, signature, rows) VALUES (%s, %s, %s) "
                "ON CONFLICT (day, signature) DO UPDATE SET applied_at = now(), rows = "
                "EXCLUDED.rows",
                (day, report.signature, result.rows),
            )
            conn.commit()
        report.days.append(result)
        if on_day is not None:
            on_day(result, i, len(days))
    report.places_removed, report.endpoints_removed = _remove_unkept(conn, before, timezone)
    return report


def _apply_day(
    conn: psycopg.Connection, policy: RowPolicy, day: dt.date, timezone: str
) -> DayResult:
    result = DayResult(day)
    params = {"day": day, "tz": timezone}
    with conn.transaction():
        if policy.source_ip != "full":
            addresses = [r[0] for r in conn.execute(_DAY_SOURCES, params)]
            mapping = policy.sources(addresses)
            result.sources = mapping.height
            if addresses:
                # the places first: resolved from the full address, or moved from it
                store_places(conn, policy.geoip, mapping.select("address", key="stored_host"))
                conn.execute(
                    MOVE_PLACES,
                    {"old": mapping["src_ip"].to_list(), "kept": mapping["stored_host"].to_list()},
                )
                result.rows += conn.execute(
                    _REWRITE_SOURCES,
                    {**params, "ip": mapping["src_ip"].to_list(),
                     "kept": mapping["stored_host"].to_list()},
                ).rowcount  # fmt: skip
        if policy.destination != "full":
            result.rows += _rewrite_destinations(conn, policy, params, result)
    return result


def _rewrite_destinations(
    conn: psycopg.Connection, policy: RowPolicy, params: dict, result: DayResult
) -> int:
    if policy.destination == "none":
        return conn.execute(
            "UPDATE logs l SET endpoint_id = NULL, dest_url = NULL "
            "FROM xray_day_bounds(%(day)s, %(tz)s) b WHERE l.ts >= b.lo AND l.ts < b.hi "
            "AND (l.endpoint_id IS NOT NULL OR l.dest_url IS NOT NULL)",
            params,
        ).rowcount
    endpoints = conn.execute(_DAY_ENDPOINTS, params).fetchall()
    frame = pl.DataFrame(
        [(i, h, p, policy.destination_host(h)) for i, h, p in endpoints],  # once per endpoint
        schema={"id": pl.Int64, "host": pl.String, "port": pl.Int32, "kept": pl.String},
        orient="row",
    )
    changed = frame.filter(pl.col("kept") != pl.col("host"))
    result.endpoints = changed.height
    if changed.is_empty():
        return conn.execute(
            "UPDATE logs l SET dest_url = NULL FROM xray_day_bounds(%(day)s, %(tz)s) b "
            "WHERE l.ts >= b.lo AND l.ts < b.hi AND l.dest_url IS NOT NULL",
            params,
        ).rowcount
    pairs = changed.select("kept", "port").unique().sort("kept", "port", nulls_last=True)
    conn.execute(
        "INSERT INTO endpoints (host, port) SELECT * FROM unnest(%s::text[], %s::int[]) "
        "ON CONFLICT ON CONSTRAINT endpoints_host_port_key DO NOTHING",
        (pairs["kept"].to_list(), pairs["port"].to_list()),
    )
    return conn.execute(
        """
        UPDATE logs l SET endpoint_id = n.id, dest_url = NULL
        FROM unnest(%(old)s::bigint[], %(kept)s::text[], %(port)s::int[]) AS m (old, kept, port)
        JOIN endpoints n ON n.host = m.kept AND n.port IS NOT DISTINCT FROM m.port,
            xray_day_bounds(%(day)s, %(tz)s) b
        WHERE l.ts >= b.lo AND l.ts < b.hi AND l.endpoint_id = m.old
        """,
        {
            **params,
            "old": changed["id"].to_list(),
            "kept": changed["kept"].to_list(),
            "port": changed["port"].to_list(),
        },
    ).rowcount


def _remove_unkept(conn: psycopg.Connection, before: dt.date, timezone: str) -> tuple[int, int]:
    """The places of full addresses and the destinations that no row, rollup or newer day
    keeps any more (the rewritten days' old values)."""
    with conn.transaction():
        lo = conn.execute("SELECT lo FROM xray_day_bounds(%s, %s)", (before, timezone)).fetchone()[
            0
        ]
        places = conn.execute(
            """
            DELETE FROM ip_places p
            WHERE p.address NOT LIKE 'hash:%%' AND p.address NOT LIKE '%%/%%'
              AND NOT EXISTS (SELECT 1 FROM daily_user_ips d WHERE d.source = p.address)
              AND NOT EXISTS (SELECT 1 FROM endpoints e WHERE e.host = p.address)
              AND p.address NOT IN (
                  SELECT host(src_ip) FROM logs WHERE ts >= %s AND src_ip IS NOT NULL)
            """,
            (lo,),
        ).rowcount
        endpoints = conn.execute(
            """
            DELETE FROM endpoints e
            WHERE NOT EXISTS (SELECT 1 FROM logs l WHERE l.endpoint_id = e.id)
              AND NOT EXISTS (SELECT 1 FROM daily_user_destinations d WHERE d.endpoint_id = e.id)
            """
        ).rowcount
    return places, endpoints
