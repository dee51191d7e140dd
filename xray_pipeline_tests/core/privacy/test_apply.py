"""`privacy apply` rewrites older days to the current settings: what the tables hold after,
read with SQL; a resumed run skips the days done; newer days and their places stay."""

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from conftest import archive_traces, run_cli, write_geo_databases

from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.verify import verify_day
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup, reconcile_day, rollup_totals
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.privacy.apply import apply_policy
from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.policy import RowPolicy

SECRET = b"a-secret-of-sixteen-or-more"
LOG = "".join(
    f"2024/05/0{day} 10:00:0{i} from {src}:1 accepted tcp:{host}:443 [in >> out] email: {user}\n"
    for day, i, src, host, user in [
        (1, 0, "192.0.2.7", "www.video.example.co.uk", "alice"),
        (1, 1, "192.0.2.9", "api.example.com", "alice"),
        (2, 2, "2001:db8::5", "www.video.example.co.uk", "bob"),
        (3, 3, "192.0.2.7", "cdn.example.org", "alice"),  # the newest day: not rewritten
    ]
)
DAYS = [dt.date(2024, 5, d) for d in (1, 2, 3)]


@pytest.fixture
def loaded(conn: psycopg.Connection, tmp_path: Path) -> GeoIP:
    log = tmp_path / "access.log"
    log.write_text(LOG)
    geoip = GeoIP(*write_geo_databases(tmp_path))
    ingest_files(conn, [log], timezone="UTC", batch_size=1 << 20, policy=RowPolicy(geoip=geoip))
    for day in DAYS:
        for table in ROLLUPS:
            rebuild_rollup(conn, table, day, "UTC")
    return geoip


def rows(conn: psycopg.Connection) -> list[tuple]:
    found = conn.execute(
        "SELECT l.src_ip, l.src_host, e.host, p.country FROM logs l "
        "LEFT JOIN endpoints e ON e.id = l.endpoint_id "
        "LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host) "
        "ORDER BY l.ts"
    ).fetchall()
    conn.commit()
    return found


def test_hash_and_domain_rewrite_the_older_days_only(conn, loaded):
    policy = RowPolicy(source_ip="hash", secret=SECRET, destination="domain")
    report = apply_policy(conn, policy, before=dt.date(2024, 5, 3), timezone="UTC")
    assert [d.day for d in report.days] == DAYS[:2] and not any(d.skipped for d in report.days)
    got = rows(conn)
    assert [r[0] for r in got[:3]] == [None, None, None]
    assert all(r[1].startswith("hash:") for r in got[:3])
    assert [(r[2], r[3]) for r in got[:3]] == [
        ("example.co.uk", "DE"), ("example.com", "DE"), ("example.co.uk", "NL"),
    ]  # fmt: skip
    # the same address hashes as a load under the same settings would have
    assert got[0][1] == policy.sources(["192.0.2.7"])["stored_host"][0]
    # the newest day keeps its address, its place and its full destination
    assert (str(got[3][0]), got[3][2], got[3][3]) == ("192.0.2.7", "cdn.example.org", "DE")
    places = {r[0] for r in conn.execute("SELECT address FROM ip_places")}
    assert "192.0.2.9" not in places and "2001:db8::5" not in places  # only in old days
    assert "192.0.2.7" in places  # still kept by the newest day
    hosts = {r[0] for r in conn.execute("SELECT host FROM endpoints")}
    assert "www.video.example.co.uk" not in hosts and "api.example.com" not in hosts
    for day in DAYS:
        assert reconcile_day(conn, day, "UTC").ok
        for table in ROLLUPS:
            total, count = rollup_totals(conn, table, day, "UTC")
            assert total == count, (table, day)
    sources = {
        r[0] for r in conn.execute("SELECT source FROM daily_user_ips WHERE day < '2024-05-03'")
    }
    assert all(s.startswith("hash:") for s in sources)
    conn.commit()


def test_a_second_run_skips_the_days_done_and_new_settings_apply_again(conn, loaded):
    mask = RowPolicy(source_ip="mask")
    apply_policy(conn, mask, before=dt.date(2024, 5, 3), timezone="UTC")
    again = apply_policy(conn, mask, before=dt.date(2024, 5, 3), timezone="UTC")
    assert all(d.skipped for d in again.days)
    assert [r[1] for r in rows(conn)[:3]] == ["192.0.2.0/24", "192.0.2.0/24", "2001:db8::/48"]
    assert [r[3] for r in rows(conn)[:3]] == ["DE", "DE", "NL"]  # the places moved with them
    none = apply_policy(conn, RowPolicy(destination="none"), before=dt.date(2024, 5, 3),
                        timezone="UTC")  # fmt: skip
    assert not any(d.skipped for d in none.days)
    assert [r[2] for r in rows(conn)] == [None, None, None, "cdn.example.org"]


def test_the_archived_days_are_rewritten_too_in_either_tier(conn, loaded, tmp_path):
    store = ArchiveStore(str(tmp_path / "archive"))
    for day in DAYS:
        archive_day(conn, store, day, "UTC")
    conn.execute("DROP TABLE logs_2024_05_01")  # the first day is only in the archive now
    conn.commit()
    policy = RowPolicy(source_ip="hash", secret=SECRET, destination="domain")
    report = apply_policy(conn, policy, before=dt.date(2024, 5, 3), timezone="UTC", archive=store)
    assert [(d.day, d.rows > 0) for d in report.days] == [(DAYS[0], True), (DAYS[1], True)]
    gone = ["192.0.2.9", "2001:db8::5", "www.video.example.co.uk", "api.example.com"]
    assert archive_traces(Path(store.root), gone) == []
    # the newest day keeps its full address in both tiers
    assert archive_traces(Path(store.root), ["192.0.2.7"]) == [
        ("day=2024-05-03/logs-000.parquet", "src_ip")
    ]
    hashed = policy.sources(["192.0.2.7"])["stored_host"][0]
    assert archive_traces(Path(store.root), [hashed]) == [
        ("day=2024-05-01/logs-000.parquet", "src_host")
    ]
    bob = policy.sources(["2001:db8::5"])["stored_host"][0]  # the day still in PostgreSQL
    assert archive_traces(Path(store.root), [bob]) == [
        ("day=2024-05-02/logs-000.parquet", "src_host")
    ]
    cold = conn.execute(
        "SELECT source, connections FROM daily_user_ips WHERE day = '2024-05-01'"
    ).fetchall()
    masked = policy.sources(["192.0.2.9"])["stored_host"][0]
    assert sorted(cold) == sorted([(masked, 1), (hashed, 1)])
    places = {r[0] for r in conn.execute("SELECT address FROM ip_places")}
    assert "192.0.2.9" not in places and hashed in places
    for day in DAYS:
        check = verify_day(conn, store, day, "UTC")
        assert check.ok, (day, check.problems)
    conn.commit()


def test_the_command_says_what_it_would_do_and_needs_a_confirmation(fresh_db_url, tmp_path):
    log = tmp_path / "access.log"
    log.write_text(LOG)
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(tmp_path / "home")}
    assert run_cli("ingest", "--logfile", str(log), env=env).returncode == 0
    off = run_cli("privacy", "apply", "--before", "2024-05-03", env=env)
    assert off.returncode == 2 and "both `full`" in off.stderr
    env["XRAY_PRIVACY_SOURCE_IP"] = "mask"
    dry = run_cli("privacy", "apply", "--before", "2024-05-03", "--dry-run", env=env)
    assert "would rewrite 2 day(s)" in dry.stdout
    refused = run_cli("privacy", "apply", "--before", "2024-05-03", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = run_cli("privacy", "apply", "--before", "2024-05-03", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(fresh_db_url) as conn:
        kept = conn.execute("SELECT count(*) FROM logs WHERE src_ip IS NOT NULL").fetchone()[0]
    assert kept == 1  # the newest day only
