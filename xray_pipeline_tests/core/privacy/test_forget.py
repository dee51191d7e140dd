"""`forget` leaves no trace of a user in any table or landed file, keeps everyone else's rows
and the checks true, and a later load of the same bytes does not bring the user back;
`export` reports what is kept."""

import datetime as dt
from pathlib import Path

import polars as pl
import psycopg
import pytest
from conftest import archive_traces, text_traces, write_geo_databases

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.verify import verify_day
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup, reconcile_day, rollup_totals
from xray_pipeline.core.fleet.landing import land, landed_files
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.ingest.rebuild import rebuild_day
from xray_pipeline.core.privacy.export import export_user
from xray_pipeline.core.privacy.forget import forget_user
from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.policy import RowPolicy

DAYS = (dt.date(2024, 5, 1), dt.date(2024, 5, 2))


def line(day: int, second: int, user: str, source: str, host: str) -> str:
    return (
        f"2024/05/0{day} 10:00:{second:02d} from {source}:4000{second % 10} accepted "
        f"tcp:{host}:443 [in >> out] email: {user}\n"
    )


LOG = "".join(
    [
        line(1, 0, "Victim Smith", "192.0.2.66", "only-victim.example"),
        line(1, 1, "bob", "192.0.2.7", "shared.example"),
        line(1, 2, "Victim Smith", "192.0.2.7", "shared.example"),
        line(2, 3, "Victim Smith", "2001:db8::66", "only-victim.example"),
        line(2, 4, "bob", "203.0.113.9", "bob.example"),
        # an error-log line in the access log: a reject that names the user
        "2024/05/02 10:00:05.000001 [Info] [42] app/dispatcher: taking detour for "
        "email: Victim Smith\n",
        "not a record at all\n",
    ]
)
PRIVATE = ["Victim Smith", "192.0.2.66", "2001:db8::66", "only-victim.example"]


@pytest.fixture
def loaded(conn: psycopg.Connection, tmp_path: Path) -> Path:
    landing = tmp_path / "landed"
    land(landing, "n1", "64:7:abc", "/var/log/xray/access.log", 0, LOG.encode())
    policy = RowPolicy(geoip=GeoIP(*write_geo_databases(tmp_path)))
    for path, node in landed_files(landing):
        ingest_files(conn, [path], timezone="UTC", batch_size=1 << 20, node=node, policy=policy)
    for day in DAYS:
        for table in ROLLUPS:
            rebuild_rollup(conn, table, day, "UTC")
    return landing


def test_forget_leaves_no_trace_and_keeps_everyone_else(conn, loaded: Path):
    assert text_traces(conn, PRIVATE)  # the search finds them before
    bob_before = conn.execute(
        "SELECT count(*) FROM logs l JOIN users u ON u.id = l.user_id WHERE u.email = 'bob'"
    ).fetchone()[0]
    report = forget_user(conn, "Victim Smith", timezone="UTC", landing_dir=loaded)
    assert report.found and report.erased["logs"] == 3 and report.erased["rejects"] == 1
    assert report.erased["users"] == 1 and report.landed_lines == 4
    assert report.days == list(DAYS)
    assert text_traces(conn, PRIVATE) == []
    landed = b"".join(p.read_bytes() for p, _ in landed_files(loaded))
    assert all(t.encode() not in landed for t in PRIVATE)
    assert len(landed) == len(LOG.encode())  # offsets kept: only the bytes of its lines
    # everyone else's rows, places and destinations stay
    bob_after = conn.execute(
        "SELECT count(*) FROM logs l JOIN users u ON u.id = l.user_id WHERE u.email = 'bob'"
    ).fetchone()[0]
    assert bob_after == bob_before == 2
    kept = {r[0] for r in conn.execute("SELECT address FROM ip_places")}
    assert {"192.0.2.7", "203.0.113.9"} <= kept  # 192.0.2.7 was the victim's too
    hosts = {r[0] for r in conn.execute("SELECT host FROM endpoints")}
    assert {"shared.example", "bob.example"} <= hosts
    # the checks still hold: the ledger counts the erased lines, the totals were recounted
    for day in DAYS:
        assert reconcile_day(conn, day, "UTC").ok
        for table in ROLLUPS:
            total, rows = rollup_totals(conn, table, day, "UTC")
            assert total == rows, (table, day)
    conn.commit()


def test_a_later_load_of_the_same_bytes_does_not_bring_the_user_back(conn, loaded: Path):
    forget_user(conn, "Victim Smith", timezone="UTC", landing_dir=loaded)
    for day in DAYS:  # a backfill re-reads the day from the landed bytes
        rebuild_day(conn, day, timezone="UTC", batch_size=1 << 20)
        assert reconcile_day(conn, day, "UTC").ok
    assert text_traces(conn, PRIVATE) == []
    # and the raw bytes, were they still somewhere, are dropped at load
    again = loaded.parent / "again.log"  # another file (another first line): a new source
    again.write_text(line(2, 9, "carol", "198.51.100.1", "c.example") + LOG)
    ingest_files(conn, [again], timezone="UTC", batch_size=1 << 20)
    assert text_traces(conn, ["Victim Smith"]) == []
    [(erased,)] = conn.execute(
        "SELECT erased FROM ingest_ledger l JOIN sources s ON s.id = l.source_id WHERE s.path = %s",
        (str(again),),
    ).fetchall()
    assert erased == 4  # three access lines and one reject are not stored
    conn.commit()


def test_export_reports_what_is_kept(conn, loaded: Path):
    report = export_user(conn, "Victim Smith", timezone="UTC")
    assert report["found"] and not report["forgotten"]
    assert [d["rows"] for d in report["log_rows_by_day"]] == [2, 1]
    sources = {s["source"]: s for s in report["sources"]}
    assert set(sources) == {"192.0.2.66", "192.0.2.7", "2001:db8::66"}
    assert sources["192.0.2.66"]["country"] == "DE" and sources["192.0.2.66"]["asn"] == 64500
    assert sum(s["connections"] for s in report["sources"]) == 3
    assert {d["host"] for d in report["destinations"]} == {"only-victim.example", "shared.example"}
    assert report["nodes"] == ["n1"] and report["rejects"] == 1
    assert report["rollup_rows"]["daily_user_ips"] == 3
    forget_user(conn, "Victim Smith", timezone="UTC", landing_dir=loaded)
    after = export_user(conn, "Victim Smith", timezone="UTC")
    assert after == {**after, "found": False, "forgotten": True, "rejects": 0}


def test_forgetting_an_unknown_user_erases_nothing(conn, loaded: Path):
    report = forget_user(conn, "nobody@example.org", timezone="UTC", landing_dir=loaded)
    assert not report.found and report.landed_lines == 0 and report.erased == {"rejects": 0}
    assert conn.execute("SELECT count(*) FROM logs").fetchone()[0] == 5


@pytest.mark.parametrize("first_day", ["hot", "cold"])
def test_forget_reaches_the_archive_and_export_reads_it(
    conn, loaded: Path, tmp_path: Path, first_day: str
):
    store = ArchiveStore(str(tmp_path / "archive"))
    for day in DAYS:
        archive_day(conn, store, day, "UTC")
    if first_day == "cold":  # the first day left PostgreSQL (past [retention] hot_days)
        conn.execute("DROP TABLE logs_2024_05_01")
        conn.commit()
    assert archive_traces(Path(store.root), PRIVATE)  # the search finds them before
    exported = export_user(conn, "Victim Smith", timezone="UTC", archive=store)
    assert [d["rows"] for d in exported["log_rows_by_day"]] == [2, 1]
    assert exported["destinations"][0] == {
        "host": "only-victim.example", "port": 443, "connections": 2,
    }  # fmt: skip
    assert exported["nodes"] == ["n1"]

    report = forget_user(conn, "Victim Smith", timezone="UTC", landing_dir=loaded, archive=store)
    assert report.erased["archive.logs"] == 3 and report.erased["archive.rejects"] == 1
    assert report.days == list(DAYS)
    assert text_traces(conn, PRIVATE) == []
    assert archive_traces(Path(store.root), PRIVATE) == []
    # the archive still holds everyone else, and agrees with PostgreSQL where it is
    bob = pl.scan_parquet(f"{store.root}/day=*/logs-*.parquet").filter(pl.col("user") == "bob")
    assert bob.select(pl.len()).collect().item() == 2
    for day in DAYS:
        check = verify_day(conn, store, day, "UTC")
        assert check.ok, check.problems
    if first_day == "cold":
        # the day's erased lines count in the ledger, as a deletion from logs does
        erased = conn.execute("SELECT sum(erased) FROM ingest_ledger").fetchone()[0]
        assert erased == 3 + 1  # the victim's rows on both days and the reject naming them
    conn.commit()
