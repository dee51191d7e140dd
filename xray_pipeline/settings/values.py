"""The value types of the settings: each parser takes the raw text of config.ini or the
environment (or a value a CLI flag already typed) and says what is expected in the words an
operator reads in the error."""

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ByteSize, SecretStr


def _typed(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda raw: parse(raw) if isinstance(raw, str) else raw


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _parse_int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError("expected a whole number, such as 10") from None


def _parse_positive_int(raw: str) -> int:
    value = _parse_int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _parse_non_negative_int(raw: str) -> int:
    value = _parse_int(raw)
    if value < 0:
        raise ValueError("expected a whole number, 0 or above")
    return value


def _parse_seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number of seconds, such as 1 or 0.5") from None
    if not 0 < value <= 3600:
        raise ValueError("expected a number of seconds above 0, at most 3600")
    return value


_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|b)?\s*$")


def _parse_bytes(raw: str) -> int:
    """A size in bytes: `4194304`, `4M`, `4 MiB`, `512k`, `1G` (k, M, G: powers of 1024)."""
    found = _SIZE.match(raw)
    if found is None:
        raise ValueError("expected a size in bytes, such as 4194304, 4M or 512k")
    number, unit = found.groups()
    value = int(float(number) * 1024 ** (" kmg".index(unit.lower()) if unit else 0))
    if value <= 0:
        raise ValueError("expected a size above 0")
    return value


def _parse_port(raw: str) -> int:
    value = _parse_int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("expected a port number from 1 to 65535")
    return value


def _parse_timezone(raw: str) -> str:
    name = raw.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            "unknown time zone; use an IANA name such as UTC or Europe/Berlin"
        ) from exc
    return name


def _parse_stats_format(raw: str) -> str:
    value = raw.strip().lower()
    if value == "jsonl":
        value = "json"
    if value not in {"json", "csv"}:
        raise ValueError("expected json or csv")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected {' or '.join([', '.join(options[:-1]), options[-1]])}")
        return value

    return parse


def _parse_prefix(raw: str) -> int:
    value = _parse_int(raw)
    if not 0 <= value <= 128:
        raise ValueError("expected a prefix length, such as 24 (IPv4) or 48 (IPv6)")
    return value


def _parse_fraction(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number from 0 to 1, such as 0.05") from None
    if not 0 <= value <= 1:
        raise ValueError("expected a number from 0 to 1")
    return value


def _parse_date(raw: str) -> str:
    try:
        return dt.date.fromisoformat(raw.strip()).isoformat()
    except ValueError as exc:
        raise ValueError("expected a date like 2024-01-31") from exc


def _parse_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list | tuple):
        return tuple(str(v) for v in raw)
    parts = [p.strip() for chunk in raw.splitlines() for p in chunk.split(",")]
    return tuple(p for p in parts if p)


def _parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in {"TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
    return value


def _parse_database_url(raw: str) -> str:
    value = raw.strip()
    scheme = urlsplit(value).scheme
    if scheme not in {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        raise ValueError("expected a URL such as postgresql://user:password@host:5432/dbname")
    return value


Text = Annotated[str, BeforeValidator(_typed(str.strip))]
Bool = Annotated[bool, BeforeValidator(_typed(_parse_bool))]
Int = Annotated[int, BeforeValidator(_typed(_parse_int))]
PositiveInt = Annotated[int, BeforeValidator(_typed(_parse_positive_int))]
NonNegativeInt = Annotated[int, BeforeValidator(_typed(_parse_non_negative_int))]
Seconds = Annotated[float, BeforeValidator(_typed(_parse_seconds))]
Bytes = Annotated[ByteSize, BeforeValidator(_typed(_parse_bytes))]
Port = Annotated[int, BeforeValidator(_typed(_parse_port))]
TimeZone = Annotated[str, BeforeValidator(_typed(_parse_timezone))]
Fraction = Annotated[float, BeforeValidator(_typed(_parse_fraction))]
Day = Annotated[str, BeforeValidator(_typed(_parse_date))]
Names = Annotated[tuple[str, ...], BeforeValidator(_parse_list)]
LogLevel = Annotated[str, BeforeValidator(_typed(_parse_log_level))]
StatsFormat = Annotated[str, BeforeValidator(_typed(_parse_stats_format))]
DatabaseUrl = Annotated[SecretStr, BeforeValidator(_typed(_parse_database_url))]
SourceIpMode = Annotated[str, BeforeValidator(_typed(_choice("full", "mask", "hash")))]
DestinationMode = Annotated[str, BeforeValidator(_typed(_choice("full", "domain", "none")))]
Prefix = Annotated[int, BeforeValidator(_typed(_parse_prefix))]
CountBy = Annotated[str, BeforeValidator(_typed(_choice("address", "prefix", "asn")))]
Secret = Annotated[SecretStr, BeforeValidator(_typed(str.strip))]
