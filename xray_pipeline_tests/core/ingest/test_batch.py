"""Many sources' chunks in one transaction: one ledger row per chunk written with the rows,
a chunk the ledger holds already left out, concurrent batches of the same ranges loading each
line once, and a poll whose one source fails loading the others."""

import threading
from pathlib import Path

import psycopg
import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.batch import Part, commit_batch, load_chunk, prepare_batch
from xray_pipeline.core.ingest.files import file_state
from xray_pipeline.core.ingest.loader import Loader, RangeLoad
from xray_pipeline.core.ingest.references import register_source
from xray_pipeline.core.parse import parse_chunk
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log


def parts_of(conn: psycopg.Connection, tmp_path: Path, count: int, lines: int = 40) -> list[Part]:
    parts = []
    for i in range(count):
        log = tmp_path / f"node{i}.log"
        write_log(GeneratorConfig(lines=lines, seed=i), log)
        source = register_source(conn, file_state(log).identity.key, str(log), f"n{i}")
        data = log.read_bytes()
        parts.append(Part(source, parse_chunk(data, source=str(log))))
    conn.commit()
    return parts


def prepared(url: str, parts: list[Part]):
    with connect(url, autocommit=True) as prep:
        return prepare_batch(prep, parts, timezone="UTC")


def totals(conn: psycopg.Connection) -> tuple[int, int, int]:
    return conn.execute(
        "SELECT (SELECT count(*) FROM logs) + (SELECT count(*) FROM dns_queries) + "
        "(SELECT count(*) FROM rejects), (SELECT coalesce(sum(lines), 0) FROM ingest_ledger), "
        "(SELECT count(*) FROM ingest_ledger)"
    ).fetchone()


def test_twenty_sources_load_in_one_transaction(
    conn: psycopg.Connection, fresh_db_url: str, tmp_path: Path
):
    parts = parts_of(conn, tmp_path, 20)
    results = commit_batch(conn, prepared(fresh_db_url, parts), run_id="poll-1")
    assert [r.lines for r in results] == [40] * 20 and not any(r.already_loaded for r in results)
    assert totals(conn) == (800, 800, 20)
    # one ledger row per chunk, all written by the one transaction that wrote the rows
    xids = conn.execute("SELECT count(DISTINCT xmin::text) FROM ingest_ledger").fetchone()[0]
    rows_xids = conn.execute("SELECT count(DISTINCT xmin::text) FROM logs").fetchone()[0]
    assert xids == rows_xids == 1
    assert conn.execute("SELECT count(DISTINCT source_id) FROM logs").fetchone()[0] == 20


def test_a_chunk_the_ledger_holds_is_left_out_and_the_others_load(
    conn: psycopg.Connection, fresh_db_url: str, tmp_path: Path
):
    parts = parts_of(conn, tmp_path, 3)
    first = load_chunk(conn, parts[1].parsed, parts[1].source, run_id="r0", timezone="UTC")
    assert first.lines == 40
    results = commit_batch(conn, prepared(fresh_db_url, parts), run_id="r1")
    assert [r.already_loaded for r in results] == [False, True, False]
    assert totals(conn) == (120, 120, 3)


def test_concurrent_batches_of_the_same_ranges_load_each_line_once(
    conn: psycopg.Connection, fresh_db_url: str, tmp_path: Path
):
    parts = parts_of(conn, tmp_path, 8)
    batches = [prepared(fresh_db_url, parts), prepared(fresh_db_url, parts[::-1])]
    outcomes: list = []
    failures: list = []

    def commit(batch) -> None:
        try:
            with connect(fresh_db_url) as own:
                outcomes.append(commit_batch(own, batch, run_id="race"))
        except Exception as exc:  # a deadlock would end up here
            failures.append(exc)

    threads = [threading.Thread(target=commit, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    loaded = [r for results in outcomes for r in results if not r.already_loaded]
    assert len(loaded) == 8
    assert totals(conn) == (320, 320, 8)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_poll_whose_one_source_fails_loads_the_others(
    fresh_db_url: str, tmp_path: Path, workers: int
):
    items = []
    for i in range(6):
        log = tmp_path / f"node{i}.log"
        write_log(GeneratorConfig(lines=200, seed=i), log)
        items.append(
            RangeLoad(log, file_state(log).identity.key, 0, log.stat().st_size, node=f"n{i}")
        )
    # node 3's file lost its end after the poll planned it (truncated by hand): its range
    # cannot be read, the other sources' ranges load all the same
    broken = items[3]
    with broken.path.open("r+b") as fh:
        fh.truncate(broken.end // 2)
    with Loader(lambda: connect(fresh_db_url), workers=workers, timezone="UTC",
                batch_size=1024 * 1024) as loader:  # fmt: skip
        with pytest.raises(FileNotFoundError, match="node3"):
            loader.load(items)
        again = loader.load(items[:3] + items[4:])  # loaded once: nothing twice
    assert all(s.lines == 0 and s.chunks_already_loaded for s in again)
    with connect(fresh_db_url) as conn:
        per_node = conn.execute(
            "SELECT s.node, sum(l.lines) FROM ingest_ledger l "
            "JOIN sources s ON s.id = l.source_id GROUP BY 1 ORDER BY 1"
        ).fetchall()
        transactions = conn.execute("SELECT count(DISTINCT xmin::text) FROM ingest_ledger")
        assert transactions.fetchone()[0] == 1  # the five sources' small ranges, together
    assert per_node == [(f"n{i}", 200) for i in (0, 1, 2, 4, 5)]
