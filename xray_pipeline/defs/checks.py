"""Data-quality checks on `logs`, for one local day (default: today in the Xray zone).

Dagster 1.13 cannot yet run partitioned asset checks on their own (a preview feature: a job of
checks alone finds no partitions definition), so these checks take the day as config; the
hourly data_quality_schedule checks today, and any day can be checked from the launchpad.
The rollups check themselves in their own runs (see rollups.py).
"""

import datetime as dt
import zoneinfo
from pathlib import Path

import dagster as dg

from xray_pipeline.core.db.rollups import newest_row, reconcile_day
from xray_pipeline.core.fleet.landing import silent_nodes
from xray_pipeline.core.fleet.nodes import list_nodes
from xray_pipeline.core.ingest.ledger import discontinuities
from xray_pipeline.defs.resources import LogSourcesResource, PostgresResource


class DayConfig(dg.Config):
    """The local day to check, YYYY-MM-DD (default: today in the Xray zone)."""

    day: str | None = None


def build_checks(
    timezone: str, reject_rate: float, freshness_minutes: int, node_silence_minutes: int = 15
) -> list[dg.AssetChecksDefinition]:
    def day_of(config: DayConfig) -> dt.date:
        if config.day:
            return dt.date.fromisoformat(config.day)
        return dt.datetime.now(zoneinfo.ZoneInfo(timezone)).date()

    @dg.asset_check(asset="logs", blocking=False)
    def logs_reconciliation(config: DayConfig, postgres: PostgresResource) -> dg.AssetCheckResult:
        """Lines read (ledger) = access + dns + rejects rows, for the ranges loaded into the day."""
        day = day_of(config)
        with postgres.connect() as conn:
            r = reconcile_day(conn, day, postgres.timezone)
        return dg.AssetCheckResult(
            passed=r.ok,
            description=None if r.ok else f"{r.lines - r.rows} lines read but not stored",
            metadata={
                "day": day.isoformat(),
                "ranges": r.ranges,
                "lines_read": r.lines,
                "rows_stored": r.rows,
            },
        )

    @dg.asset_check(asset="logs", blocking=False)
    def logs_ledger_contiguity(postgres: PostgresResource) -> dg.AssetCheckResult:
        """Per source, the loaded byte ranges follow each other from 0 with no hole (a hole is
        bytes never loaded; while runs are in flight one can show for a moment)."""
        with postgres.connect() as conn:
            holes = discontinuities(conn)
        return dg.AssetCheckResult(
            passed=not holes,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "holes": len(holes),
                "first_holes": dg.MetadataValue.json(
                    [{"source": s, "from": a, "to": b} for s, a, b in holes[:10]]
                ),
            },
        )

    @dg.asset_check(asset="logs", blocking=False)
    def logs_reject_rate(config: DayConfig, postgres: PostgresResource) -> dg.AssetCheckResult:
        """The share of the day's lines kept as rejects stays under [checks] reject_rate."""
        day = day_of(config)
        with postgres.connect() as conn:
            r = reconcile_day(conn, day, postgres.timezone)
        rate = r.rejects / r.lines if r.lines else 0.0
        return dg.AssetCheckResult(
            passed=rate <= reject_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "day": day.isoformat(),
                "reject_rate": rate,
                "threshold": reject_rate,
                "rejects": r.rejects,
            },
        )

    @dg.asset_check(asset="logs", blocking=False)
    def logs_freshness(
        postgres: PostgresResource, log_sources: LogSourcesResource
    ) -> dg.AssetCheckResult:
        """While a watched log is being written, the newest row is at most [checks]
        freshness_minutes old."""
        limit = dt.timedelta(minutes=freshness_minutes)
        now = dt.datetime.now(dt.UTC)
        written = [
            p for p in log_sources.files()
            if p.exists() and now - dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC) < limit
        ]  # fmt: skip
        with postgres.connect() as conn:
            newest = newest_row(conn)
        age = (now - newest).total_seconds() if newest else None
        if not written:
            return dg.AssetCheckResult(
                passed=True, metadata={"note": "no watched log written recently", "age_s": age}
            )
        stale = newest is None or now - newest > limit
        return dg.AssetCheckResult(
            passed=not stale,
            metadata={"newest_row_age_s": age, "limit_s": limit.total_seconds()},
        )

    @dg.asset_check(asset="logs", blocking=False)
    def logs_node_silence(
        postgres: PostgresResource, log_sources: LogSourcesResource
    ) -> dg.AssetCheckResult:
        """Every registered node of the fleet called the center within [checks]
        node_silence_minutes (a node never heard of counts from its registration)."""
        now = dt.datetime.now(dt.UTC)
        with postgres.connect() as conn:
            nodes = list_nodes(conn, postgres.timezone)
        root = Path(log_sources.landing_dir) if log_sources.landing_dir else None
        silent = silent_nodes(nodes, root, now, dt.timedelta(minutes=node_silence_minutes))
        return dg.AssetCheckResult(
            passed=not silent,
            severity=dg.AssetCheckSeverity.WARN,
            description=None
            if not silent
            else f"{len(silent)} of {len(nodes)} nodes silent: " + ", ".join(sorted(silent)),
            metadata={
                "nodes": len(nodes),
                "silent": dg.MetadataValue.json(silent),
                "limit_minutes": node_silence_minutes,
            },
        )

    return [
        logs_node_silence,
        logs_reconciliation,
        logs_ledger_contiguity,
        logs_reject_rate,
        logs_freshness,
    ]
