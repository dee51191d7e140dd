"""Several chunks, of different sources, parsed as one: a parse pays a fixed few milliseconds
(Polars planning and starting its queries) whatever its size, so a poll of 200 nodes' small
ranges parsed one by one would pay it 200 times."""

import numpy as np
import polars as pl

from xray_pipeline.core.parse.chunk import parse_chunk
from xray_pipeline.core.parse.detours import DetourTags
from xray_pipeline.core.parse.frames import ParsedChunk


def joinable(chunk: bytes) -> bool:
    """A chunk that ends at a line end: its last line cannot run into the next chunk's first
    (a run of NUL bytes is a chunk of its own, without a LF)."""
    return chunk.endswith(b"\n")


def parse_joined(
    chunks: list[bytes], bases: list[int], *, timezone: str, detours: DetourTags
) -> ParsedChunk:
    """`chunks` (each `joinable`) parsed together. Every row of the three frames says its
    `part` (its chunk's index) and has the `byte_offset` of its line in its own file
    (`bases[part]` plus the line's place in its chunk) and its `line_no` in its chunk."""
    data = b"".join(chunks)
    starts = np.cumsum([0, *(len(c) for c in chunks[:-1])], dtype=np.int64)
    shift = np.asarray(bases, dtype=np.int64) - starts
    lines_before = np.cumsum([0, *(c.count(b"\n") for c in chunks[:-1])], dtype=np.int64)
    parsed = parse_chunk(data, base_offset=0, timezone=timezone, detours=detours)

    def placed(frame: pl.DataFrame) -> pl.DataFrame:
        offsets = frame.get_column("byte_offset").to_numpy()
        part = np.searchsorted(starts, offsets, side="right") - 1
        line_no = frame.get_column("line_no").to_numpy() - lines_before[part]
        return frame.with_columns(
            pl.Series("byte_offset", offsets + shift[part], dtype=pl.Int64),
            pl.Series("line_no", line_no, dtype=pl.Int64),
            pl.Series("part", part, dtype=pl.Int32),
        )

    return ParsedChunk(
        access=placed(parsed.access),
        dns=placed(parsed.dns),
        rejects=placed(parsed.rejects),
        rows=parsed.rows,
        source="<joined>",
        base_offset=0,
        end_offset=len(data),
    )
