"""The demo's generator: `follow` appends the generator's mix, stamped with the current time."""

import datetime as dt
from pathlib import Path

import polars as pl

from xray_pipeline.core.parse import parse_chunk
from xray_pipeline.core.synthetic.live import POOL_TIME, follow


def test_follow_appends_the_mix_stamped_now(tmp_path: Path):
    out = tmp_path / "access.log"
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    written = sum(follow(out, rate=400, timezone="UTC", stop_after=0.6, pool_size=500))
    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    data = out.read_bytes()
    assert POOL_TIME.strftime("%Y/%m/%d").encode() not in data
    parsed = parse_chunk(data, timezone="UTC")
    assert parsed.line_count == written and 150 <= written <= 300
    stamps = parsed.lines.select(pl.col("ts").drop_nulls().str.to_datetime()).to_series()
    assert stamps.len() >= written * 0.8
    assert stamps.min() >= before and stamps.max() <= after
    assert set(parsed.lines["kind"]) >= {"access", "other"}
