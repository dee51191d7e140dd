"""Column names and Polars dtypes of every frame the pipeline builds (the single truth)."""

import polars as pl

# The 13 keys of a parsed line, in the order of docs/log-format.md "Parsed fields".
CANONICAL_FIELDS: tuple[str, ...] = (
    "ts",
    "src_network",
    "src_ip",
    "src_port",
    "status",
    "dest_network",
    "dest_host",
    "dest_port",
    "inbound_tag",
    "outbound_tag",
    "email",
    "reason",
    "kind",
)

KINDS: tuple[str, ...] = ("access", "dns", "other")

# Short reason codes of the rows in `rejects`.
REJECT_REASONS: dict[str, str] = {
    "empty": "blank line",
    "error_log": "an error-log line ([Debug]/[Info]/[Warning]/[Error]) in the access log",
    "no_timestamp": "an access record without its Xray timestamp (cannot be placed in a day)",
    "bad_timestamp": "a timestamp that is not a valid time in the configured zone",
    "not_a_record": "neither an access record nor a dnsLog line",
}


def timestamp_dtype(timezone: str) -> pl.Datetime:
    return pl.Datetime("us", timezone)


def access_schema(timezone: str) -> dict[str, pl.DataType]:
    return {
        "line_no": pl.Int64(),
        "byte_offset": pl.Int64(),
        "ts": timestamp_dtype(timezone),
        "src_network": pl.String(),
        "src_ip": pl.String(),
        "src_port": pl.Int32(),
        "status": pl.String(),
        "dest_network": pl.String(),
        "dest_host": pl.String(),
        "dest_port": pl.Int32(),
        "dest_url": pl.String(),
        "inbound_tag": pl.String(),
        "outbound_tag": pl.String(),
        "email": pl.String(),
        "reason": pl.String(),
    }


def dns_schema(timezone: str) -> dict[str, pl.DataType]:
    return {
        "line_no": pl.Int64(),
        "byte_offset": pl.Int64(),
        "ts": timestamp_dtype(timezone),
        "server": pl.String(),
        "dns_status": pl.String(),
        "domain": pl.String(),
        "answers": pl.List(pl.String()),
        "elapsed": pl.Duration("us"),
        "error": pl.String(),
    }


def rejects_schema(timezone: str) -> dict[str, pl.DataType]:
    return {
        "line_no": pl.Int64(),
        "byte_offset": pl.Int64(),
        "ts": timestamp_dtype(timezone),
        "reason": pl.String(),
        "raw": pl.String(),
    }


# One row per input line, for `xray-pipeline parse` (ts as printed, ISO form, no zone).
LINES_SCHEMA: dict[str, pl.DataType] = {
    "line_no": pl.Int64(),
    "byte_offset": pl.Int64(),
    "ts": pl.String(),
    "src_network": pl.String(),
    "src_ip": pl.String(),
    "src_port": pl.Int32(),
    "status": pl.String(),
    "dest_network": pl.String(),
    "dest_host": pl.String(),
    "dest_port": pl.Int32(),
    "inbound_tag": pl.String(),
    "outbound_tag": pl.String(),
    "email": pl.String(),
    "reason": pl.String(),
    "kind": pl.String(),
}
