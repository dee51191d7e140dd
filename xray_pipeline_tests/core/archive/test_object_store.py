"""The archive in an object store: an S3 server (moto's, over real HTTP) holds the day's files,
written through fsspec (s3fs) and read by Polars natively; the check, erasure and the API's
reads work there as in a folder."""

import datetime as dt
from pathlib import Path

import fsspec
import polars as pl
import pytest
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from xray_pipeline.api.main import create_app
from xray_pipeline.core.archive.erase import erase_rows
from xray_pipeline.core.archive.read import day_files, scan
from xray_pipeline.core.archive.store import ArchiveStore
from xray_pipeline.core.archive.tables import LOGS
from xray_pipeline.core.archive.tiering import leave_postgres
from xray_pipeline.core.archive.verify import verify_day
from xray_pipeline.core.archive.write import archive_day
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

DAY = dt.date(2025, 11, 17)


@pytest.fixture
def bucket(monkeypatch) -> str:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("xray-archive")
    yield "s3://xray-archive/center"
    server.stop()


def test_a_day_archived_in_an_object_store_is_checked_read_and_erased(
    fresh_db_url: str, tmp_path: Path, bucket: str
):
    log = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=4_000, days=2, users=10), log)
    store = ArchiveStore(bucket)
    with connect(fresh_db_url) as conn:
        ingest_files(conn, [log], timezone="UTC", batch_size=1 << 20)
        written = archive_day(conn, store, DAY, "UTC")
        assert verify_day(conn, store, DAY, "UTC").ok
        user = conn.execute(
            "SELECT u.email FROM logs l JOIN users u ON u.id = l.user_id "
            "WHERE l.ts < '2025-11-18' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        paths = day_files(conn, LOGS, [DAY])
    assert written.rows() > 0 and store.listdir("day=2025-11-17") == [
        "dns_queries-000.parquet", "logs-000.parquet", "manifest.json", "rejects-000.parquet",
    ]  # fmt: skip
    rows = scan(store, paths, LOGS).collect()
    assert rows.height == written.rows("logs") and rows["ts"].dt.date().unique().to_list() == [DAY]

    with TestClient(create_app(fresh_db_url, archive=store)) as client:
        before = client.get("/api/logs", params={"user": user, "limit": 40}).json()
        with connect(fresh_db_url) as conn:
            tiers = leave_postgres(conn, store, today=DAY + dt.timedelta(days=2), hot_days=1,
                                   timezone="UTC")  # fmt: skip
        assert tiers.dropped == [DAY]
        after = client.get("/api/logs", params={"user": user, "limit": 40}).json()
    assert after == before and after["items"]

    with connect(fresh_db_url) as conn:
        erased = erase_rows(conn, store, lambda t: (pl.col("user") != user) if t is LOGS else None)
        assert erased.days == [DAY] and erased.rows["logs"] > 0
        check = verify_day(conn, store, DAY, "UTC")
        assert check.ok and check.database_rows is None
    left = scan(store, paths, LOGS).filter(pl.col("user") == user).collect()
    assert left.is_empty()

    # a changed object fails the check, as a changed file does
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file(f"{bucket}/{paths[0]}", b"not parquet")
    with connect(fresh_db_url) as conn:
        check = verify_day(conn, store, DAY, "UTC")
    assert not check.ok and "changed: its SHA-256" in check.problems[0]
