"""The byte-range decisions, pure: what is new, the sensor's plan, the retry policy of a hole,
the batching of a tick's pieces, day boundaries by binary search, size caps and newline-aligned
ranges. No database, no Dagster."""

import datetime as dt
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xray_pipeline.core.ingest.files import FileIdentity, FileState
from xray_pipeline.core.ingest.ledger import holes, missing_ranges
from xray_pipeline.core.ingest.plan import (
    MAX_HOLE_ATTEMPTS,
    STALE_AFTER_S,
    Piece,
    PlannedRange,
    RangeRequest,
    batch_pieces,
    day_boundaries,
    earliest_day,
    hole_run_key,
    new_ranges,
    plan_reads,
    plan_requests,
    rewind_cursor,
    split_range,
    watched_file,
)
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log

LIVE = Path("/var/log/xray/access.log")


def state(path: Path, inode: int, size: int, *, fp: str = "f1", end: int | None = None):
    return FileState(path, FileIdentity(1, inode, fp), size, complete_end=end)


@pytest.mark.parametrize(
    ("loaded", "start", "end", "expected"),
    [
        ([], 0, 100, [(0, 100)]),
        ([(0, 50)], 0, 100, [(50, 100)]),
        ([(0, 100)], 0, 100, []),
        ([(10, 50), (60, 80)], 0, 100, [(0, 10), (50, 60), (80, 100)]),
        ([(10, 50), (20, 40)], 0, 60, [(0, 10), (50, 60)]),  # overlapping ranges
        ([(60, 80), (10, 50)], 0, None, [(0, 10), (50, 60), (80, None)]),  # unsorted, open end
        ([(0, 10), (50, 60)], 20, 40, [(20, 40)]),
        ([(0, 30), (35, 60)], 20, 50, [(30, 35)]),
    ],
)
def test_missing_ranges(loaded, start, end, expected):
    assert missing_ranges(loaded, start, end) == expected


@given(
    st.lists(
        st.tuples(st.integers(0, 500), st.integers(1, 50)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=12,
    ),
    st.integers(0, 600),
    st.integers(0, 600),
)
def test_missing_ranges_and_loaded_cover_the_span_exactly_once(loaded, a, b):
    start, end = min(a, b), max(a, b)
    gaps = missing_ranges(loaded, start, end)
    covered = {i for lo, hi in loaded for i in range(lo, hi)}
    assert {i for lo, hi in gaps for i in range(lo, hi)} == set(range(start, end)) - covered
    assert all(lo < hi for lo, hi in gaps)
    assert gaps == sorted(gaps)


def test_holes_are_the_gaps_behind_the_last_loaded_byte():
    assert holes([]) == []
    assert holes([(0, 10), (20, 30)]) == [(10, 20)]
    assert holes([(5, 10)]) == [(0, 5)]


def test_new_ranges_after_the_last_byte_or_every_hole_from_the_start():
    assert new_ranges([(10, 50)], 100, from_start=False) == [(50, 100)]
    assert new_ranges([(10, 50)], 100, from_start=True) == [(0, 10), (50, 100)]
    assert new_ranges([(10, 50), (60, 80)], 100, from_start=True) == [(0, 10), (50, 60), (80, 100)]
    assert new_ranges([(0, 50)], 50, from_start=False) == []
    assert new_ranges([(0, 50)], -1, from_start=False) == [(50, None)]  # a .gz: size unknown
    assert new_ranges([], 0, from_start=False) == []


def test_plan_reads_never_takes_an_unknown_rotated_copy_for_the_live_file():
    rotated = state(LIVE.with_name("access.log.1"), 2, 500, fp="old")
    live = state(LIVE, 3, 100, fp="new")
    tasks, notes = plan_reads([live, rotated], {}, explicit={LIVE})
    assert [(t.path, t.start, t.end) for t in tasks] == [(LIVE, 0, 100)]
    assert notes == []


def test_plan_reads_reads_a_copy_of_a_known_file_as_that_source():
    known = "1:9:f1"  # copytruncate's .1 has the loaded file's bytes under another inode
    copy = state(LIVE.with_name("access.log.1"), 2, 300)
    tasks, _ = plan_reads([copy], {known: [(0, 200)]}, explicit={LIVE})
    assert [(t.identity, t.start, t.end) for t in tasks] == [(known, 200, 300)]


def test_plan_reads_reports_a_file_truncated_in_place():
    tasks, notes = plan_reads([state(LIVE, 1, 50)], {"1:1:f1": [(0, 80)]}, explicit={LIVE})
    assert tasks == [] and "truncated in place" in notes[0]


def test_watched_file_of_a_rotated_copy():
    other = Path("/var/log/xray/error.log")
    assert watched_file(LIVE.with_name("access.log.1"), [LIVE, other]) == LIVE
    assert watched_file(LIVE.with_name("access.log-20250101"), [LIVE]) == LIVE
    assert watched_file(LIVE.with_name("access.logger"), [LIVE]) == LIVE.with_name("access.logger")
    assert watched_file(LIVE, [LIVE]) == LIVE


def test_plan_requests_stops_at_the_last_complete_line_and_remembers_it():
    live = state(LIVE, 1, 1000, end=940)
    planned, cursor, _ = plan_requests([LIVE], [live], {}, {}, now=100.0)
    assert [(p.start, p.end, p.suffix, p.hole) for p in planned] == [(0, 940, "", False)]
    assert cursor == {"1:1:f1": {"end": 940, "at": 100.0, "retry": 0}}


def test_plan_requests_does_not_request_a_range_in_flight_again():
    live = state(LIVE, 1, 1000, end=1000)
    cursor = {"1:1:f1": {"end": 940, "at": 100.0, "retry": 0}}
    planned, new_cursor, _ = plan_requests([LIVE], [live], {}, cursor, now=110.0)
    assert [(p.start, p.end) for p in planned] == [(940, 1000)]
    assert new_cursor["1:1:f1"]["end"] == 1000
    idle, _, _ = plan_requests([LIVE], [state(LIVE, 1, 940, end=940)], {}, cursor, now=110.0)
    assert idle == []


def test_plan_requests_retries_a_stale_request_under_a_new_key():
    live = state(LIVE, 1, 940, end=940)
    cursor = {"1:1:f1": {"end": 940, "at": 100.0, "retry": 0}}
    later = 100.0 + STALE_AFTER_S + 1
    planned, new_cursor, _ = plan_requests([LIVE], [live], {}, cursor, now=later)
    assert [(p.start, p.end, p.suffix) for p in planned] == [(0, 940, "#retry1")]
    assert new_cursor["1:1:f1"]["retry"] == 1


def test_plan_requests_plans_the_holes_behind_loaded_ranges():
    live = state(LIVE, 1, 300, end=300)
    loaded = {"1:1:f1": [(0, 100), (200, 300)]}
    planned, _, _ = plan_requests([LIVE], [live], loaded, {}, now=1.0)
    assert [(p.start, p.end, p.hole) for p in planned] == [(100, 200, True)]


def test_a_hole_is_retried_under_new_keys_then_given_up_on():
    used: set[str] = set()
    keys = []
    for _ in range(MAX_HOLE_ATTEMPTS):
        key, why = hole_run_key("k:0-10", 0, 10, [], used.__contains__)
        assert why is None
        keys.append(key)
        used.add(key)
    assert keys == ["k:0-10", *(f"k:0-10#hole{n}" for n in range(1, MAX_HOLE_ATTEMPTS))]
    key, why = hole_run_key("k:0-10", 0, 10, [], used.__contains__)
    assert key is None and "still not loaded after 5 runs" in why


def test_a_hole_waits_while_a_run_covers_part_of_it():
    assert hole_run_key("k:0-10", 0, 10, [(5, 20)], lambda key: False) == (None, None)
    assert hole_run_key("k:0-10", 0, 10, [(10, 20)], lambda key: False) == ("k:0-10", None)


def test_earliest_day_of_the_logs_and_their_rotated_copies(tmp_path: Path):
    live, rotated, empty = (tmp_path / n for n in ("access.log", "access.log.1", "other.log"))
    live.write_text("banner without a time\n2025/03/02 10:00:00 from 1.2.3.4:1 rejected  x\n")
    rotated.write_text("2025/02/27 23:59:59.000001 from 1.2.3.4:1 rejected  x\n")
    empty.write_text("no record here\n")
    assert earliest_day([live]) == dt.date(2025, 3, 2)
    assert earliest_day([live, rotated, empty, tmp_path / "missing.log"]) == dt.date(2025, 2, 27)
    assert earliest_day([empty]) is None


def piece(identity: str, start: int, end: int, day: str, path: Path = LIVE) -> Piece:
    item = PlannedRange(path, path, identity, start, end)
    return Piece(item, RangeRequest(path, identity, start, end, None), day)


def test_batches_one_run_per_day_of_every_source():
    pieces = [piece("a", 0, 10, "d1"), piece("a", 10, 20, "d2"), piece("b", 0, 5, "d1")]
    batches, deferred = batch_pieces(pieces, set(), max_bytes=100)
    assert [[(p.request.identity, p.partition) for p in b] for b in batches] == [
        [("a", "d1"), ("b", "d1")],
        [("a", "d2")],
    ]
    assert deferred == {}


def test_a_busy_day_defers_its_pieces_and_the_later_ones_of_their_sources():
    pieces = [piece("a", 0, 10, "d1"), piece("a", 10, 20, "d2"), piece("b", 0, 5, "d2")]
    batches, deferred = batch_pieces(pieces, {"d1"}, max_bytes=100)
    assert [[(p.request.identity, p.request.start) for p in b] for b in batches] == [[("b", 0)]]
    assert deferred == {"a": 0}  # a's day-2 piece waits too: requests stay a prefix


def test_a_batch_stops_at_max_bytes_but_takes_at_least_one_piece():
    pieces = [piece("a", 0, 60, "d1"), piece("b", 0, 60, "d1"), piece("c", 0, 500, "d2")]
    batches, deferred = batch_pieces(pieces, set(), max_bytes=100)
    assert [[p.request.identity for p in b] for b in batches] == [["a"], ["c"]]
    assert deferred == {"b": 0}


def test_the_cursor_rewinds_to_the_first_deferred_byte_or_to_what_it_was():
    before = {"b": {"end": 5, "at": 1.0, "retry": 0}}
    planned = {
        "a": {"end": 20, "at": 9.0, "retry": 0},
        "b": {"end": 50, "at": 9.0, "retry": 0},
        "c": {"end": 7, "at": 9.0, "retry": 0},
    }
    rewound = rewind_cursor(planned, before, {"a": 10, "b": 5, "c": 0}, requested={"a"})
    assert rewound == {"a": {"end": 10, "at": 9.0, "retry": 0}, "b": before["b"]}


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

    from xray_pipeline.core.ingest import plan
    from xray_pipeline.core.parse import TS

    assert re.fullmatch(TS, stamp)
    match = plan._TS_RE.match(stamp.encode())
    assert match and match.group(0).decode() == stamp[:19]
