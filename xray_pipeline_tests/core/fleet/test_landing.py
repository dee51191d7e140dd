"""The center's landing store: ranges appended in order, fsynced, each stored once."""

import datetime as dt
import gzip
from pathlib import Path

import pytest

from xray_pipeline.core.fleet import landing
from xray_pipeline.core.fleet.landing import (
    LandingError,
    inflate,
    land,
    landed_files,
    landed_sources,
    last_contact,
    prune_landed,
    record_contact,
    segments,
    source_key,
)
from xray_pipeline.core.ingest.files import file_state

LINE = b"2025/01/01 00:00:00 from 192.0.2.1:1 accepted tcp:a.example:443 email: u\n"


def test_ranges_land_in_order_and_each_once(tmp_path: Path):
    assert land(tmp_path, "n1", "1:2:abc", "/var/log/xray/access.log", 0, LINE) == len(LINE)
    two = LINE * 2
    assert land(tmp_path, "n1", "1:2:abc", "", len(LINE), two) == 3 * len(LINE)
    # sent again (the acknowledgement was lost): acknowledged, stored once
    assert land(tmp_path, "n1", "1:2:abc", "", len(LINE), two) == 3 * len(LINE)
    assert land(tmp_path, "n1", "1:2:abc", "", 0, LINE) == 3 * len(LINE)
    # overlapping what landed (a crash between write and acknowledgement): the rest lands
    assert land(tmp_path, "n1", "1:2:abc", "", 2 * len(LINE), two) == 4 * len(LINE)
    [source] = landed_sources(tmp_path, "n1").values()
    assert source.path.read_bytes() == LINE * 4
    assert (source.identity, source.remote_path, source.end) == (
        "1:2:abc",
        "/var/log/xray/access.log",
        4 * len(LINE),
    )
    assert landed_files(tmp_path) == [(source.path, "n1")]
    assert file_state(source.path) is not None  # a log file like any other


def test_a_gap_is_refused_with_the_offset_expected(tmp_path: Path):
    land(tmp_path, "n1", "id", "", 0, LINE)
    with pytest.raises(LandingError) as gap:
        land(tmp_path, "n1", "id", "", 5 * len(LINE), LINE)
    assert gap.value.status == 409 and gap.value.expected == len(LINE)
    assert landed_sources(tmp_path, "n1")["id"].end == len(LINE)


def test_a_source_may_start_where_the_node_first_read_it(tmp_path: Path):
    assert land(tmp_path, "n1", "id", "", 1000, LINE) == 1000 + len(LINE)
    with pytest.raises(LandingError) as before:
        land(tmp_path, "n1", "id", "", 0, LINE)
    assert before.value.status == 409 and before.value.expected == 1000 + len(LINE)


def test_a_range_must_end_at_a_line_end(tmp_path: Path):
    with pytest.raises(LandingError) as partial:
        land(tmp_path, "n1", "id", "", 0, LINE[:-5])
    assert partial.value.status == 422 and "end of a line" in str(partial.value)
    assert landed_sources(tmp_path, "n1") == {}


@pytest.mark.parametrize("node", ["../x", "a/b", ".."])
def test_a_node_name_cannot_leave_the_landing_folder(tmp_path: Path, node: str):
    with pytest.raises(ValueError, match="not allowed"):
        land(tmp_path / "root", node, "id", "", 0, LINE)
    assert not list(tmp_path.rglob("*.log"))


def test_bodies_inflate_within_the_limit():
    assert inflate(gzip.compress(LINE), "gzip", 1000) == LINE
    assert inflate(LINE, None, 1000) == LINE
    bomb = gzip.compress(b"\n" * 10_000_000)
    with pytest.raises(LandingError) as big:
        inflate(bomb, "gzip", 1_000_000)
    assert big.value.status == 413
    with pytest.raises(LandingError) as bad:
        inflate(b"not gzip", "gzip", 1000)
    assert bad.value.status == 400
    with pytest.raises(LandingError) as truncated:
        inflate(gzip.compress(LINE * 50)[:-20], "gzip", 100_000)
    assert truncated.value.status == 400
    with pytest.raises(LandingError) as other:
        inflate(LINE, "br", 1000)
    assert other.value.status == 415


def test_last_contact(tmp_path: Path):
    assert last_contact(tmp_path, "n1") == (None, None)
    record_contact(tmp_path, "n1", "xray-pipeline-ship/0.1")
    when, version = last_contact(tmp_path, "n1")
    assert when is not None and version == "xray-pipeline-ship/0.1"
    assert landed_sources(tmp_path, "n1") == {}


def test_segments_roll_over_and_retention_removes_the_loaded_old_ones(tmp_path: Path):
    lines = [f"line {i:04d}\n".encode() for i in range(10)]
    offset = 0
    for line in lines:
        offset = land(tmp_path, "n1", "id", "/a.log", offset, line, segment_bytes=3 * len(line))
    parts = sorted(tmp_path.glob("n1/*.log"))
    assert [p.stat().st_size for p in parts] == [30, 30, 30, 10]
    assert b"".join(
        p.read_bytes() for p in sorted(parts, key=lambda p: int(p.name.split(".")[1]))
    ) == b"".join(lines)
    source = landed_sources(tmp_path, "n1")["id"]
    assert (source.end, source.base) == (100, 90)
    # the pipeline sees each segment as a file of node n1
    assert sorted(landed_files(tmp_path)) == [(p, "n1") for p in parts]
    old = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    loaded = {str(p): p.stat().st_size for p in parts}
    segment_0, segment_30, segment_60 = (
        tmp_path / "n1" / f"{source_key('id')}.{b}.log" for b in (0, 30, 60)
    )
    loaded[str(segment_30)] -= 1  # not loaded to its end: kept
    removed = prune_landed(tmp_path, loaded, before=old)
    assert removed == [segment_0, segment_60]
    assert not prune_landed(tmp_path, loaded, before=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    # the newest segment stays, so where the landed bytes end stays known; a resend of a
    # pruned range is acknowledged, one from before the first landed byte is not
    assert land(tmp_path, "n1", "id", "", 0, lines[0]) == 100
    assert landed_sources(tmp_path, "n1")["id"].end == 100
    assert land(tmp_path, "n1", "id", "", 100, b"next\n") == 105


@pytest.mark.parametrize("forget_every", [0, 1, 3])
def test_segments_stay_right_whether_or_not_the_tail_is_remembered(
    tmp_path: Path, forget_every: int
):
    """land() remembers each source's last segment; forgetting it (another process's view,
    a restart) at any call changes nothing: the same segments, whole lines, each byte once."""
    lines = [f"2025/01/01 00:00:{i % 60:02d} line {i}\n".encode() for i in range(120)]
    offset = 0
    for n in range(0, len(lines), 7):
        if forget_every and n % forget_every == 0:
            landing._tails.clear()
        data = b"".join(lines[n : n + 7])
        assert land(tmp_path, "n1", "id:1", "/x.log", offset, data, segment_bytes=300) == (
            offset + len(data)
        )
        # a resend of the same range is acknowledged and stored once
        assert land(tmp_path, "n1", "id:1", "/x.log", offset, data, segment_bytes=300) == (
            offset + len(data)
        )
        offset += len(data)
    parts = segments(tmp_path / "n1", source_key("id:1"))
    assert b"".join(p.read_bytes() for _, p in parts) == b"".join(lines)
    assert len(parts) > 5 and all(p.read_bytes().endswith(b"\n") for _, p in parts)
    assert [base for base, _ in parts] == [
        sum(p.stat().st_size for _, p in parts[:i]) for i in range(len(parts))
    ]
