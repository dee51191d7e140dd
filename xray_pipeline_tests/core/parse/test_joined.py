"""Chunks of many sources parsed as one give each source's rows exactly as parsing it alone
does: the same fields, the line's own byte offset in its own file, the part it came from."""

import polars as pl
import pytest

from xray_pipeline.core.parse import DetourTags, parse_chunk
from xray_pipeline.core.parse.joined import joinable, parse_joined
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log


@pytest.mark.parametrize("parts", [1, 3, 40])
def test_joined_parse_equals_each_chunk_parsed_alone(tmp_path, parts: int):
    chunks, bases = [], []
    for i in range(parts):
        log = tmp_path / f"n{i}.log"
        write_log(GeneratorConfig(lines=60 + i, seed=i, other_share=0.3), log)
        data = log.read_bytes()
        cut = data.index(b"\n", len(data) // 3) + 1  # a range from the middle of the file
        chunks.append(data[cut:])
        bases.append(cut)
    assert all(joinable(c) for c in chunks)
    joined = parse_joined(chunks, bases, timezone="Asia/Tehran", detours=DetourTags())
    for name in ("access", "dns", "rejects"):
        alone = pl.concat(
            [
                getattr(parse_chunk(c, base_offset=b, timezone="Asia/Tehran"), name).with_columns(
                    pl.lit(i, pl.Int32).alias("part")
                )
                for i, (c, b) in enumerate(zip(chunks, bases, strict=True))
            ]
        )
        together = getattr(joined, name)
        assert together.height == alone.height
        assert together.sort("part", "byte_offset").equals(alone.sort("part", "byte_offset"))
    lines = sum(c.count(b"\n") for c in chunks)
    assert joined.access.height + joined.dns.height + joined.rejects.height == lines


def test_a_chunk_without_a_line_end_is_not_joinable():
    assert joinable(b"a line\n") and not joinable(b"\0\0\0\0") and not joinable(b"half a li")
