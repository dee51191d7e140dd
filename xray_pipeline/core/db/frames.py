"""Query results as Polars frames, read by `COPY ... TO STDOUT (FORMAT csv)`: a frame of many
rows is built by Polars' CSV reader, not a Python tuple at a time. Timestamps travel as epoch
microseconds (an int8 column) and durations as microseconds; a JSON array as text."""

from collections.abc import Iterator

import polars as pl
import psycopg

# a batch of rows is cut after this much CSV (a frame of about twice as many bytes)
BATCH_BYTES = 64 * 1024 * 1024


def _csv_schema(schema: dict) -> dict:
    """The dtypes the CSV is read as: times and durations as Int64, lists as their JSON text."""
    read = {}
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Datetime | pl.Duration):
            read[name] = pl.Int64
        elif isinstance(dtype, pl.List):
            read[name] = pl.String
        else:
            read[name] = dtype
    return read


def _typed(frame: pl.DataFrame, schema: dict) -> pl.DataFrame:
    casts = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Datetime):
            value = pl.from_epoch(name, "us")
            if dtype.time_zone:
                value = value.dt.replace_time_zone(dtype.time_zone)
            casts.append(value.alias(name))
        elif isinstance(dtype, pl.Duration):
            casts.append(pl.duration(microseconds=pl.col(name)).alias(name))
        elif isinstance(dtype, pl.List):
            casts.append(pl.col(name).str.json_decode(dtype).alias(name))
    return frame.with_columns(casts) if casts else frame


def copy_batches(
    conn: psycopg.Connection,
    query: str,
    params: dict,
    schema: dict,
    batch_bytes: int = BATCH_BYTES,
) -> Iterator[pl.DataFrame]:
    """The rows of `query` (its columns in `schema`'s order) as frames of about `batch_bytes`
    of CSV each; none when it has no row. COPY sends a row per message, so a batch never cuts
    a row."""
    text = psycopg.ClientCursor(conn).mogrify(query, params)
    read = _csv_schema(schema)
    data = bytearray()
    with conn.cursor().copy(f"COPY ({text}) TO STDOUT (FORMAT csv)") as copy:
        for block in copy:
            data += block
            if len(data) >= batch_bytes:
                yield _typed(pl.read_csv(bytes(data), has_header=False, schema=read), schema)
                data.clear()
    if data:
        yield _typed(pl.read_csv(bytes(data), has_header=False, schema=read), schema)


def copy_frame(conn: psycopg.Connection, query: str, params: dict, schema: dict) -> pl.DataFrame:
    """All the rows of `query` as one frame of `schema`."""
    frames = list(copy_batches(conn, query, params, schema))
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)
