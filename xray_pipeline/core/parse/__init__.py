"""Raw bytes of an access log -> typed Polars frames (access, dns, rejects); vectorized.

The grammar is docs/log-format.md. Every input line lands in exactly one of the three
frames. One one-pass regex for the shapes Xray and V2Ray write to a file (accepted and rejected
lines, dnsLog lines, error-log lines in the same stream) runs first (`fast`); the lines it does
not take go through the tolerant grammar (`tolerant`), which covers every shape of the spec,
collector prefixes and paste damage included. The learned routing tags (`DetourTags`) belong to
the caller: one per source or run.
"""

from xray_pipeline.core.parse.chunk import (
    ROW_COLUMNS,
    classify,
    classify_chunk,
    fast_query,
    parse_chunk,
)
from xray_pipeline.core.parse.detours import DetourTags
from xray_pipeline.core.parse.fast import fast_rows
from xray_pipeline.core.parse.frames import MAX_VALUE_BYTES, ParsedChunk
from xray_pipeline.core.parse.lines import SMALL_CHUNK, split_lines
from xray_pipeline.core.parse.patterns import (
    ACCEPTED_REST,
    ACCESS,
    AFTER_DEST,
    DETOUR,
    DNS,
    DNS_TAIL,
    FAST_CAPTURE,
    LEVEL,
    LOCATE_TS,
    PORTLESS_SOURCES,
    TS,
    URL,
)
from xray_pipeline.core.parse.tolerant import tolerant_rows
from xray_pipeline.core.parse.values import TS_FORMAT, go_duration, typed_ts

__all__ = [
    "ACCEPTED_REST",
    "ACCESS",
    "AFTER_DEST",
    "DETOUR",
    "DNS",
    "DNS_TAIL",
    "FAST_CAPTURE",
    "LEVEL",
    "LOCATE_TS",
    "MAX_VALUE_BYTES",
    "PORTLESS_SOURCES",
    "ROW_COLUMNS",
    "SMALL_CHUNK",
    "TS",
    "TS_FORMAT",
    "URL",
    "DetourTags",
    "ParsedChunk",
    "classify",
    "classify_chunk",
    "fast_query",
    "fast_rows",
    "go_duration",
    "parse_chunk",
    "split_lines",
    "tolerant_rows",
    "typed_ts",
]
