"""Migration of the original tool's legacy `logs` table, on a real PostgreSQL."""

import subprocess

import pytest
from conftest import run_cli

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.legacy import MigrationError, detect, migrate

LEGACY_SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, email varchar UNIQUE);
CREATE TABLE protocols (id serial PRIMARY KEY, name varchar UNIQUE);
CREATE TABLE endpoints (id serial PRIMARY KEY, address varchar UNIQUE);
CREATE TABLE tags (id serial PRIMARY KEY, name varchar UNIQUE);
CREATE TABLE logs (
    id bigserial PRIMARY KEY, "timestamp" timestamptz, source_ip inet, source_port int,
    action varchar, protocol_id int REFERENCES protocols(id),
    destination_id int REFERENCES endpoints(id), destination_port int,
    inbound_tag_id int REFERENCES tags(id), outbound_tag_id int REFERENCES tags(id),
    user_id int REFERENCES users(id)
);
CREATE INDEX logs_timestamp_idx ON logs ("timestamp");
INSERT INTO users (email) VALUES ('alice'), ('bob');
INSERT INTO protocols (name) VALUES ('tcp'), ('udp');
INSERT INTO endpoints (address) VALUES ('www.example.com'), ('2001:db8::53');
INSERT INTO tags (name) VALUES ('vless-in'), ('direct');
INSERT INTO logs ("timestamp", source_ip, source_port, action, protocol_id, destination_id,
                  destination_port, inbound_tag_id, outbound_tag_id, user_id)
SELECT timestamptz '2025-01-01 00:00:00+00' + (i * interval '37 minutes'),
       CASE WHEN i %% 5 = 0 THEN inet '2001:db8::7' ELSE inet '198.51.100.9' END,
       1000 + i, CASE WHEN i %% 7 = 0 THEN 'rejected' ELSE 'accepted' END,
       1 + i %% 2, 1 + i %% 2, CASE WHEN i %% 2 = 0 THEN 443 ELSE 53 END, 1, 2,
       CASE WHEN i %% 4 = 0 THEN NULL ELSE 1 + i %% 2 END
FROM generate_series(1, %(n)s) AS i;
"""

COMPARE_LEGACY = """
SELECT l."timestamp", host(l.source_ip), l.source_port,
       CASE WHEN l.action = 'rejected' THEN 'rejected' ELSE 'accepted' END, p.name, e.address,
       l.destination_port, ti.name, tout.name, u.email
FROM {logs} l LEFT JOIN {protocols} p ON p.id = l.protocol_id
LEFT JOIN {endpoints} e ON e.id = l.destination_id
LEFT JOIN {tags} ti ON ti.id = l.inbound_tag_id LEFT JOIN {tags} tout ON tout.id = l.outbound_tag_id
LEFT JOIN {users} u ON u.id = l.user_id ORDER BY 1, 3
"""
COMPARE_OURS = """
SELECT l.ts, host(l.src_ip), l.src_port, l.status, p.name, e.host, e.port, ti.name, tout.name,
       u.email
FROM logs l LEFT JOIN protocols p ON p.id = l.dest_protocol_id
LEFT JOIN endpoints e ON e.id = l.endpoint_id
LEFT JOIN tags ti ON ti.id = l.inbound_tag_id LEFT JOIN tags tout ON tout.id = l.outbound_tag_id
LEFT JOIN users u ON u.id = l.user_id ORDER BY 1, 3
"""


@pytest.fixture
def legacy_db(empty_db_url: str) -> tuple[str, list]:
    with connect(empty_db_url) as conn:
        conn.execute(LEGACY_SCHEMA.replace("%%", "%").replace("%(n)s", "300").encode())
        conn.commit()
        before = conn.execute(
            COMPARE_LEGACY.format(
                logs="logs",
                protocols="protocols",
                endpoints="endpoints",
                tags="tags",
                users="users",
            )
        ).fetchall()
    return empty_db_url, before


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli("migrate", *args, env={"XRAY_DATABASE_URL": url})


def test_migrates_the_same_rows_then_is_a_noop(legacy_db):
    url, before = legacy_db
    dry = cli(url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would move 300 rows over 8 days" in dry.stdout
    with connect(url) as conn:
        assert detect(conn) == "legacy"
    result = cli(url)
    assert result.returncode == 0, result.stderr
    assert "300 rows over 8 days verified" in result.stdout
    with connect(url) as conn:
        after = conn.execute(COMPARE_OURS).fetchall()
        assert detect(conn) == "in_progress"  # legacy tables kept aside
        kept = conn.execute(
            COMPARE_LEGACY.format(
                logs="legacy_logs",
                protocols="legacy_protocols",
                endpoints="legacy_endpoints",
                tags="legacy_tags",
                users="legacy_users",
            )
        ).fetchall()
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'logs'::regclass"
        ).fetchone()[0]
    assert after == before == kept
    assert partitions == 8
    assert any(r[1] == "2001:db8::7" for r in after) and any(r[9] is None for r in after)
    again = cli(url, "--drop-old")
    assert again.returncode == 0 and "8 were done by an earlier run" in again.stdout
    assert "legacy tables dropped" in again.stdout
    with connect(url) as conn:
        assert detect(conn) == "ours"
        assert conn.execute(COMPARE_OURS).fetchall() == before
    assert "already has the partitioned schema" in cli(url).stdout


def test_a_killed_migration_resumes_without_duplicates(legacy_db):
    url, before = legacy_db
    calls = []

    def die_after_three(result, done, total):
        calls.append(result.day)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies between two days

    with connect(url) as conn, pytest.raises(KeyboardInterrupt):
        migrate(conn, timezone="UTC", on_day=die_after_three)
    with connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM legacy_migration").fetchone()[0] == 3
        report = migrate(conn, timezone="UTC")
        assert report.days_done_before == 3 and len(report.days) == 5
        assert conn.execute(COMPARE_OURS).fetchall() == before


def test_drop_old_refuses_when_rows_were_not_copied(legacy_db):
    url, _ = legacy_db
    with connect(url) as conn:
        conn.execute("""INSERT INTO logs (action) VALUES ('accepted')""")
        conn.commit()
        with pytest.raises(MigrationError, match="no timestamp"):
            migrate(conn, timezone="UTC", drop_old=True)
        assert conn.execute("SELECT to_regclass('legacy_logs')").fetchone()[0] is not None


def test_partitioned_legacy_layout(empty_db_url: str):
    with connect(empty_db_url) as conn:
        conn.execute("""
            CREATE TABLE users (id serial PRIMARY KEY, email varchar UNIQUE);
            CREATE TABLE protocols (id serial PRIMARY KEY, name varchar UNIQUE);
            CREATE TABLE endpoints (id serial PRIMARY KEY, address varchar UNIQUE);
            CREATE TABLE tags (id serial PRIMARY KEY, name varchar UNIQUE);
            CREATE TABLE logs (id bigserial, "timestamp" timestamptz NOT NULL, source_ip inet,
                source_port int, action varchar, protocol_id int, destination_id int,
                destination_port int, inbound_tag_id int, outbound_tag_id int, user_id int,
                PRIMARY KEY (id, "timestamp")) PARTITION BY RANGE ("timestamp");
            CREATE TABLE logs_2025_01_01 PARTITION OF logs
                FOR VALUES FROM ('2025-01-01') TO ('2025-01-02');
            INSERT INTO logs ("timestamp", source_ip, source_port, action)
                VALUES ('2025-01-01 10:00+00', '192.0.2.1', 1, 'accepted');
        """)
        conn.commit()
        assert detect(conn) == "legacy_partitioned"
        report = migrate(conn, timezone="UTC")
        assert [d.rows for d in report.days] == [1]
        assert conn.execute("SELECT count(*) FROM logs_2025_01_01").fetchone()[0] == 1
        assert conn.execute("SELECT to_regclass('legacy_logs_2025_01_01')").fetchone()[0]


def test_migration_job_in_dagster(legacy_db):
    import dagster as dg

    from xray_pipeline.definitions import build_definitions
    from xray_pipeline.settings import load_settings

    url, before = legacy_db
    defs = build_definitions(load_settings(None, {"postgresql.url": url}, env={}))
    job = defs.resolve_job_def("migrate_legacy_logs_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance)
    assert result.success
    [output] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.event_specific_data.metadata
    assert metadata["layout"].value == "legacy" and metadata["days_migrated_now"].value == 8
    with connect(url) as conn:
        assert conn.execute(COMPARE_OURS).fetchall() == before
