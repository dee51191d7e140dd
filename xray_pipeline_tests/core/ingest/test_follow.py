"""What a tail run loads next: the day's complete lines after each source's last loaded byte."""

import datetime as dt
from pathlib import Path

from xray_pipeline.core.ingest.files import watched_states
from xray_pipeline.core.ingest.follow import follow_pieces

DAY = dt.date(2025, 1, 2)


def line(day: int, second: int) -> str:
    return (
        f"2025/01/{day:02d} 23:59:{second:02d}.000001 from 198.51.100.7:1 accepted "
        f"tcp:a.example:443 [in >> out] email: u{second}\n"
    )


def plan(files: list[Path], loaded: dict, day: dt.date = DAY, max_bytes: int = 1 << 20):
    states = watched_states(files, with_complete_end=True)
    pieces, _ = follow_pieces(files, states, loaded, day, max_bytes=max_bytes)
    return [(p.request.path.name, p.request.start, p.request.end) for p in pieces], states


def test_the_days_complete_lines_after_the_last_loaded_byte(tmp_path: Path):
    path = tmp_path / "access.log"
    text = line(2, 0) + line(2, 1)
    path.write_text(text + "2025/01/02 23:59:02 partial")
    pieces, states = plan([path], {})
    assert pieces == [("access.log", 0, len(text))]  # never the partial line
    key = states[0].identity.key
    pieces, _ = plan([path], {key: [(0, len(line(2, 0)))]})
    assert pieces == [("access.log", len(line(2, 0)), len(text))]
    assert plan([path], {key: [(0, len(text))]})[0] == []


def test_lines_of_another_day_first_are_left_to_the_sensor(tmp_path: Path):
    """Yesterday's last lines, unloaded: the tail of today loads none of this source (what
    follows them neither), so it never leaves a hole behind it; the tail of yesterday loads
    them, and stops where today begins."""
    path = tmp_path / "access.log"
    yesterday = line(1, 58) + line(1, 59)
    path.write_text(yesterday + line(2, 0))
    assert plan([path], {})[0] == []
    assert plan([path], {}, day=dt.date(2025, 1, 1))[0] == [("access.log", 0, len(yesterday))]


def test_each_source_and_the_size_cap(tmp_path: Path):
    paths = [tmp_path / f"n{i}.log" for i in range(2)]
    for path in paths:
        path.write_text("".join(line(2, s) for s in range(10)))
    pieces, _ = plan(paths, {}, max_bytes=len(line(2, 0)) * 4)
    assert [(name, end - start) for name, start, end in pieces] == [
        (name, size)
        for name in ("n0.log", "n1.log")
        for size in (4 * len(line(2, 0)), 4 * len(line(2, 0)), 2 * len(line(2, 0)))
    ]


def test_a_still_growing_rotated_copy_of_a_known_file_is_followed(tmp_path: Path):
    path = tmp_path / "access.log"
    path.write_text(line(2, 0))
    [state] = watched_states([path])
    key = state.identity.key
    path.rename(tmp_path / "access.log.1")
    with (tmp_path / "access.log.1").open("a") as fh:
        fh.write(line(2, 1))  # Xray still writes to the renamed file
    path.write_text(line(2, 2))  # and the new one begins
    pieces, _ = plan([path], {key: [(0, len(line(2, 0)))]})
    assert sorted(pieces) == sorted(
        [("access.log.1", len(line(2, 0)), 2 * len(line(2, 0))), ("access.log", 0, len(line(2, 2)))]
    )
