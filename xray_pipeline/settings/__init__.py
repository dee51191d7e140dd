"""Typed settings: config.ini, then XRAY_* environment variables, then CLI flags, later winning.

One pydantic model per INI section; pydantic-settings merges the three sources (an INI source
and an environment source of our own, the CLI flags as init values) in that order. Each value
remembers where it came from (`config show`), and a bad one is a SettingsError that names the
section and key, the source, and what is expected.
"""

import datetime as dt
import os
import zoneinfo
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import PrivateAttr, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from xray_pipeline.settings.sections import (
    AlertsSettings,
    ApiSettings,
    ArchiveSettings,
    ChecksSettings,
    DagsterSettings,
    GeneralSettings,
    GeoipSettings,
    MigrationSettings,
    ParserSettings,
    PostgresqlSettings,
    PrivacySettings,
    RetentionSettings,
    RulesSettings,
    Section,
    ShipSettings,
    StatsSettings,
    env_names,
)
from xray_pipeline.settings.sources import (
    CliSource,
    EnvSource,
    IniSource,
    RawSource,
    SettingsError,
    model_fields,
)

_SOURCES: ContextVar[tuple[RawSource, ...]] = ContextVar("xray_settings_sources", default=())


# --------------------------------------------------------------------------- Settings


class Settings(BaseSettings):
    """The effective settings: one attribute per INI section."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    postgresql: PostgresqlSettings = PostgresqlSettings()
    parser: ParserSettings = ParserSettings()
    stats: StatsSettings = StatsSettings()
    migration: MigrationSettings = MigrationSettings()
    dagster: DagsterSettings = DagsterSettings()
    retention: RetentionSettings = RetentionSettings()
    archive: ArchiveSettings = ArchiveSettings()
    checks: ChecksSettings = ChecksSettings()
    geoip: GeoipSettings = GeoipSettings()
    privacy: PrivacySettings = PrivacySettings()
    rules: RulesSettings = RulesSettings()
    alerts: AlertsSettings = AlertsSettings()
    api: ApiSettings = ApiSettings()
    ship: ShipSettings = ShipSettings()
    general: GeneralSettings = GeneralSettings()

    _config_path: Path | None = PrivateAttr(None)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the first wins: the command line, the environment, config.ini (load_settings)
        return _SOURCES.get()

    @property
    def config_path(self) -> Path | None:
        return self._config_path

    def origin(self, name: str) -> str:
        """Where `section.key` came from: `default`, `config file …`, `environment …`,
        `command line`."""
        return self._origins.get(name, "default")

    @property
    def home(self) -> Path:
        return Path(self.general.home).expanduser().resolve()

    @property
    def timezone(self) -> str:
        return self.parser.timezone

    @property
    def logfiles(self) -> tuple[str, ...]:
        return self.parser.logfile

    @property
    def batch_size(self) -> int:
        return int(self.parser.batch_size)

    @property
    def node(self) -> str | None:
        return self.parser.node

    @property
    def raw_days(self) -> int | None:
        """[retention] raw_days, else its former name [retention] days."""
        return self.retention.raw_days or self.retention.days

    @property
    def landing_dir(self) -> Path:
        """Where the ranges that the fleet's nodes ship land (one folder per node)."""
        return self.home / "landed"

    @property
    def archive_root(self) -> str:
        """The archive's folder or URL."""
        return self.archive.url or str(self.home / "archive")

    @property
    def hot_days(self) -> int | None:
        """[retention] hot_days when the archive is on, else None (every day stays)."""
        return self.retention.hot_days if self.archive.enabled else None

    @property
    def spool_dir(self) -> Path:
        configured = self.parser.offline_file
        return Path(configured).expanduser().resolve() if configured else self.home / "spool"

    @property
    def stats_format(self) -> str:
        return self.stats.format

    @property
    def stats_output(self) -> str:
        if self.stats.output:
            return self.stats.output
        suffix = "jsonl" if self.stats_format == "json" else "csv"
        return str(self.home / f"stats.{suffix}")

    @property
    def api_token(self) -> str | None:
        return self.api.token.get_secret_value() if self.api.token else None

    @property
    def uses_embedded(self) -> bool:
        return self.postgresql.url is None and self.postgresql.host is None

    def external_url(self) -> str | None:
        """The configured server's URL, or None when the embedded server is used."""
        pg = self.postgresql
        if pg.url is not None:
            return normalize_url(pg.url.get_secret_value())
        if pg.host is None:
            return None
        from sqlalchemy.engine import URL  # here: its import is a large share of a start

        return URL.create(
            "postgresql",
            username=pg.user,
            password=pg.password.get_secret_value() if pg.password else None,
            host=pg.host,
            port=pg.port,
            database=pg.dbname,
        ).render_as_string(hide_password=False)

    def origin_of_database(self) -> str:
        if self.postgresql.url is not None:
            return f"postgresql.url ({self.origin('postgresql.url')})"
        if self.postgresql.host:
            return f"[postgresql] host ({self.origin('postgresql.host')})"
        return "embedded server"

    def timezone_hint(self, now: Any = None) -> str | None:
        """A note when [parser] timezone is left at its default (UTC) on a machine whose
        clock is not UTC: Xray prints the local time of its process, so on this machine its
        lines would be read hours off. None when the zone is set or the machine is on UTC."""
        if self.origin("parser.timezone") != "default":
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


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation for name, info in Settings.model_fields.items()
}


def fields() -> Iterator[tuple[str, str, FieldInfo]]:
    """(section, key, field) of every setting, in the order of the models."""
    return model_fields(Settings)


def normalize_url(url: str) -> str:
    """A libpq-style URL (psycopg 3 accepts it; SQLAlchemy dialect suffixes are removed)."""
    scheme, sep, rest = url.partition("://")
    if scheme in {"postgres", "postgresql+psycopg", "postgresql+psycopg2"}:
        scheme = "postgresql"
    return f"{scheme}{sep}{rest}"


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
    path = Path(config_path) if config_path else default_config_path(env)
    sources: list[RawSource] = [
        CliSource(Settings, overrides or {}),
        EnvSource(Settings, env),
    ]
    if path is not None:
        if not path.exists():
            raise SettingsError(
                f"config file {path} does not exist; create it or drop --config/XRAY_CONFIG"
            )
        sources.append(IniSource(Settings, path))
    origins: dict[str, str] = {}
    for source in reversed(sources):
        origins.update(source.origins)
    token = _SOURCES.set(tuple(sources))
    try:
        settings = Settings()
    except ValidationError as exc:
        raise _explain(exc, sources, origins) from None
    finally:
        _SOURCES.reset(token)
    settings._config_path = path
    settings._origins = origins
    return settings


def _explain(
    exc: ValidationError, sources: list[RawSource], origins: dict[str, str]
) -> SettingsError:
    """The first error of a validation, naming the setting, its value and where it came from."""
    error = exc.errors()[0]
    section, key = (str(part) for part in error["loc"][:2])
    name = f"{section}.{key}"
    raw = next((s.values[section][key] for s in sources if key in s.values.get(section, {})), None)
    message = error["msg"].removeprefix("Value error, ")
    return SettingsError(
        f"[{section}] {key} = {raw!r} (from {origins.get(name, 'default')}): {message}"
    )


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def shown(value: Any, *, url: bool = False) -> str:
    """A setting's value as `config show` prints it, secrets masked."""
    if value is None:
        return "(unset)"
    if isinstance(value, SecretStr):
        return mask_url(value.get_secret_value()) if url else "***"
    if isinstance(value, tuple):
        return ", ".join(value) or "(none)"
    return str(value)


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, shown value, origin) for every setting, secrets masked."""
    rows = []
    for section, key, _ in fields():
        value = getattr(getattr(settings, section), key)
        name = f"{section}.{key}"
        rows.append((name, shown(value, url=key.endswith("url")), settings.origin(name)))
    return rows


def reference() -> str:
    """The configuration reference (docs/configuration.md), made from the models."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the models in `xray_pipeline/settings/` by",
        "`xray-pipeline config reference`; a test fails when this page is stale. Each setting",
        "is read from `config.ini` (`[section]`, `key = value`), then from its environment",
        "variable, then from a command-line flag where there is one, the later winning.",
        "`xray-pipeline config show` prints the effective values and where each came from.",
        "Sizes take units: `4194304`, `4M`, `512k`, `1G` (powers of 1024). An empty value",
        "unsets an optional setting.",
    ]
    for section, model in SECTIONS.items():
        out += ["", f"## [{section}]", "", " ".join((model.__doc__ or "").split()), ""]
        out += ["| key | default | environment | what it is |", "| --- | --- | --- | --- |"]
        for key, info in model.model_fields.items():
            default = shown(info.default, url=key.endswith("url"))
            env = ", ".join(f"`{n}`" for n in env_names(section, key, info))
            out.append(f"| `{key}` | `{default}` | {env} | {info.description} |")
    return "\n".join(out) + "\n"


__all__ = [
    "ParserSettings",
    "Settings",
    "SettingsError",
    "describe",
    "load_settings",
    "mask_url",
    "reference",
]
