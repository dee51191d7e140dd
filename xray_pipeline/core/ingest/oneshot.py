"""One-shot ingestion (`xray-pipeline ingest`): plan what is new in each file, parse and load it
chunk by chunk, or spool it while PostgreSQL is down."""

import contextlib
from collections.abc import Callable
from pathlib import Path

import psycopg
from loguru import logger

from xray_pipeline.core.ingest.files import (
    iter_chunks,
    open_log,
    unreadable_reason,
    watched_states,
)
from xray_pipeline.core.ingest.ledger import Range, committed_ranges
from xray_pipeline.core.ingest.loader import Spooler, load_task
from xray_pipeline.core.ingest.plan import plan_reads
from xray_pipeline.core.ingest.references import SourceRef, register_source
from xray_pipeline.core.ingest.stats import RunStats
from xray_pipeline.core.parse import DetourTags, parse_chunk
from xray_pipeline.core.privacy.policy import DEFAULT_POLICY, RowPolicy


def _lock_key(identity: str) -> str:
    return f"xray-ingest:{identity}"


def ingest_files(
    conn: psycopg.Connection,
    paths: list[Path],
    *,
    timezone: str,
    batch_size: int,
    node: str | None = None,
    from_start: bool = False,
    run_id: str | None = None,
    include_siblings: bool = True,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    before_commit: Callable[[], None] | None = None,
    spooler: Spooler | None = None,
    policy: RowPolicy = DEFAULT_POLICY,
) -> RunStats:
    """Load what is new in `paths` (and the still-growing rotated copies of known files).

    With a `spooler`, chunks that cannot be loaded because PostgreSQL went away are spooled
    instead (the run's statistics say `mode: offline`)."""
    stats = RunStats(**({"run_id": run_id} if run_id else {}))
    explicit = set(paths)
    states = watched_states(paths, include_siblings=include_siblings)
    for path in paths:  # an unreadable one is skipped: the caller says why (unreadable_reason)
        if unreadable_reason(path) is None and not path.exists():
            logger.warning("{} does not exist (yet); nothing to read there", path)
    loaded = committed_ranges(conn, [s.identity.key for s in states])
    conn.commit()
    tasks, notes = plan_reads(states, loaded, from_start=from_start, explicit=explicit)
    for note in notes:
        logger.warning(note)
    if on_total is not None:
        on_total(sum((t.end or 0) - t.start for t in tasks))
    stats.source = ",".join(sorted({str(t.path) for t in tasks})) or ",".join(map(str, paths))
    for task in tasks:
        source = register_source(conn, task.identity, str(task.path), node)
        conn.commit()
        got_lock = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_lock_key(task.identity),)
        ).fetchone()[0]
        conn.commit()
        if not got_lock:
            logger.warning("another ingest is loading {}; leaving it to that one", task.path)
            continue
        try:
            for result in load_task(
                conn,
                task,
                source,
                timezone=timezone,
                batch_size=batch_size,
                run_id=stats.run_id,
                before_commit=before_commit,
                spooler=spooler,
                policy=policy,
            ):
                if isinstance(result, Path):
                    stats.spooled(result)
                    continue
                stats.add(result)
                if on_progress is not None:
                    on_progress(result.bytes)
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                    (_lock_key(task.identity),),
                )
                conn.commit()
    return stats.finish()


def spool_files(
    paths: list[Path],
    *,
    spooler: Spooler,
    spooled: dict[str, list[Range]],
    known: dict[str, list[Range]],
    timezone: str,
    batch_size: int,
    node: str | None = None,
    run_id: str | None = None,
) -> RunStats:
    """PostgreSQL is unreachable: parse what is new and spool it, without the database.

    What is new is planned from `known` (the ranges last known to be loaded, kept locally)
    and `spooled` (the ranges already in the spool), so the same bytes are not spooled twice.
    """
    stats = RunStats(mode="offline", **({"run_id": run_id} if run_id else {}))
    states = watched_states(paths)
    loaded: dict[str, list[Range]] = {}
    for ranges in (known, spooled):
        for key, items in ranges.items():
            loaded.setdefault(key, []).extend(items)
    tasks, notes = plan_reads(states, loaded, explicit=set(paths))
    for note in notes:
        logger.warning(note)
    stats.source = ",".join(sorted({str(t.path) for t in tasks})) or ",".join(map(str, paths))
    for task in tasks:
        source = SourceRef(id=0, identity=task.identity, path=str(task.path), node=node)
        detours = DetourTags()
        with open_log(task.path) as fh:
            for offset, chunk in iter_chunks(
                fh, batch_size, start=task.start, end=task.end, partial_tail=False
            ):
                parsed = parse_chunk(
                    chunk,
                    source=str(task.path),
                    base_offset=offset,
                    timezone=timezone,
                    detours=detours,
                )
                stats.spooled(spooler(parsed, source))
    return stats.finish()
