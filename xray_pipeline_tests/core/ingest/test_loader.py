"""The Loader: many sources' ranges, a bounded number at a time, on connections kept open."""

from pathlib import Path

import pytest

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.files import file_state
from xray_pipeline.core.ingest.loader import Loader, RangeLoad
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log


def sessions(url: str) -> int:
    with connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()[0]


@pytest.mark.parametrize("workers", [1, 3])
def test_ranges_of_many_sources_load_once_on_a_bounded_set_of_connections(
    fresh_db_url: str, tmp_path: Path, workers: int
):
    logs = []
    for i in range(6):
        log = tmp_path / f"node{i}.log"
        write_log(GeneratorConfig(lines=300 + 50 * i, seed=i), log)
        logs.append(log)
    items = [
        RangeLoad(log, file_state(log).identity.key, 0, log.stat().st_size, node=f"n{i}")
        for i, log in enumerate(logs)
    ]
    with Loader(lambda: connect(fresh_db_url), workers=workers, timezone="UTC",
                batch_size=64 * 1024) as loader:  # fmt: skip
        first = loader.load(items[:3])
        peak = sessions(fresh_db_url)
        rest = loader.load(items[3:])
        again = loader.load(items)  # loaded before: nothing twice
        assert len(loader.opened) <= 2 * workers  # kept open, not one per load
    assert peak <= 2 * workers
    assert [s.lines for s in first + rest] == [300 + 50 * i for i in range(6)]
    assert all(s.lines == 0 and s.chunks_already_loaded for s in again)
    with connect(fresh_db_url) as conn:
        per_node = conn.execute(
            "SELECT s.node, count(*) FROM (SELECT source_id FROM logs UNION ALL "
            "SELECT source_id FROM dns_queries UNION ALL SELECT source_id FROM rejects) r "
            "JOIN sources s ON s.id = r.source_id GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert per_node == [(f"n{i}", 300 + 50 * i) for i in range(6)]
    assert sessions(fresh_db_url) == 0  # closed with the loader


def test_an_error_is_raised_after_the_other_loads_ended(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "a.log"
    write_log(GeneratorConfig(lines=100), log)
    good = RangeLoad(log, file_state(log).identity.key, 0, log.stat().st_size)
    missing = RangeLoad(tmp_path / "gone.log", "1:2:x", 0, 10)
    with Loader(lambda: connect(fresh_db_url), workers=2, timezone="UTC",
                batch_size=64 * 1024) as loader:  # fmt: skip
        with pytest.raises(FileNotFoundError):
            loader.load([missing, good])
        with connect(fresh_db_url) as conn:
            assert conn.execute("SELECT sum(lines) FROM ingest_ledger").fetchone()[0] == 100
