"""Ledger compaction: each reader of the ledger (the reconciliation, holes, the tail's ranges,
the node status, forget, the rebuild, the link of a row to its range) answers the same after a
compaction, the ledger keeps a row per source and day (and per hole), and loads that run
beside a compaction still store each line once."""

import datetime as dt
import threading
from pathlib import Path

import psycopg
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.rollups import reconcile_day
from xray_pipeline.core.fleet.nodes import add_node, list_nodes
from xray_pipeline.core.ingest.batch import load_chunk
from xray_pipeline.core.ingest.compact import compact_ledger
from xray_pipeline.core.ingest.files import file_state, iter_chunks
from xray_pipeline.core.ingest.ledger import committed_ranges, discontinuities
from xray_pipeline.core.ingest.rebuild import rebuild_day
from xray_pipeline.core.ingest.references import SourceRef, register_source
from xray_pipeline.core.parse import DetourTags, parse_chunk
from xray_pipeline.core.privacy.forget import forget_user
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

TZ = "UTC"
DAYS = (dt.date(2025, 11, 17), dt.date(2025, 11, 18))
NOW = {"after": dt.timedelta(0)}  # every range is old enough


def load_file(
    conn: psycopg.Connection, path: Path, source: SourceRef, *, skip: int | None = None
) -> int:
    """Load `path` in chunks of about 4 KB (run-a, then run-b), leaving out chunk `skip`."""
    detours = DetourTags()
    loads = 0
    with path.open("rb") as fh:
        for i, (offset, chunk) in enumerate(iter_chunks(fh, 4096)):
            if i == skip:
                continue
            parsed = parse_chunk(chunk, source=str(path), base_offset=offset, detours=detours)
            run = "run-a" if i < 10 else "run-b"
            assert not load_chunk(conn, parsed, source, run_id=run, timezone=TZ).already_loaded
            loads += 1
    return loads


@pytest.fixture
def fleet(conn: psycopg.Connection, tmp_path: Path) -> dict[str, SourceRef]:
    """Three nodes' files of two days, loaded in many small ranges; node n2's has a hole."""
    sources = {}
    for i in range(3):
        add_node(conn, f"n{i}")
        log = tmp_path / f"n{i}.log"
        write_log(GeneratorConfig(lines=1500, days=2, seed=i, users=30), log)
        source = register_source(conn, file_state(log).identity.key, str(log), f"n{i}")
        conn.commit()
        assert load_file(conn, log, source, skip=5 if i == 2 else None) > 20
        sources[str(log)] = source
    return sources


def readers(conn: psycopg.Connection, sources: dict[str, SourceRef]) -> dict:
    """What every reader of the ledger answers."""
    answers = {
        "reconcile": [
            (r.lines, r.rows, r.rejects, r.ok) for r in (reconcile_day(conn, d, TZ) for d in DAYS)
        ],
        "holes": discontinuities(conn),
        "ranges": committed_ranges(conn, [s.identity for s in sources.values()]),
        "nodes": [
            (n.name, n.newest_line, n.lines_today, n.bytes_today, n.loaded_by_path)
            for n in list_nodes(conn, TZ)
        ],
        "sums": conn.execute(
            "SELECT sum(lines), sum(access_rows), sum(dns_rows), sum(reject_rows), sum(erased), "
            "min(first_ts), max(last_ts), sum(end_offset - start_offset) FROM ingest_ledger"
        ).fetchone(),
    }
    conn.commit()
    return answers


def expected_rows(conn: psycopg.Connection) -> int:
    """The ledger rows a compaction leaves, worked out here from the rows as they are: a new
    row wherever a source's ranges stop being adjacent, change status, loading day or the day
    of their lines, and for every range whose lines are of two days."""
    rows = conn.execute(
        "SELECT source_id, start_offset, end_offset, status, loaded_at::date, "
        "first_ts::date, last_ts::date FROM ingest_ledger ORDER BY 1, 2"
    ).fetchall()
    conn.commit()
    count, previous = 0, None
    for source, start, end, status, loaded_on, first, last in rows:
        key = (source, status, loaded_on, first if first == last else object())
        if previous is None or previous[0] != key or previous[1] != start:
            count += 1
        previous = (key, end)
    return count


def unlinked_rows(conn: psycopg.Connection) -> int:
    """Rows of the three tables that no ledger range (or more than one) holds."""
    return conn.execute(
        """
        SELECT count(*) FROM (
            SELECT source_id, byte_offset FROM logs UNION ALL
            SELECT source_id, byte_offset FROM dns_queries UNION ALL
            SELECT source_id, byte_offset FROM rejects
        ) r
        WHERE (SELECT count(*) FROM ingest_ledger l WHERE l.source_id = r.source_id
               AND int8range(l.start_offset, l.end_offset) @> r.byte_offset) <> 1
        """
    ).fetchone()[0]


def test_every_reader_answers_the_same_after_a_compaction(
    conn: psycopg.Connection, fleet: dict[str, SourceRef]
):
    before = readers(conn, fleet)
    rows_before = conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0]
    assert all(ok for *_, ok in before["reconcile"]) and len(before["holes"]) == 1
    expected = expected_rows(conn)

    merged = compact_ledger(conn, timezone=TZ, **NOW)

    assert readers(conn, fleet) == before
    # per source: its first day, the range that holds midnight, its second day; and n2's hole
    rows = conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0]
    assert rows == expected == 10 and merged.removed == rows_before - rows
    assert unlinked_rows(conn) == 0
    runs = {r for (r,) in conn.execute("SELECT run_id FROM ingest_ledger")}
    assert "run-a run-b" in runs and {r for ids in runs for r in ids.split()} == {"run-a", "run-b"}
    # a second compaction finds nothing to merge
    assert compact_ledger(conn, timezone=TZ, **NOW).removed == 0


def test_a_row_links_to_the_range_that_loaded_it(
    conn: psycopg.Connection, fleet: dict[str, SourceRef]
):
    sample = "SELECT source_id, byte_offset FROM logs ORDER BY source_id, byte_offset LIMIT 50"
    link = (
        "SELECT l.start_offset, l.end_offset, l.run_id FROM ingest_ledger l "
        "WHERE l.source_id = %s AND int8range(l.start_offset, l.end_offset) @> %s::bigint"
    )
    rows = conn.execute(sample).fetchall()
    before = [conn.execute(link, row).fetchall() for row in rows]
    assert unlinked_rows(conn) == 0
    compact_ledger(conn, timezone=TZ, **NOW)
    after = [conn.execute(link, row).fetchall() for row in rows]
    for row, [(lo, hi, run)], [(merged_lo, merged_hi, runs)] in zip(
        rows, before, after, strict=True
    ):
        assert merged_lo <= lo <= row[1] < hi <= merged_hi
        assert run in runs.split()


def test_forget_and_rebuild_after_a_compaction(
    conn: psycopg.Connection, fleet: dict[str, SourceRef]
):
    compact_ledger(conn, timezone=TZ, **NOW)
    email = conn.execute(
        "SELECT u.email FROM logs JOIN users u ON u.id = logs.user_id "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()[0]
    report = forget_user(conn, email, timezone=TZ)
    assert report.erased["logs"] > 0
    erased = conn.execute("SELECT sum(erased) FROM ingest_ledger").fetchone()[0]
    assert erased >= report.erased["logs"]
    assert all(reconcile_day(conn, d, TZ).ok for d in DAYS)

    rows_before = conn.execute("SELECT count(*) FROM logs").fetchone()[0]
    rebuilt = rebuild_day(conn, DAYS[0], timezone=TZ, batch_size=64 * 1024)
    assert rebuilt.complete and rebuilt.rows_before == rebuilt.rows_after
    assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == rows_before
    statuses = conn.execute(
        "SELECT DISTINCT status FROM xray_day_ranges(%s, %s)", (DAYS[0], TZ)
    ).fetchall()
    assert statuses == [("rebuilt",)]
    assert all(reconcile_day(conn, d, TZ).ok for d in DAYS)


def test_recent_ranges_and_other_days_stay_apart(
    conn: psycopg.Connection, fleet: dict[str, SourceRef]
):
    rows = conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0]
    assert compact_ledger(conn, timezone=TZ).removed == 0  # loaded less than ten minutes ago
    # the first third of every source loaded yesterday: its ranges merge apart from the rest
    conn.execute(
        "UPDATE ingest_ledger l SET loaded_at = loaded_at - interval '1 day' "
        "WHERE start_offset < (SELECT max(end_offset) / 3 FROM ingest_ledger m "
        "WHERE m.source_id = l.source_id)"
    )
    conn.commit()
    before = readers(conn, fleet)
    expected = expected_rows(conn)
    recent = "SELECT count(*) FROM ingest_ledger WHERE loaded_at > now() - interval '10 minutes'"
    fresh = conn.execute(recent).fetchone()[0]
    merged = compact_ledger(conn, timezone=TZ)
    assert merged.removed > 0 and conn.execute(recent).fetchone()[0] == fresh
    assert compact_ledger(conn, timezone=TZ, **NOW).removed == rows - merged.removed - expected
    assert readers(conn, fleet) == before
    assert conn.execute("SELECT count(*) FROM ingest_ledger").fetchone()[0] == expected > 10


def test_a_compaction_racing_loads(conn: psycopg.Connection, fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "busy.log"
    write_log(GeneratorConfig(lines=4000, seed=9, users=30), log)
    source = register_source(conn, file_state(log).identity.key, str(log), None)
    conn.commit()
    done = threading.Event()
    compactions: list[int] = []
    failures: list[BaseException] = []

    def compact() -> None:
        try:
            with connect(fresh_db_url) as own:
                while not done.is_set():
                    compactions.append(compact_ledger(own, timezone=TZ, **NOW).removed)
        except BaseException as exc:
            failures.append(exc)

    compactor = threading.Thread(target=compact)
    compactor.start()
    try:
        with connect(fresh_db_url) as loading:
            loads = load_file(loading, log, source)
    finally:
        done.set()
        compactor.join()
    assert not failures and loads > 40 and sum(compactions) > 0
    compact_ledger(conn, timezone=TZ, **NOW)
    ledger = conn.execute(
        "SELECT start_offset, end_offset, lines FROM ingest_ledger WHERE source_id = %s",
        (source.id,),
    ).fetchall()
    assert sum(lines for *_, lines in ledger) == 4000 and len(ledger) == expected_rows(conn)
    assert committed_ranges(conn, [source.identity]) == {source.identity: [(0, log.stat().st_size)]}
    stored = conn.execute(
        "SELECT (SELECT count(*) FROM logs) + (SELECT count(*) FROM dns_queries) "
        "+ (SELECT count(*) FROM rejects)"
    ).fetchone()[0]
    assert stored == 4000 and unlinked_rows(conn) == 0
