"""Exactly-once loading on a real PostgreSQL: reruns, crashes, appends, rotation, truncation."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import run_cli

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest import files as tail
from xray_pipeline.core.ingest import loader
from xray_pipeline.core.ingest.batch import load_chunk
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.ingest.references import register_source
from xray_pipeline.core.parse import parse_chunk
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def line(ts: str, user: str = "u1", host: str = "a.example") -> str:
    return f"{ts} from 198.51.100.7:40000 accepted tcp:{host}:443 [in >> out] email: {user}\n"


def counts(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM dns_queries), "
        "(SELECT count(*) FROM rejects), (SELECT coalesce(sum(lines), 0) FROM ingest_ledger)"
    ).fetchone()
    conn.commit()
    return dict(zip(("logs", "dns", "rejects", "ledger_lines"), row, strict=True))


def offsets(conn: psycopg.Connection) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT s.path, x.byte_offset FROM (SELECT source_id, byte_offset FROM logs UNION ALL "
        "SELECT source_id, byte_offset FROM dns_queries UNION ALL "
        "SELECT source_id, byte_offset FROM rejects) x JOIN sources s ON s.id = x.source_id "
        "ORDER BY 1, 2"
    ).fetchall()
    conn.commit()
    return rows


def run(conn, *paths: Path, **kwargs):
    kwargs.setdefault("timezone", "UTC")
    kwargs.setdefault("batch_size", 4096)
    return ingest_files(conn, list(paths), **kwargs)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


def test_generated_file_loads_every_line_once(conn, log_dir: Path):
    path = log_dir / "access.log"
    write_log(GeneratorConfig(lines=5_000, days=2, other_share=0.4), path)
    stats = run(conn, path, batch_size=64 * 1024)
    c = counts(conn)
    assert stats.lines == 5_000
    assert c["logs"] + c["dns"] + c["rejects"] == 5_000 == c["ledger_lines"]
    assert (c["logs"], c["dns"], c["rejects"]) == (stats.access_rows, stats.dns_rows, stats.rejects)
    again = run(conn, path)
    assert again.lines == 0 and again.chunks == 0
    assert counts(conn) == c
    all_offsets = offsets(conn)
    assert len(all_offsets) == len(set(all_offsets)) == 5_000
    assert stats.days_touched == ["2025-11-17", "2025-11-18"]


def test_same_chunk_twice_is_reported_not_duplicated(conn, log_dir: Path):
    data = (line("2025/01/01 00:00:00") + line("2025/01/01 00:00:01")).encode()
    source = register_source(conn, "dev:1:abc", str(log_dir / "x.log"))
    conn.commit()
    parsed = parse_chunk(data)
    first = load_chunk(conn, parsed, source, run_id="r1", timezone="UTC")
    second = load_chunk(conn, parsed, source, run_id="r2", timezone="UTC")
    overlapping = load_chunk(
        conn,
        parse_chunk(data[len(data) // 2 :], base_offset=len(data) // 2),
        source,
        run_id="r3",
        timezone="UTC",
    )
    assert not first.already_loaded and first.access_rows == 2
    assert second.already_loaded and overlapping.already_loaded
    assert counts(conn)["logs"] == 2


def test_crash_before_commit_leaves_nothing_and_rerun_completes(conn, log_dir: Path):
    path = log_dir / "access.log"
    path.write_text("".join(line(f"2025/01/01 00:00:{i:02d}") for i in range(50)))

    def boom():
        raise RuntimeError("crash injected between COPY and commit")

    with pytest.raises(RuntimeError):
        run(conn, path, before_commit=boom)
    conn.rollback()
    assert counts(conn) == {"logs": 0, "dns": 0, "rejects": 0, "ledger_lines": 0}
    run(conn, path)
    assert counts(conn)["logs"] == 50


def test_killed_process_leaves_nothing_half_loaded(fresh_db_url: str, log_dir: Path):
    """A real process killed (SIGKILL) inside its load transaction."""
    path = log_dir / "access.log"
    write_log(GeneratorConfig(lines=3_000), path)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from xray_pipeline.core.ingest.oneshot import ingest_files\n"
        "from xray_pipeline.core.db.connect import connect\n"
        "conn = connect(sys.argv[1])\n"
        "calls = []\n"
        "def hook():\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "ingest_files(conn, [Path(sys.argv[2])], timezone='UTC', batch_size=64 * 1024,\n"
        "             before_commit=hook)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, fresh_db_url, str(path)],
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == -9
    with connect(fresh_db_url) as conn:
        half = counts(conn)
        assert half["logs"] + half["dns"] + half["rejects"] == half["ledger_lines"] > 0
        run(conn, path)
        done = counts(conn)
        assert done["logs"] + done["dns"] + done["rejects"] == 3_000 == done["ledger_lines"]
        assert len(set(offsets(conn))) == 3_000


def test_append_loads_only_new_lines_and_partial_line_waits(conn, log_dir: Path):
    path = log_dir / "access.log"
    path.write_text(line("2025/01/01 00:00:00") + line("2025/01/01 00:00:01"))
    run(conn, path)
    with path.open("a") as fh:
        fh.write(line("2025/01/01 00:00:02") + "2025/01/01 00:00:03 from 198.51.100.7:1 acc")
    stats = run(conn, path)
    assert stats.lines == 1
    assert counts(conn)["logs"] == 3
    with path.open("a") as fh:
        fh.write("epted tcp:b.example:443 [in >> out] email: u2\n")
    stats = run(conn, path)
    assert stats.lines == 1
    assert conn.execute(
        "SELECT e.host FROM logs l JOIN endpoints e ON e.id = l.endpoint_id ORDER BY ts DESC LIMIT 1"
    ).fetchone() == ("b.example",)


def test_copytruncate_starts_new_content_at_zero_and_finishes_the_copy(conn, log_dir: Path):
    path = log_dir / "access.log"
    path.write_text("".join(line(f"2025/01/01 00:00:{i:02d}") for i in range(10)))
    run(conn, path)
    with path.open("a") as fh:  # written after our read, before the rotation
        fh.write(line("2025/01/01 00:01:00", user="late"))
    shutil.copyfile(path, log_dir / "access.log.1")
    with path.open("r+") as fh:
        fh.truncate(0)
    with path.open("a") as fh:
        fh.write(line("2025/01/01 00:02:00", user="new"))
    stats = run(conn, path)
    assert stats.lines == 2
    users = {r[0] for r in conn.execute("SELECT email FROM users").fetchall()}
    assert {"late", "new"} <= users
    assert counts(conn)["logs"] == 12


def test_copytruncate_under_a_writer_without_append_loads_every_line_once(conn, log_dir: Path):
    """`xray run > access.log` (no O_APPEND) and logrotate's copytruncate: after each
    truncation the writer's next line lands at its old position, behind a run of NUL bytes.
    Two such files must not pass for one source, or the lines written between the last
    read and the copy (in the `.1` copy only) are lost."""
    path = log_dir / "access.log"
    with path.open("wb") as writer:

        def write(text: str) -> None:
            writer.write(text.encode())
            writer.flush()

        def copytruncate() -> None:
            shutil.copyfile(path, log_dir / "access.log.1")
            os.truncate(path, 0)

        write("".join(line(f"2025/01/01 00:00:{i:02d}") for i in range(30)))  # > 1 KiB
        run(conn, path)
        copytruncate()
        write(line("2025/01/01 01:00:00", user="a1"))
        run(conn, path)
        write(line("2025/01/01 01:00:01", user="a2"))  # written after the read, then copied
        copytruncate()
        write(line("2025/01/01 02:00:00", user="b1"))
        run(conn, path)
        assert run(conn, path).lines == 0
    emails = [
        r[0]
        for r in conn.execute(
            "SELECT u.email FROM logs l JOIN users u ON u.id = l.user_id ORDER BY l.ts"
        ).fetchall()
    ]
    assert emails == ["u1"] * 30 + ["a1", "a2", "b1"]
    # the NUL runs are kept as what they are (empty), not glued to the line after them
    assert conn.execute("SELECT count(*) FROM rejects WHERE reason <> 'empty'").fetchone()[0] == 0


def test_truncation_to_zero_restarts_at_offset_zero(conn, log_dir: Path):
    path = log_dir / "access.log"
    path.write_text("".join(line(f"2025/01/01 00:00:{i:02d}") for i in range(10)))
    run(conn, path)
    os.truncate(path, 0)  # 3x-ui's clearAccessLog
    with path.open("a") as fh:
        fh.write(line("2025/01/01 01:00:00", user="after"))
    stats = run(conn, path)
    assert stats.lines == 1
    assert conn.execute(
        "SELECT min(byte_offset) FROM logs l JOIN users u ON u.id = l.user_id "
        "WHERE u.email = 'after'"
    ).fetchone() == (0,)


def test_rename_and_create_finishes_old_file_then_new(conn, log_dir: Path):
    path = log_dir / "access.log"
    path.write_text("".join(line(f"2025/01/01 00:00:{i:02d}") for i in range(10)))
    run(conn, path)
    rotated = log_dir / "access.log.1"
    path.rename(rotated)
    with rotated.open("a") as fh:  # xray keeps writing to the renamed file until idle
        fh.write(line("2025/01/01 00:05:00", user="old-tail"))
    path.write_text(line("2025/01/01 00:06:00", user="new-file"))
    stats = run(conn, path)
    assert stats.lines == 2
    users = {r[0] for r in conn.execute("SELECT email FROM users").fetchall()}
    assert {"old-tail", "new-file"} <= users
    assert counts(conn)["logs"] == 12
    # an unknown rotated sibling is never taken for the live file
    (log_dir / "access.log.2").write_text(line("2024/12/31 00:00:00", user="archive"))
    assert run(conn, path).lines == 0


def test_midnight_lines_land_in_their_days_partitions(conn, log_dir: Path):
    path = log_dir / "access.log"
    path.write_text(line("2025/01/01 23:59:59.999999") + line("2025/01/02 00:00:00"))
    run(conn, path, timezone="Asia/Shanghai")
    rows = conn.execute("SELECT tableoid::regclass::text FROM logs ORDER BY ts").fetchall()
    assert [r[0] for r in rows] == ["logs_2025_01_01", "logs_2025_01_02"]


def cli_ingest(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_cli("ingest", *args, env=env, timeout=120)


def test_cli_ingest_twice_and_stats_csv(fresh_db_url: str, log_dir: Path):
    path = log_dir / "access.log"
    write_log(GeneratorConfig(lines=2_000), path)
    stats_file = log_dir / "stats.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(
        XRAY_DATABASE_URL=fresh_db_url, XRAY_STATS_FORMAT="csv", XRAY_STATS_OUTPUT=str(stats_file)
    )
    for _ in range(2):
        result = cli_ingest(env, "--logfile", str(path))
        assert result.returncode == 0, result.stderr
    rows = stats_file.read_text().splitlines()
    assert rows[0].startswith("run_id,mode,started,finished,duration_s,source,bytes,lines")
    assert len(rows) == 3
    assert ",2000," in rows[1] and ",0,0," in rows[2]
    with connect(fresh_db_url) as conn:
        c = counts(conn)
        assert c["logs"] + c["dns"] + c["rejects"] == 2_000


def test_cli_ingest_names_an_unreadable_path_and_loads_the_rest(fresh_db_url: str, log_dir: Path):
    good = log_dir / "access.log"
    write_log(GeneratorConfig(lines=300), good)
    folder = log_dir / "xray"  # a folder given where the log file belongs
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(XRAY_DATABASE_URL=fresh_db_url, XRAY_HOME=str(log_dir / "home"))
    result = cli_ingest(env, "-l", str(folder), "-l", str(good))
    assert result.returncode == 1, result.stderr
    assert f"error: {folder} is a folder: name the log file itself" in result.stderr
    assert "300 lines loaded" in result.stderr
    assert "Traceback" not in result.stderr


def test_permission_denied_says_how_to_grant_read_access(tmp_path: Path, monkeypatch):
    # root (CI) reads any file whatever its mode: the refusal is injected where the file opens
    path = tmp_path / "access.log"
    path.write_text("2025/01/01 00:00:00 from 198.51.100.7:1 accepted tcp:a.example:443\n")
    assert tail.unreadable_reason(path) is None
    assert tail.unreadable_reason(tmp_path / "not-yet.log") is None  # absent is no error

    def refuse(p: Path):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(loader, "open_log", refuse)
    monkeypatch.setattr(tail, "open_log", refuse)
    reason = tail.unreadable_reason(path)
    assert reason is not None and reason.startswith(f"{path}: permission denied")
    assert "mode 0600" in reason and "setfacl -d -m u:" in reason and str(tmp_path) in reason
    assert tail.file_state(path) is None  # skipped, not a crash


def test_cli_ingest_says_when_the_statistics_cannot_be_written(fresh_db_url: str, log_dir: Path):
    path = log_dir / "access.log"
    write_log(GeneratorConfig(lines=200), path)
    blocker = log_dir / "not-a-folder"
    blocker.write_text("")  # [stats] output below a file: the folder cannot be made
    env = {"XRAY_DATABASE_URL": fresh_db_url, "XRAY_HOME": str(log_dir / "home")}
    env["XRAY_STATS_OUTPUT"] = str(blocker / "stats.jsonl")
    result = cli_ingest(env, "--logfile", str(path))
    assert result.returncode == 1, result.stderr
    assert "cannot write the run statistics" in result.stderr
    assert "[stats] output" in result.stderr and "Traceback" not in result.stderr
    with connect(fresh_db_url) as conn:  # the run itself was done
        c = counts(conn)
        assert c["logs"] + c["dns"] + c["rejects"] == 200


def test_values_too_long_for_an_index_load_as_rejects_not_into_the_spool(conn, log_dir: Path):
    """Random 9,000-character values (they do not compress under the b-tree limit) used to
    fail the COPY, which was then taken for an outage and spooled, for ever."""
    import random
    import string

    pick = random.Random(1)

    def noise(n: int) -> str:
        return "".join(pick.choice(string.ascii_letters) for _ in range(n))

    path = log_dir / "access.log"
    path.write_text(
        line("2025/01/01 00:00:00", user=noise(9000))
        + line("2025/01/01 00:00:01", host=noise(9000) + ".com")
        + line("2025/01/01 00:00:02", user="fine")
    )
    stats = run(conn, path)
    assert stats.mode == "online" and stats.spooled_chunks == 0
    c = counts(conn)
    assert (c["logs"], c["rejects"], c["ledger_lines"]) == (1, 2, 3)
    reasons = conn.execute("SELECT DISTINCT reason FROM rejects").fetchall()
    assert reasons == [("value_too_long",)]


def test_a_planned_range_loads_from_the_archive_when_rotation_compressed_it(
    conn, fresh_db_url: str, log_dir: Path
):
    """logrotate's `compress` without `delaycompress`: between the sensor's plan and its run,
    access.log became access.log.1.gz. The run finds the bytes in the archive."""
    import gzip

    from xray_pipeline.core.ingest.files import identify
    from xray_pipeline.core.ingest.loader import Loader, RangeLoad

    path = log_dir / "access.log"
    path.write_text("".join(line(f"2025/01/01 00:00:{i:02d}", user=f"z{i}") for i in range(8)))
    identity = identify(path).key
    size = path.stat().st_size
    with path.open("rb") as src, gzip.open(log_dir / "access.log.1.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    path.write_text(line("2025/01/01 01:00:00", user="new"))  # the new live file
    with Loader(lambda: connect(fresh_db_url), workers=1, timezone="UTC",
                batch_size=4096) as loader:  # fmt: skip
        [stats] = loader.load([RangeLoad(path, identity, 0, size)])
    assert stats.lines == 8 and stats.source.endswith("access.log.1.gz")
    assert counts(conn)["logs"] == 8
