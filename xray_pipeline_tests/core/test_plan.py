"""Sensor planning: day boundaries by binary search, size caps, newline-aligned ranges."""

import datetime as dt
import itertools
from pathlib import Path

import pytest

from xray_pipeline.core.generate import GeneratorConfig, write_log
from xray_pipeline.core.plan import day_boundaries, split_range


def _line(day: int, second: int, extra: str = "") -> str:
    return (
        f"2025/01/{day:02d} 23:59:{second:02d}.000001 from 192.0.2.1:1 accepted "
        f"tcp:a.example:443 [in >> out] email: u{extra}\n"
    )


def test_day_boundaries_match_a_full_scan(tmp_path: Path):
    path = tmp_path / "access.log"
    write_log(GeneratorConfig(lines=20_000, days=4, other_share=0.3), path)
    data = path.read_bytes()
    expected = []
    offset = 0
    last = None
    for raw in data.splitlines(keepends=True):
        text = raw.decode()
        if text[:4].isdigit() and text[4] == "/" and "[Info]" not in text[:40]:
            day = dt.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
            if day != last:
                expected.append((offset, day))
                last = day
        offset += len(raw)
    with path.open("rb") as fh:
        assert day_boundaries(fh, 0, len(data)) == expected
    assert [d for _, d in expected] == [
        dt.date(2025, 11, 17) + dt.timedelta(days=i) for i in range(4)
    ]


def test_untimestamped_lines_stay_with_the_day_before(tmp_path: Path):
    path = tmp_path / "access.log"
    text = _line(1, 1) + "junk without time\n" + _line(2, 0) + "more junk\n" + _line(2, 5)
    path.write_text(text)
    with path.open("rb") as fh:
        bounds = day_boundaries(fh, 0, len(text))
    assert bounds == [(0, dt.date(2025, 1, 1)), (text.index("2025/01/02"), dt.date(2025, 1, 2))]


@pytest.mark.parametrize("cap", [200, 1000, 10**9])
def test_split_range_covers_everything_on_line_starts(tmp_path: Path, cap: int):
    path = tmp_path / "access.log"
    text = "".join(_line(1 + i // 30, i % 30) for i in range(90))
    path.write_text(text)
    requests = split_range(path, "id", 0, len(text), max_bytes=cap)
    assert requests[0].start == 0 and requests[-1].end == len(text)
    for a, b in itertools.pairwise(requests):
        assert a.end == b.start
    starts = {0} | {i + 1 for i, c in enumerate(text) if c == "\n"}
    assert all(r.start in starts and r.end in starts for r in requests)
    for r in requests:
        days = {line[:10] for line in text[r.start : r.end].splitlines()}
        assert days == {r.day.strftime("%Y/%m/%d")}
        if cap < 10**9:
            assert r.end - r.start <= cap + len(_line(1, 1))
    assert {r.day for r in requests} == {dt.date(2025, 1, d) for d in (1, 2, 3)}


def test_range_without_any_timestamp_is_one_request(tmp_path: Path):
    path = tmp_path / "access.log"
    path.write_text("banner\nmore\n")
    [request] = split_range(path, "id", 0, 12, max_bytes=10**6)
    assert (request.start, request.end, request.day) == (0, 12, None)


@pytest.mark.parametrize(
    "stamp", ["2025/11/17 23:59:59", "2025/11/17 00:00:00.123456", "2024/02/29 12:00:00.1"]
)
def test_the_planner_reads_the_parsers_timestamp_token(stamp: str):
    """plan.py keeps its own copy of the token, so that the shipper needs no parser."""
    import re

    from xray_pipeline.core import plan
    from xray_pipeline.core.parse import TS

    assert re.fullmatch(TS, stamp)
    match = plan._TS_RE.match(stamp.encode())
    assert match and match.group(0).decode() == stamp[:19]
