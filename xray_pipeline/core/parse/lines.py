"""Raw bytes -> one row per line (line number, byte offset, text), vectorized."""

import numpy as np
import polars as pl

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
