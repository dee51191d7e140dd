"""config.ini, then XRAY_* environment variables, then CLI flags -> one typed Settings object."""

import configparser
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit


class SettingsError(ValueError):
    """A setting is wrong; the message names it and says how to fix it."""


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


def _parse_fraction(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number from 0 to 1, such as 0.05") from None
    if not 0 <= value <= 1:
        raise ValueError("expected a number from 0 to 1")
    return value


def _parse_date(raw: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(raw.strip()).isoformat()
    except ValueError as exc:
        raise ValueError("expected a date like 2024-01-31") from exc


def _parse_str(raw: str) -> str:
    return raw.strip()


def _parse_list(raw: str) -> tuple[str, ...]:
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


@dataclass(frozen=True)
class Option:
    """One setting: where it lives in config.ini, its environment variable and its parser."""

    section: str
    key: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False
    env: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env_names(self) -> tuple[str, ...]:
        return self.env or (f"XRAY_{self.section.upper()}_{self.key.upper()}",)


OPTIONS: tuple[Option, ...] = (
    Option("postgresql", "host", _parse_str, None, "PostgreSQL host (unset: embedded server)"),
    Option("postgresql", "port", _parse_port, 5432, "PostgreSQL port"),
    Option("postgresql", "dbname", _parse_str, "xray", "database name"),
    Option("postgresql", "user", _parse_str, "postgres", "database user"),
    Option("postgresql", "password", _parse_str, None, "database password", secret=True),
    Option(
        "postgresql",
        "url",
        _parse_database_url,
        None,
        "full database URL; wins over host/port/dbname/user/password",
        secret=True,
        env=("XRAY_DATABASE_URL", "DATABASE_URL"),
    ),
    Option("parser", "logfile", _parse_list, (), "access log files or globs, comma separated"),
    Option(
        "parser",
        "offline_file",
        _parse_str,
        None,
        "spool folder used while PostgreSQL is down (default: XRAY_HOME/spool)",
    ),
    Option("parser", "batch_size", _parse_bytes, 4 * 1024 * 1024, "bytes read per chunk (4M, 8M)"),
    Option(
        "parser",
        "spool_max_mb",
        _parse_positive_int,
        1024,
        "size limit of the offline spool; when full, ingestion pauses",
    ),
    Option(
        "parser",
        "timezone",
        _parse_timezone,
        "UTC",
        "zone of the Xray process clock (Xray writes local time without a zone)",
    ),
    Option("parser", "node", _parse_str, None, "node name stored with every row of these files"),
    Option("stats", "format", _parse_stats_format, "json", "run statistics format: json or csv"),
    Option(
        "stats",
        "output",
        _parse_str,
        None,
        "run statistics file (default: XRAY_HOME/stats.jsonl or .csv; - for stdout)",
    ),
    Option("migration", "drop_old", _parse_bool, False, "drop the legacy table after migrating"),
    Option(
        "dagster",
        "start_date",
        _parse_date,
        "2019-01-01",
        "first day of the daily partitions (older lines go to this day's partition)",
    ),
    Option("dagster", "database", _parse_str, "dagster", "database of Dagster's own storage"),
    Option("dagster", "sensor_interval", _parse_positive_int, 5, "seconds between sensor ticks"),
    Option(
        "dagster",
        "max_run_bytes",
        _parse_bytes,
        64 * 1024 * 1024,
        "largest byte range one sensor run loads",
    ),
    Option("retention", "days", _parse_positive_int, None, "days of raw rows kept (unset: all)"),
    Option(
        "retention", "rollup_days", _parse_positive_int, None, "days of rollups kept (unset: all)"
    ),
    Option("retention", "ahead_days", _parse_positive_int, 3, "days of partitions created ahead"),
    Option("checks", "reject_rate", _parse_fraction, 0.05, "share of rejected lines that warns"),
    Option(
        "checks",
        "freshness_minutes",
        _parse_positive_int,
        15,
        "newest row older than this while the log is written fails the freshness check",
    ),
    Option(
        "api",
        "token",
        _parse_str,
        None,
        "bearer token required on /api routes (unset: open)",
        secret=True,
        env=("XRAY_API_TOKEN",),
    ),
    Option("api", "cors_origins", _parse_list, (), "origins allowed by CORS (none by default)"),
    Option(
        "api",
        "database_url",
        _parse_database_url,
        None,
        "the sidecar's own (read-only) connection; default: the xray_api role",
        secret=True,
    ),
    Option("api", "statement_timeout_ms", _parse_positive_int, 5000, "per-query time limit"),
    Option(
        "general",
        "home",
        _parse_str,
        ".xray",
        "state folder: embedded database, spool, stats",
        env=("XRAY_HOME",),
    ),
    Option(
        "general",
        "log_level",
        _parse_log_level,
        "INFO",
        "log level",
        env=("XRAY_LOG_LEVEL",),
    ),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
SECTIONS: frozenset[str] = frozenset(o.section for o in OPTIONS)


@dataclass(frozen=True)
class Value:
    """A resolved value and where it came from."""

    value: Any
    origin: str


@dataclass(frozen=True)
class Settings:
    """The effective settings; `values` maps `section.key` to a Value."""

    values: Mapping[str, Value]
    config_path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values[name].value

    @property
    def home(self) -> Path:
        return Path(self.get("general.home")).expanduser().resolve()

    @property
    def timezone(self) -> str:
        return self.get("parser.timezone")

    def timezone_hint(self, now: Any = None) -> str | None:
        """A note when [parser] timezone is left at its default (UTC) on a machine whose
        clock is not UTC: Xray prints the local time of its process, so on this machine its
        lines would be read hours off. None when the zone is set or the machine is on UTC."""
        import datetime as dt

        if self.values["parser.timezone"].origin != "default":
            return None
        local = now if now is not None else dt.datetime.now().astimezone()
        if not local.utcoffset():
            return None
        name = getattr(local.tzinfo, "key", None) or _local_zone_name() or local.tzname()
        return (
            f"[parser] timezone is UTC (the default), but this machine's clock is {name}: an "
            "Xray running here prints that local time. Set [parser] timezone (or --timezone, "
            f"XRAY_PARSER_TIMEZONE) to {name} if so, or to the zone of the machine that "
            "writes the log"
        )

    @property
    def logfiles(self) -> tuple[str, ...]:
        return self.get("parser.logfile")

    @property
    def batch_size(self) -> int:
        return self.get("parser.batch_size")

    @property
    def node(self) -> str | None:
        return self.get("parser.node")

    @property
    def spool_dir(self) -> Path:
        configured = self.get("parser.offline_file")
        return Path(configured).expanduser().resolve() if configured else self.home / "spool"

    @property
    def stats_format(self) -> str:
        return self.get("stats.format")

    @property
    def stats_output(self) -> str:
        configured = self.get("stats.output")
        if configured:
            return configured
        suffix = "jsonl" if self.stats_format == "json" else "csv"
        return str(self.home / f"stats.{suffix}")

    @property
    def uses_embedded(self) -> bool:
        return self.get("postgresql.url") is None and self.get("postgresql.host") is None

    def external_url(self) -> str | None:
        """The configured server's URL, or None when the embedded server is used."""
        url = self.get("postgresql.url")
        if url:
            return normalize_url(url)
        host = self.get("postgresql.host")
        if host is None:
            return None
        user = quote(self.get("postgresql.user"), safe="")
        password = self.get("postgresql.password")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        port = self.get("postgresql.port")
        return f"postgresql://{auth}@{host}:{port}/{quote(self.get('postgresql.dbname'))}"

    def origin_of_database(self) -> str:
        if self.get("postgresql.url"):
            return f"postgresql.url ({self.values['postgresql.url'].origin})"
        if self.get("postgresql.host"):
            return f"[postgresql] host ({self.values['postgresql.host'].origin})"
        return "embedded server"

    def with_overrides(self, **overrides: Any) -> "Settings":
        merged = {**self.overrides, **{k: v for k, v in overrides.items() if v is not None}}
        return load_settings(self.config_path, merged)


def normalize_url(url: str) -> str:
    """A libpq-style URL (psycopg 3 accepts it; SQLAlchemy dialect suffixes are removed)."""
    scheme, sep, rest = url.partition("://")
    if scheme in {"postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        scheme = "postgresql"
    return f"{scheme}{sep}{rest}"


def _origin_label(path: Path) -> str:
    return f"config file {path}"


def _read_config(path: Path) -> dict[str, tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8-sig") as fh:
            parser.read_file(fh)
    except configparser.Error as exc:
        raise SettingsError(
            f"{path}: not a valid INI file ({exc.message.splitlines()[0]})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start});"
            " save it as UTF-8"
        ) from exc
    found: dict[str, tuple[str, str]] = {}
    for section in parser.sections():
        if section not in SECTIONS:
            known = ", ".join(f"[{s}]" for s in sorted(SECTIONS))
            raise SettingsError(f"{path}: unknown section [{section}]; known sections: {known}")
        for key, raw in parser.items(section):
            name = f"{section}.{key}"
            if name not in OPTIONS_BY_NAME:
                known_keys = ", ".join(o.key for o in OPTIONS if o.section == section)
                raise SettingsError(
                    f"{path}: unknown key '{key}' in [{section}]; known keys: {known_keys}"
                )
            found[name] = (raw, _origin_label(path))
    return found


def _parse(option: Option, raw: str, origin: str) -> Any:
    if raw.strip() == "" and option.default is None:
        return None
    try:
        return option.parse(raw)
    except ValueError as exc:
        where = f"[{option.section}] {option.key}"
        raise SettingsError(f"{where} = {raw!r} (from {origin}): {exc}") from exc


def _local_zone_name() -> str | None:
    """The IANA name of this machine's zone: TZ, else the /etc/localtime link's target."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        target = os.path.realpath("/etc/localtime")
        name = target.partition("/zoneinfo/")[2]
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    return name


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """XRAY_CONFIG, else ./config.ini when it exists."""
    env = os.environ if env is None else env
    if env.get("XRAY_CONFIG"):
        return Path(env["XRAY_CONFIG"])
    candidate = Path("config.ini")
    return candidate if candidate.exists() else None


def load_settings(
    config_path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < config.ini < XRAY_* environment < CLI overrides (keys `section.key`)."""
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    path = Path(config_path) if config_path else default_config_path(env)
    from_file: dict[str, tuple[str, str]] = {}
    if path is not None:
        if not path.exists():
            raise SettingsError(
                f"config file {path} does not exist; create it or drop --config/XRAY_CONFIG"
            )
        from_file = _read_config(path)

    values: dict[str, Value] = {}
    for option in OPTIONS:
        value, origin = option.default, "default"
        if option.name in from_file:
            raw, origin = from_file[option.name]
            value = _parse(option, raw, origin)
        for env_name in option.env_names:
            if env.get(env_name) not in (None, ""):
                origin = f"environment {env_name}"
                value = _parse(option, env[env_name], origin)
                break
        if overrides.get(option.name) is not None:
            raw_override = overrides[option.name]
            origin = "command line"
            if isinstance(raw_override, str):
                value = _parse(option, raw_override, origin)
            elif isinstance(raw_override, list | tuple):
                value = tuple(str(v) for v in raw_override)
            else:
                value = raw_override
        values[option.name] = Value(value, origin)
    for name in overrides:
        if name not in OPTIONS_BY_NAME:
            raise SettingsError(f"unknown setting {name}")
    return Settings(values=values, config_path=path, overrides=overrides)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, shown value, origin) for every setting, secrets masked."""
    rows: list[tuple[str, str, str]] = []
    for option in OPTIONS:
        item = settings.values[option.name]
        value = item.value
        if value is None:
            shown = "(unset)"
        elif option.secret and option.key == "url":
            shown = mask_url(value)
        elif option.secret:
            shown = "***"
        elif isinstance(value, tuple):
            shown = ", ".join(value) or "(none)"
        else:
            shown = str(value)
        rows.append((option.name, shown, item.origin))
    return rows
