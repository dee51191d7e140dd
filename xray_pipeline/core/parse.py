"""Raw bytes of an access log -> typed Polars frames (access, dns, rejects); vectorized.

The grammar is ../shared/xray-log-format.md. Every input line lands in exactly one of the three
frames. One one-pass regex for the shapes Xray and V2Ray write to a file (accepted and rejected
lines, dnsLog lines, error-log lines in the same stream) runs first; the lines it does not take
go through the tolerant grammar, which covers every shape of the spec, collector prefixes and
paste damage included.
"""

import datetime as dt
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np
import polars as pl

from xray_pipeline.core.schema import (
    LINES_SCHEMA,
    access_schema,
    dns_schema,
    rejects_schema,
)

TS = r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,9})?"
TS_FORMAT = "%Y/%m/%d %H:%M:%S%.f"

# The fast path: the shapes of nearly every line of a real file, in one capturing regex that
# is one-pass (at each byte at most one way on, so the regex crate runs it as a one-pass DFA,
# about twice as fast as a pattern with a choice, such as `( \[x\])?( email: y)?`; and at most
# 16 groups, and a small table: with Unicode's `\d`, which takes many states, this regex lost its
# one-pass DFA (most likely the crate's 1 MB limit) and ran 2.7 times slower, hence ASCII
# `[0-9]`; a line with other digits is the tolerant path's). It takes Xray's and V2Ray's
# accepted lines with or without `from`, a fraction, a detour or an email (the new ` email: x`
# form), IPv4, bracketed IPv6 or unix-socket sources, `tcp:`/`udp:` or URL destinations,
# rejected lines, and dnsLog lines of the servers that start with a byte no source starts
# with (`UDP:`, `TCP//`, `TCPL//`, `localhost`, `quic+local://`). Its classes are looser than
# the grammar's where that keeps it one-pass; _fast_ok() checks the rest on short strings.
# On the lines it takes, its values equal the tolerant path's (tested).
FAST_CAPTURE = (
    r"^(?P<ts>[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?) (?:"
    # a dnsLog line: the rest is read by DNS_FAST_REST (the tolerant path's DNS regexes)
    r"(?P<server>UDP:\S+|TCPL?//\S+|localhost|quic\+local://\S+) "
    r"(?P<dns>(?:got answer|cache (?:HIT|OPTIMISTE)): .*)"
    r"|(?:from )?(?:(?P<src_network>tcp|u(?:dp|nix)):)?"
    # hex digits only inside brackets: `[Info]` and its siblings are error-log levels.
    # DNS and DoH (the DNS module's pseudo sources) and unix sockets print no port;
    # _fast_ok() checks that only they go without one
    r"(?:\[(?P<src6>[0-9A-Fa-f:.]+)\]|(?P<src_ip>[0-9.]+|D(?:NS|oH)|@[^\s:\[\]]*|/[^\s:\[\]]*))"
    r"(?::(?P<src_port>[0-9]+))? "
    r"(?:accepted (?:(?P<dest_network>tcp|udp):"
    r"(?:\[(?P<dest6>[^\s\]]+)\]|(?P<dest_host>[^\s:\[\]]+)):(?P<dest_port>[0-9]+)"
    # an HTTP inbound's URL (`//host:port` for CONNECT, `http://host/path`); URL reads it
    r"|(?P<dest_url>(?:https?:)?//[^\s/?#:@\[\]]+(?::[0-9]+)?(?:[/?#]\S*)?))"
    # ` [detour]`, ` email: x` (V2Ray: `email:x`), both or neither; trailing spaces allowed
    r"(?: +(?:\[(?P<detour>[^\]]*)\] *)?(?:email: ?(?P<email>\S+) *)?)?"
    r"|rejected +(?P<reason>\S.*)))$"
)
DETOUR = r"^(?:(?P<inbound_tag>.*?) (?:->|>>|==>) )?(?P<outbound_tag>.*)$"

# Tolerant grammar, step 1: the first Xray timestamp anywhere (skips collector prefixes).
LOCATE_TS = rf"^.*?(?P<ts>{TS})(?P<body>.*)$"

LEVEL = r"^\[(?:Debug|Info|Warning|Error)\]"
# An error-log line in the access log's stream (the tolerant path's `error_log`), as the fast
# path sees it: the level right after the timestamp.
LEVEL_LINE = rf"^({TS}) " + LEVEL[1:]

DNS_AFTER_SERVER = (
    r"^(?P<dns_status>got answer|cache HIT|cache OPTIMISTE): (?P<domain>[^\s\[\]]+)(?P<dtail>.*)$"
)
DNS = r"^(?P<server>\S+) " + DNS_AFTER_SERVER[1:]
DNS_TAIL = (
    r"^\s*->\s*\[(?P<ips>[^\]]*)\]?"
    r"(?:\s+(?P<elapsed>\d[\d.]*[a-zµ]+(?:[\d.]+[a-zµ]+)*))?"
    r"(?:\s*<(?P<error>.*?)>?)?\s*$"
)
# The fast path's reading of a dnsLog line after its server, both steps in one: the domain
# stops at the first space or bracket, so a tail that starts with a space is DNS_TAIL's.
DNS_FAST_REST = DNS_AFTER_SERVER.removesuffix("(?P<dtail>.*)$") + (
    r"(?:\s+" + DNS_TAIL.removeprefix(r"^\s*").removesuffix("$") + ")?$"
)

ACCESS = (
    r"^(?:from\s+)?(?:(?P<src_network>tcp|udp|unix):)?"
    r"(?:\[(?P<src_b>[^\]]*)\]|(?P<src_h>[^\s\[\]]+?))(?:\s*:\s*(?P<src_port>\d+))?"
    r"\s+(?P<status>accepted|rejected)(?:\s+(?P<rest>.*?))?\s*$"
)
# What follows "accepted": the destination, then the detour and the email (in `after`).
ACCEPTED_REST = (
    r"^(?:(?P<dest_network>tcp|udp):(?:\[(?P<dest_b>[^\]]*)\]|(?P<dest_h>[^\s\[\]]+?))"
    r"\s*:\s*(?P<dest_port>\d+)|(?P<url>\S*//\S*))(?P<after>\s.*)?$"
)
AFTER_DEST = (
    r"^\s*(?:\[(?:(?P<inbound_tag>[^\]]*?) (?:->|>>|==>) )?(?P<outbound_tag>[^\]]*)\])?"
    r"\s*(?:email:\s*(?P<email>\S+))?"
)
REJECTED_EMAIL = r"(?:^|\s)email:\s*(\S+)$"
URL = (
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//(?:[^/?#@\s]*@)?"
    r"(?:\[(?P<h6>[^\]]*)\]|(?P<h>[^/?#:\s]*))(?::(?P<p>\d+))?"
)
# Sources that print no port (spec 2.2); any other portless word is not a source.
PORTLESS_SOURCES = ("DNS", "DoH", "@")

# Go's time.Duration.String(): `1h2m3.5s` from a second up, one unit below (`38.2ms`, `850µs`)
_DECIMAL = r"\d+(?:\.\d+)?"
DURATION = (
    rf"^(?:(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>{_DECIMAL})s)?"
    rf"|(?P<v>{_DECIMAL})(?P<unit>ns|µs|us|ms))$"
)


@dataclass(frozen=True)
class ParsedChunk:
    """The three frames of one chunk; `lines` gives one canonical row per input line."""

    access: pl.DataFrame
    dns: pl.DataFrame
    rejects: pl.DataFrame
    rows: pl.DataFrame = field(repr=False)
    source: str
    base_offset: int
    end_offset: int

    @property
    def line_count(self) -> int:
        return self.rows.height

    @property
    def byte_count(self) -> int:
        return self.end_offset - self.base_offset

    @cached_property
    def lines(self) -> pl.DataFrame:
        """One row per input line, in order, with the spec's canonical fields (ts as printed,
        ISO form, no zone; every field but `kind` null for `other`). A time the zone skips
        (a DST gap: the wrong zone configured) is still printed: it is what the line says."""
        naive = pl.col("ts").str.to_datetime(TS_FORMAT, time_unit="us", strict=False)
        valid_ts = naive.is_not_null() & pl.col("kind").ne("other")
        return self.rows.select(
            [
                pl.when(valid_ts).then(_iso_ts(pl.col("ts"))).alias("ts")
                if name == "ts"
                else pl.col(name)
                for name in LINES_SCHEMA
            ]
        ).cast(LINES_SCHEMA)


# --------------------------------------------------------------------------- lines


LINE_FRAME_SCHEMA = {"line_no": pl.Int64, "byte_offset": pl.Int64, "text": pl.String}

# Below this size a chunk is split by Python's str.split: Polars' CSV reader costs about half a
# millisecond however small the chunk (the sensor's near-real-time chunks are a few lines);
# above it the reader's speed wins (measured crossover: about 400 KB).
SMALL_CHUNK = 256 * 1024


def split_lines(data: bytes, base_offset: int = 0) -> pl.DataFrame:
    """One row per line: line_no, byte_offset (of the line's first byte) and text.

    Text is decoded as UTF-8 with replacement characters, NUL bytes (left by a truncation)
    and a trailing CR (Windows builds) removed. A last line without its LF is a line too.
    """
    if not data:
        return pl.DataFrame(schema=LINE_FRAME_SCHEMA)
    try:
        text = data.decode("utf-8")
        exact = True
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        exact = False
    if len(data) <= SMALL_CHUNK:
        return _small_lines(data, text, base_offset)
    pieces = _split_fast(data) if exact else None
    if pieces is None:
        pieces = _split_text(text)
        if b"\r" in data:
            pieces = pieces.str.strip_suffix("\r")
    if pieces.null_count():
        pieces = pieces.fill_null("")  # the CSV reader reads an empty line as null
    count = pieces.len()
    if exact and b"\r" not in data:
        # valid UTF-8: each line's byte length is its encoded length plus its LF
        lengths = pieces.str.len_bytes().to_numpy()
        starts = np.zeros(count, dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
    else:
        # replacement characters and stripped CRs change lengths: take the LF positions
        # from the raw bytes
        starts = _line_starts(data, count)
    if b"\x00" in data:
        pieces = pieces.str.replace_all("\x00", "", literal=True)
    return _line_frame(pieces, starts + base_offset)


def _line_frame(texts: pl.Series, offsets: np.ndarray) -> pl.DataFrame:
    """The lines frame, built eagerly: a query for two integer columns costs more than they
    take to compute."""
    return pl.DataFrame(
        {
            "line_no": np.arange(1, texts.len() + 1, dtype=np.int64),
            "byte_offset": offsets,
            "text": texts.alias("text"),
        },
        schema=LINE_FRAME_SCHEMA,
    )


def _line_starts(data: bytes, count: int) -> np.ndarray:
    """Byte positions of the first `count` lines' starts: 0, then after each LF."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
    return np.concatenate(([0], newlines[: count - 1] + 1)).astype(np.int64)


def _small_lines(data: bytes, text: str, base_offset: int) -> pl.DataFrame:
    """split_lines for a small chunk: the same frame, from str.split and numpy."""
    body = text[:-1] if text.endswith("\n") else text
    texts = pl.Series("text", body.split("\n"), dtype=pl.String)
    if "\r" in body:
        texts = texts.str.strip_suffix("\r")
    if "\x00" in body:
        texts = texts.str.replace_all("\x00", "", literal=True)
    return _line_frame(texts, _line_starts(data, texts.len()) + base_offset)


# A byte no Xray line holds, as the CSV reader's column separator: Polars' CSV reader splits
# lines on every core, five times faster than str.split on this machine.
_NO_SEPARATOR = b"\x1f"
_BOM = b"\xef\xbb\xbf"


def _split_fast(data: bytes) -> pl.Series | None:
    """Split valid UTF-8 at LF with the multi-threaded CSV reader (one column, no quoting,
    no header; an empty line comes back null); None when the bytes hold what the reader would
    alter: the separator byte, a leading byte-order mark (it strips it). A CR before an LF is
    stripped by the reader and by _split_text's caller alike; a CR elsewhere is kept by both."""
    if _NO_SEPARATOR in data or data.startswith(_BOM):
        return None
    return pl.read_csv(
        data,
        has_header=False,
        separator=_NO_SEPARATOR.decode(),
        quote_char=None,
        new_columns=["text"],
        schema={"text": pl.String},
        infer_schema=False,
    ).to_series()


def _split_text(text: str, parts: int = 8) -> pl.Series:
    """Split at LF, in a few slices that Polars splits in parallel (a single huge string
    splits on one core only). The LF ending the text, if any, ends the last line."""
    body = text[:-1] if text.endswith("\n") else text
    slices: list[str] = []
    step = max(len(body) // parts, 1)
    pos = 0
    while True:
        cut = body.find("\n", pos + step)
        if cut == -1:
            slices.append(body[pos:])
            break
        slices.append(body[pos:cut])
        pos = cut + 1
    return (
        pl.LazyFrame({"text": slices}, schema={"text": pl.String})
        .select(pl.col("text").str.split("\n"))
        .explode("text")
        .collect()
        .to_series()
    )


# --------------------------------------------------------------------------- helpers


def _iso_ts(col: pl.Expr) -> pl.Expr:
    """Xray `2025/03/14 09:26:53.589793` -> naive ISO `2025-03-14T09:26:53.589793`."""
    return col.str.replace_all("/", "-", literal=True).str.replace(" ", "T", literal=True)


# Times a clock can print: a Unix clock starts at 1970 (a box without RTC boots there), and
# Python, psycopg and day partitions stop at 9999. Outside, the line is a `bad_timestamp`
# reject, kept; year 0000 would otherwise reach PostgreSQL, which has no year 0.
EARLIEST_TS = dt.datetime(1970, 1, 1)
LATEST_TS = dt.datetime(9999, 12, 30)


def _local(naive: pl.Expr, timezone: str) -> pl.Expr:
    """A naive Xray time -> the zone-aware time it is in `timezone`; null for a time the zone
    skips (a DST gap) or one outside EARLIEST_TS..LATEST_TS."""
    return (
        pl.when(naive.is_between(EARLIEST_TS, LATEST_TS))
        .then(naive)
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
    )


def _typed_ts(col: pl.Expr, timezone: str) -> pl.Expr:
    return _local(col.str.to_datetime(TS_FORMAT, time_unit="us", strict=False), timezone)


def _typed_fixed_ts(col: pl.Expr, timezone: str) -> pl.Expr:
    """_typed_ts for text already checked against TS (fixed widths: `2025/03/14 09:26:53`
    then an optional fraction): the 19 characters up to the second go through Polars'
    fixed-format reader, the fraction is added as microseconds (truncated, as strptime
    does). Under half the time of strptime on the whole text; the same results (tested)."""
    second = col.str.slice(0, 19).str.to_datetime("%Y/%m/%d %H:%M:%S", time_unit="us", strict=False)
    micros = col.str.slice(20, 6).str.pad_end(6, "0").cast(pl.Int64, strict=False)
    return _local(second + pl.duration(microseconds=micros.fill_null(0)), timezone)


def _port(col: pl.Expr) -> pl.Expr:
    # the number the line prints; a digit run too long for an integer stays null
    return col.cast(pl.Int32, strict=False)


def _duration(col: pl.Expr) -> pl.Expr:
    """Go time.Duration text (`38.204117ms`, `1.2s`, `850µs`, `1m2.5s`) -> microseconds;
    null for text Go does not print."""
    return _duration_of(col.str.extract_groups(DURATION))


def _duration_of(parts: pl.Expr) -> pl.Expr:
    """_duration from DURATION's groups. Give it a column: Polars does not share a struct
    expression between the fields read from it, and reads it again for each (measured: the
    dns frame's durations took 1.2 ms from the text, 0.7 ms from a column)."""

    def number(name: str) -> pl.Expr:
        return parts.struct.field(name).cast(pl.Float64)

    unit = parts.struct.field("unit")
    scale = pl.when(unit == "ms").then(1000.0).when(unit == "ns").then(0.001).otherwise(1.0)
    long_us = pl.sum_horizontal(
        number("h") * 3_600_000_000, number("m") * 60_000_000, number("s") * 1_000_000
    )
    found = pl.any_horizontal(parts.struct.field(name).is_not_null() for name in ("h", "m", "s"))
    micros = pl.when(unit.is_not_null()).then(number("v") * scale).when(found).then(long_us)
    return pl.duration(microseconds=micros.round(0).cast(pl.Int64))


# --------------------------------------------------------------------------- the plan


class _Steps:
    """LazyFrame steps recorded once and replayed on each chunk's lines: the expression trees
    cost a few hundred microseconds of Python to build, a fixed cost per chunk otherwise."""

    def __init__(self, steps: tuple[tuple[str, tuple[object, ...]], ...] = ()) -> None:
        self.steps = steps

    def _then(self, method: str, *args: object) -> "_Steps":
        return _Steps((*self.steps, (method, args)))

    def with_columns(self, *exprs: pl.Expr | str) -> "_Steps":
        return self._then("with_columns", *exprs)

    def select(self, *exprs: pl.Expr | str) -> "_Steps":
        return self._then("select", *exprs)

    def filter(self, predicate: pl.Expr) -> "_Steps":
        return self._then("filter", predicate)

    def cast(self, schema: dict[str, pl.DataType]) -> "_Steps":
        return self._then("cast", schema)

    def __call__(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        for method, args in self.steps:
            frame = getattr(frame, method)(*args)
        return frame


def _f(struct: str, name: str) -> pl.Expr:
    return pl.col(struct).struct.field(name)


def _fast_ok() -> pl.Expr:
    """What FAST_CAPTURE's loose classes leave out, checked on short strings: on an access
    line a source port unless the source is a portless one, and a rejection reason that does
    not end in whitespace (the tolerant path strips it); on a dnsLog line the domain the
    tolerant path requires. (Its timestamp is TS's own shape, ASCII digits: the tolerant path
    finds only that one, and checking it in the capture costs less than after it.)"""
    portless = _f("f", "src_ip").is_in(PORTLESS_SOURCES) | _f("f", "src_network").eq("unix")
    access_ok = (_f("f", "src_port").is_not_null() | portless) & (
        _f("f", "reason").is_null() | ~_f("f", "reason").str.contains(r"\s$")
    )
    # a dnsLog line has no source (access_ok is null), an access line no domain
    return (_f("d", "domain").is_not_null() | access_ok).fill_null(False)


def _fast_rows(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The fast path's row columns of `lines` (see _fast_steps)."""
    return _fast_steps()(lines)


@cache
def _fast_steps() -> _Steps:
    """Every line -> the row columns as the fast path sees them, `fast` saying which lines
    it takes. Only `kind` and `status` are masked by it: on the other lines the fields are
    null or, where the capture matched but _fast_ok() did not, overwritten by the tolerant
    path (classify() writes every row column of those lines). The detour stays whole here:
    _DetourTags looks its tags up. A dnsLog line's rest and a URL are read
    by the tolerant path's own regexes (on the few lines that have them), and an error-log
    line, which no one-pass regex can tell from a bracketed source, by LEVEL_LINE on the
    lines the capture did not take."""
    taken = pl.col("taken")
    reason = _f("f", "reason")
    is_dns = _f("f", "server").is_not_null()
    level_ts = pl.col("level_ts")
    return (
        _Steps()
        .with_columns(pl.col("text").str.extract_groups(FAST_CAPTURE).alias("f"))
        .with_columns(
            _f("f", "dns").str.extract_groups(DNS_FAST_REST).alias("d"),
            _f("f", "dest_url").str.extract_groups(URL).alias("u"),
        )
        .with_columns(_fast_ok().alias("taken"))
        .with_columns(
            pl.when(~taken).then(pl.col("text")).str.extract(LEVEL_LINE, 1).alias("level_ts")
        )
        .select(
            "line_no",
            "byte_offset",
            "text",
            (taken | level_ts.is_not_null()).alias("fast"),
            pl.when(taken & is_dns)
            .then(pl.lit("dns"))
            .when(taken)
            .then(pl.lit("access"))
            .when(level_ts.is_not_null())
            .then(pl.lit("other"))
            .alias("kind"),
            pl.coalesce(_f("f", "ts"), level_ts).alias("ts"),
            _f("f", "src_network").alias("src_network"),
            pl.coalesce(_f("f", "src6"), _f("f", "src_ip")).alias("src_ip"),
            _port(_f("f", "src_port")).alias("src_port"),
            pl.when(
                taken & (_f("f", "dest_network").is_not_null() | _f("f", "dest_url").is_not_null())
            )
            .then(pl.lit("accepted"))
            .when(taken & reason.is_not_null())
            .then(pl.lit("rejected"))
            .alias("status"),
            _f("f", "dest_network").alias("dest_network"),
            # FAST_CAPTURE's URL host is never empty nor bracketed: URL's `h` it is. The rare
            # hosts are merged first: one pass over the common one (measured: a quarter less)
            pl.coalesce(
                _f("f", "dest_host"),
                pl.coalesce(
                    _f("f", "dest6"), _f("u", "h"), _f("d", "domain").str.strip_suffix(".")
                ),
            ).alias("dest_host"),
            pl.coalesce(_port(_f("f", "dest_port")), _port(_f("u", "p"))).alias("dest_port"),
            _f("f", "dest_url").alias("dest_url"),
            _f("f", "detour").alias("detour"),
            pl.coalesce(_f("f", "email"), reason.str.extract(REJECTED_EMAIL, 1)).alias("email"),
            pl.coalesce(reason, _f("d", "error")).alias("reason"),
            pl.when(level_ts.is_not_null()).then(pl.lit("error_log")).alias("other_reason"),
            _f("f", "server").alias("server"),
            _f("d", "dns_status").alias("dns_status"),
            _f("d", "ips").alias("ips"),
            _f("d", "elapsed").alias("elapsed"),
        )
    )


class _DetourTags:
    """The inbound and outbound tags of the detours seen so far, kept from chunk to chunk.

    A log has a handful of tag pairs: their split (a regex) runs once on the distinct values,
    and each line finds its pair by its code in an Enum of them (one hash a line), inside the
    fast path's query (tagged()). Once a chunk's detours are all known, which is the rule
    after the first chunk, the chunk costs that hash and no more; a chunk with a detour not
    seen yet is tagged again by columns(), which learns it. A log whose detours keep changing
    starts afresh past MAX_KNOWN.
    """

    MAX_KNOWN = 4096

    def __init__(self) -> None:
        # replaced whole, never mutated: threads (ingest prepares chunks in a pool) read a
        # consistent state without a lock; two of them learning at once only repeat work
        self.state = self._split(pl.Series(dtype=pl.String))

    @staticmethod
    def _split(known: pl.Series) -> tuple[pl.Enum, pl.Series, pl.Series, list[pl.Expr]]:
        parts = known.to_frame("d").select(pl.col("d").str.extract_groups(DETOUR)).unnest("d")
        enum = pl.Enum(known)
        inbound, outbound = parts.get_column("inbound_tag"), parts.get_column("outbound_tag")
        codes = pl.col("detour_code")
        exprs = [
            pl.col("detour").cast(enum, strict=False).to_physical().alias("detour_code"),
            pl.lit(inbound).gather(codes).alias("inbound_tag"),
            pl.lit(outbound).gather(codes).alias("outbound_tag"),
            (pl.col("detour").is_not_null() & codes.is_null()).alias("detour_unknown"),
        ]
        return enum, inbound, outbound, exprs

    def tagged(self, rows: pl.LazyFrame) -> pl.LazyFrame:
        """`rows` with inbound_tag and outbound_tag from the known detours, and
        `detour_unknown` true on a line whose detour is not known yet (and `detour_code`).
        The codes are a column of their own: Polars would cast once for each use of the
        expression (measured: 1.2 ms against 0.7 ms a 4 MB chunk)."""
        code, *tags = self.state[3]
        return rows.with_columns(code).with_columns(tags)

    def columns(self, detour: pl.Series) -> list[pl.Series]:
        """The inbound_tag and outbound_tag columns of a detour column, learning its new
        detours."""
        enum, inbound, outbound, _ = self.state
        codes = detour.cast(enum, strict=False)
        if codes.null_count() != detour.null_count():  # a detour not seen yet
            known = pl.Series(enum.categories)
            if known.len() > self.MAX_KNOWN:
                known = known.clear()
            distinct = pl.concat([known, detour.drop_nulls().unique()]).unique(maintain_order=True)
            self.state = enum, inbound, outbound, _ = self._split(distinct)
            codes = detour.cast(enum)
        physical = codes.to_physical()
        return [inbound.gather(physical), outbound.gather(physical)]


_DETOUR_TAGS = _DetourTags()


def _tolerant_rows(lines: pl.LazyFrame) -> pl.LazyFrame:
    """The tolerant grammar's row columns of `lines` (see _tolerant_steps)."""
    return _tolerant_steps()(lines)


@cache
def _tolerant_steps() -> _Steps:
    """Every shape of the spec -> the row columns (`other_reason` for what is no record).

    Each step's struct is masked once to the lines it applies to (an access record's fields
    are null on a dnsLog line), so that the columns read from it need no condition of their
    own: on a few thousand lines a chunk, the number of expressions is most of the cost.
    """
    slow = pl.col("slow")
    # step 1: the Xray timestamp; most lines start with it (an anchored match, no capture),
    # the rest are searched for the first one anywhere (it skips collector prefixes)
    lead = slow.str.extract(rf"^{TS}", 0)
    staged = (
        _Steps()
        .with_columns(pl.col("text").str.strip_chars().alias("slow"))
        .with_columns(lead.alias("lead"))
        .with_columns(
            pl.when(pl.col("lead").is_null()).then(slow).str.extract_groups(LOCATE_TS).alias("loc")
        )
        .with_columns(
            pl.coalesce(pl.col("lead"), _f("loc", "ts")).alias("ts"),
            pl.coalesce(slow.str.slice(pl.col("lead").str.len_chars()), _f("loc", "body"), slow)
            .str.strip_chars()
            .alias("body"),
        )
        .with_columns(
            pl.col("body").str.contains(LEVEL).alias("is_level"),
            pl.col("body").str.extract_groups(ACCESS).alias("a"),
            pl.col("body").str.extract_groups(DNS).alias("d"),
        )
    )
    a_port = _port(_f("a", "src_port"))
    a_src = pl.coalesce(_f("a", "src_b"), _f("a", "src_h"))
    portless_ok = (
        a_port.is_not_null() | _f("a", "src_network").eq("unix") | a_src.is_in(PORTLESS_SOURCES)
    )
    is_dns = ~pl.col("is_level") & _f("d", "server").is_not_null()
    is_access = ~pl.col("is_level") & ~is_dns & _f("a", "status").is_not_null() & portless_ok
    staged = staged.with_columns(
        pl.when(is_access).then(pl.col("a")).alias("a"),
        pl.when(is_dns).then(pl.col("d")).alias("d"),
        pl.when(is_dns)
        .then(pl.lit("dns"))
        .when(is_access)
        .then(pl.lit("access"))
        .otherwise(pl.lit("other"))
        .alias("kind"),
    )
    # from here `a` is null but on access records, `d` but on dnsLog lines
    status = _f("a", "status")
    accepted = status.eq("accepted")
    rejected_rest = pl.when(status.eq("rejected")).then(_f("a", "rest"))
    staged = staged.with_columns(
        pl.when(accepted).then(_f("a", "rest")).str.extract_groups(ACCEPTED_REST).alias("r"),
        _f("d", "dtail").str.extract_groups(DNS_TAIL).alias("dt"),
    )
    dest_found = _f("r", "dest_network").is_not_null() | _f("r", "url").is_not_null()
    after = pl.when(dest_found).then(_f("r", "after")).when(accepted).then(_f("a", "rest"))
    staged = staged.with_columns(
        after.str.extract_groups(AFTER_DEST).alias("t"),
        _f("r", "url").str.extract_groups(URL).alias("u"),
    )
    other_reason = (
        pl.when(pl.col("text").str.strip_chars() == "")
        .then(pl.lit("empty"))
        .when(pl.col("is_level"))
        .then(pl.lit("error_log"))
        .otherwise(pl.lit("not_a_record"))
    )
    dest_host = pl.coalesce(
        _f("r", "dest_b"),
        _f("r", "dest_h"),
        _f("u", "h6"),
        _nonempty(_f("u", "h")),
        _f("d", "domain").str.strip_suffix("."),
    )
    return staged.select(
        "line_no",
        "byte_offset",
        "text",
        "kind",
        "ts",
        _f("a", "src_network").alias("src_network"),
        a_src.alias("src_ip"),
        a_port.alias("src_port"),
        status.alias("status"),
        _f("r", "dest_network").alias("dest_network"),
        dest_host.alias("dest_host"),
        _port(pl.coalesce(_f("r", "dest_port"), _f("u", "p"))).alias("dest_port"),
        _f("r", "url").alias("dest_url"),
        _f("t", "inbound_tag").alias("inbound_tag"),
        _f("t", "outbound_tag").alias("outbound_tag"),
        pl.coalesce(_f("t", "email"), rejected_rest.str.extract(REJECTED_EMAIL, 1)).alias("email"),
        pl.coalesce(_nonempty(rejected_rest), _f("dt", "error")).alias("reason"),
        pl.when(pl.col("kind").eq("other")).then(other_reason).alias("other_reason"),
        _f("d", "server").alias("server"),
        _f("d", "dns_status").alias("dns_status"),
        _f("dt", "ips").alias("ips"),
        _f("dt", "elapsed").alias("elapsed"),
    )


def _nonempty(col: pl.Expr) -> pl.Expr:
    return pl.when(col != "").then(col)


# --------------------------------------------------------------------------- public API


ROW_COLUMNS = (
    "kind", "ts", "src_network", "src_ip", "src_port", "status", "dest_network", "dest_host",
    "dest_port", "dest_url", "inbound_tag", "outbound_tag", "email", "reason", "other_reason",
    "server", "dns_status", "ips", "elapsed", "ts_typed",
)  # fmt: skip


def classify(lines: pl.DataFrame, timezone: str = "UTC") -> pl.DataFrame:
    """Lines -> one row per line with every canonical and DNS column, in input order.

    The fast path's regex is captured on every line first; the few lines it does not take go
    through the tolerant grammar, and their values are scattered into place (no concat, no
    sort). `ts_typed` is the timestamp read in `timezone`.
    """
    return _classified(lines, timezone, frames=False)[0]


Frames = tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]


def _classified(
    lines: pl.DataFrame, timezone: str, *, frames: bool
) -> tuple[pl.DataFrame, Frames | None]:
    """classify()'s rows and, when `frames` is asked for and the fast path's query gave the
    final rows (every line taken, every detour known: the rule), the access, dns and rejects
    frames, made in the same call from the same query (Polars runs it once for all four)."""
    query = fast_query(lines, timezone)
    made: Frames | None = None
    if frames:
        # cache(): the four outputs share one node, so Polars converts the query's plan once,
        # not once per output (about a millisecond a chunk; bench/parse.py's A/B: 1.02x)
        query = query.cache()
        rows, *framed = pl.collect_all(
            [query, *(steps(query) for steps in _frame_steps(timezone))], engine="streaming"
        )
        made = (framed[0], framed[1], framed[2])
    else:
        rows = query.collect()
    if rows.drop_in_place("detour_unknown").any():
        for column in _DETOUR_TAGS.columns(rows.get_column("detour")):
            rows.replace_column(rows.get_column_index(column.name), column)
        made = None
    rows.drop_in_place("detour")
    rows.drop_in_place("detour_code")
    slow_index = rows.get_column("fast").not_().arg_true()
    if slow_index.len():
        slow_typed = _typed_columns(timezone)[1]
        slow = _tolerant_rows(lines[slow_index].lazy()).with_columns(slow_typed).collect()
        for name in ROW_COLUMNS:  # in place: with_columns would be one more query
            column = _scattered(rows, name, slow_index, slow)
            rows.replace_column(rows.get_column_index(name), column)
        made = None
    return rows, made


def fast_query(lines: pl.DataFrame, timezone: str) -> pl.LazyFrame:
    """The fast path's query on `lines`: its row columns, `ts_typed` and the known detours'
    tags (bench/parse_stages.py times it on its own)."""
    return _DETOUR_TAGS.tagged(_fast_rows(lines.lazy()).with_columns(_typed_columns(timezone)[0]))


@cache
def _typed_columns(timezone: str) -> tuple[pl.Expr, pl.Expr]:
    """`ts_typed` of the fast path's lines and of the tolerant path's."""
    return (
        _typed_fixed_ts(pl.col("ts"), timezone).alias("ts_typed"),
        _typed_ts(pl.col("ts"), timezone).alias("ts_typed"),
    )


def _scattered(rows: pl.DataFrame, name: str, index: pl.Series, slow: pl.DataFrame) -> pl.Series:
    """rows[name] with slow[name] written at `index` (a cast only where the dtypes differ:
    each eager cast is a query of its own, a fixed cost per chunk)."""
    column = rows.get_column(name)
    if column.dtype != slow.schema[name]:
        column = column.cast(slow.schema[name])
    return column.scatter(index, slow.get_column(name))


@cache
def _frame_steps(timezone: str) -> tuple[_Steps, _Steps, _Steps]:
    """The access, dns and rejects frames, from classify()'s rows or the query that gives them."""
    bad_ts = pl.col("ts").is_not_null() & pl.col("ts_typed").is_null()
    is_access = pl.col("kind").eq("access") & pl.col("ts_typed").is_not_null()
    is_dns = pl.col("kind").eq("dns") & ~bad_ts
    access = (
        _Steps()
        .filter(is_access)
        .select(
            [
                pl.col("ts_typed").alias("ts") if name == "ts" else pl.col(name)
                for name in access_schema(timezone)
            ]
        )
        .cast(access_schema(timezone))
    )
    dns = (
        _Steps()
        .filter(is_dns)
        .with_columns(pl.col("elapsed").str.extract_groups(DURATION).alias("elapsed_parts"))
        .select(
            "line_no",
            "byte_offset",
            pl.col("ts_typed").alias("ts"),
            "server",
            "dns_status",
            pl.col("dest_host").alias("domain"),
            pl.when(pl.col("ips").str.strip_chars() == "")
            .then(pl.lit([], pl.List(pl.String)))
            .otherwise(pl.col("ips").str.split(", "))
            .alias("answers"),
            _duration_of(pl.col("elapsed_parts")).alias("elapsed"),
            pl.col("reason").alias("error"),
        )
        .cast(dns_schema(timezone))
    )
    reject_reason = (
        pl.when(pl.col("kind").eq("other"))
        .then(pl.col("other_reason"))
        .when(bad_ts)
        .then(pl.lit("bad_timestamp"))
        .otherwise(pl.lit("no_timestamp"))
    )
    rejects = (
        _Steps()
        .filter(~is_access & ~is_dns)
        .select(
            "line_no",
            "byte_offset",
            pl.col("ts_typed").alias("ts"),
            reject_reason.alias("reason"),
            pl.col("text").alias("raw"),
        )
        .cast(rejects_schema(timezone))
    )
    return access, dns, rejects


def parse_chunk(
    data: bytes,
    *,
    source: str = "<memory>",
    base_offset: int = 0,
    timezone: str = "UTC",
) -> ParsedChunk:
    """Parse the bytes of one chunk of an access log.

    `base_offset` is the chunk's position in its file, so that each row's `byte_offset` is
    the line's position in the file. Timestamps are read as local times of `timezone` (Xray
    prints the local time of its process, without a zone).
    """
    lines = split_lines(data, base_offset)
    rows, made = _classified(lines, timezone, frames=True)
    if made is None:  # the tolerant path or a new detour changed rows: frame them again
        lazy_rows = rows.lazy()
        # one call for the three frames: they run at once. Filters and selects of columns:
        # the in-memory engine's cost per expression is lower than the streaming engine's
        made = pl.collect_all(
            [steps(lazy_rows) for steps in _frame_steps(timezone)], engine="in-memory"
        )
    access_frame, dns_frame, rejects_frame = made
    if _longest_line(lines, base_offset + len(data)) > MAX_VALUE_BYTES:
        access_frame, rejects_frame = _unindexable_to_rejects(access_frame, rejects_frame, rows)
    return ParsedChunk(
        access=access_frame,
        dns=dns_frame,
        rejects=rejects_frame,
        rows=rows,
        source=source,
        base_offset=base_offset,
        end_offset=base_offset + len(data),
    )


# PostgreSQL indexes these values (users, tags, endpoints, the daily source rollup), and a
# b-tree entry holds at most about 2,700 bytes: an access record with a longer one could
# never load. Such a line is kept in `rejects` as `value_too_long`, with its raw text.
MAX_VALUE_BYTES = 1024
INDEXED_VALUES = ("email", "inbound_tag", "outbound_tag", "dest_host", "src_ip")


def _longest_line(lines: pl.DataFrame, end: int) -> int:
    """The byte length of the chunk's longest line, from the line starts (no string scan)."""
    starts = lines.get_column("byte_offset").to_numpy()
    if not len(starts):
        return 0
    return int(max(np.diff(starts).max(initial=0), end - starts[-1]))


def _unindexable_to_rejects(
    access: pl.DataFrame, rejects: pl.DataFrame, rows: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Access records with a value longer than MAX_VALUE_BYTES, moved to the rejects."""
    too_long = pl.any_horizontal(
        pl.col(name).str.len_bytes() > MAX_VALUE_BYTES for name in INDEXED_VALUES
    ).fill_null(False)
    mask = access.select(too_long).to_series()
    if not mask.any():
        return access, rejects
    moved = access.filter(mask)
    raw = rows.get_column("text").gather(moved.get_column("line_no") - 1)
    extra = moved.select(
        "line_no", "byte_offset", "ts", pl.lit("value_too_long").alias("reason")
    ).with_columns(raw.alias("raw"))
    return access.filter(~mask), pl.concat([rejects, extra.cast(rejects.schema)]).sort("line_no")
