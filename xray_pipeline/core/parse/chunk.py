"""Classify a chunk's lines (fast path first, tolerant path for the rest) and frame them."""

import polars as pl

from xray_pipeline.core.parse.detours import DetourTags
from xray_pipeline.core.parse.fast import fast_rows
from xray_pipeline.core.parse.frames import (
    MAX_VALUE_BYTES,
    Frames,
    ParsedChunk,
    frame_steps,
    longest_line,
    unindexable_to_rejects,
)
from xray_pipeline.core.parse.lines import split_lines
from xray_pipeline.core.parse.tolerant import tolerant_rows
from xray_pipeline.core.parse.values import typed_columns

ROW_COLUMNS = (
    "kind", "ts", "src_network", "src_ip", "src_port", "status", "dest_network", "dest_host",
    "dest_port", "dest_url", "inbound_tag", "outbound_tag", "email", "reason", "other_reason",
    "server", "dns_status", "ips", "elapsed", "ts_typed",
)  # fmt: skip


def classify(
    lines: pl.DataFrame, timezone: str = "UTC", detours: DetourTags | None = None
) -> pl.DataFrame:
    """Lines -> one row per line with every canonical and DNS column, in input order.

    The fast path's regex is captured on every line first; the few lines it does not take go
    through the tolerant grammar, and their values are scattered into place (no concat, no
    sort). `ts_typed` is the timestamp read in `timezone`.
    """
    return classify_chunk(lines, timezone, detours or DetourTags(), frames=False)[0]


def classify_chunk(
    lines: pl.DataFrame, timezone: str, detours: DetourTags, *, frames: bool
) -> tuple[pl.DataFrame, Frames | None]:
    """classify()'s rows and, when `frames` is asked for and the fast path's query gave the
    final rows (every line taken, every detour known to `detours`: the rule), the access,
    dns and rejects frames, made in the same call from the same query (Polars runs it once
    for all four). `detours` learns the chunk's new detours."""
    query = fast_query(lines, timezone, detours)
    made: Frames | None = None
    if frames:
        # cache(): the four outputs share one node, so Polars converts the query's plan once,
        # not once per output (about a millisecond a chunk; bench/parse.py's A/B: 1.02x)
        query = query.cache()
        rows, *framed = pl.collect_all(
            [query, *(steps(query) for steps in frame_steps(timezone))], engine="streaming"
        )
        made = (framed[0], framed[1], framed[2])
    else:
        rows = query.collect()
    if rows.drop_in_place("detour_unknown").any():
        for column in detours.columns(rows.get_column("detour")):
            rows.replace_column(rows.get_column_index(column.name), column)
        made = None
    rows.drop_in_place("detour")
    rows.drop_in_place("detour_code")
    slow_index = rows.get_column("fast").not_().arg_true()
    if slow_index.len():
        slow_typed = typed_columns(timezone)[1]
        slow = tolerant_rows(lines[slow_index].lazy()).with_columns(slow_typed).collect()
        for name in ROW_COLUMNS:  # in place: with_columns would be one more query
            column = _scattered(rows, name, slow_index, slow)
            rows.replace_column(rows.get_column_index(name), column)
        made = None
    return rows, made


def fast_query(lines: pl.DataFrame, timezone: str, detours: DetourTags) -> pl.LazyFrame:
    """The fast path's query on `lines`: its row columns, `ts_typed` and the tags of the
    detours known to `detours` (bench/parse_stages.py times it on its own)."""
    return detours.tagged(fast_rows(lines.lazy()).with_columns(typed_columns(timezone)[0]))


def _scattered(rows: pl.DataFrame, name: str, index: pl.Series, slow: pl.DataFrame) -> pl.Series:
    """rows[name] with slow[name] written at `index` (a cast only where the dtypes differ:
    each eager cast is a query of its own, a fixed cost per chunk)."""
    column = rows.get_column(name)
    if column.dtype != slow.schema[name]:
        column = column.cast(slow.schema[name])
    return column.scatter(index, slow.get_column(name))


def parse_chunk(
    data: bytes,
    *,
    source: str = "<memory>",
    base_offset: int = 0,
    timezone: str = "UTC",
    detours: DetourTags | None = None,
) -> ParsedChunk:
    """Parse the bytes of one chunk of an access log.

    `base_offset` is the chunk's position in its file, so that each row's `byte_offset` is
    the line's position in the file. Timestamps are read as local times of `timezone` (Xray
    prints the local time of its process, without a zone). `detours` keeps the routing tags
    learned from chunk to chunk: pass one per source (or run) so that later chunks reuse them;
    without it the chunk learns its own.
    """
    lines = split_lines(data, base_offset)
    rows, made = classify_chunk(lines, timezone, detours or DetourTags(), frames=True)
    if made is None:  # the tolerant path or a new detour changed rows: frame them again
        lazy_rows = rows.lazy()
        # one call for the three frames: they run at once. Filters and selects of columns:
        # the in-memory engine's cost per expression is lower than the streaming engine's
        made = pl.collect_all(
            [steps(lazy_rows) for steps in frame_steps(timezone)], engine="in-memory"
        )
    access_frame, dns_frame, rejects_frame = made
    if longest_line(lines, base_offset + len(data)) > MAX_VALUE_BYTES:
        access_frame, rejects_frame = unindexable_to_rejects(access_frame, rejects_frame, rows)
    return ParsedChunk(
        access=access_frame,
        dns=dns_frame,
        rejects=rejects_frame,
        rows=rows,
        source=source,
        base_offset=base_offset,
        end_offset=base_offset + len(data),
    )
