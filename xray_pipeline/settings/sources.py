"""The sources pydantic-settings merges: config.ini, the environment, the command line.

Each keeps the raw values per section and key, and where each came from (`config show`)."""

import configparser
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from xray_pipeline.settings.sections import env_names


class SettingsError(ValueError):
    """A setting is wrong; the message names it and says how to fix it."""


def model_fields(settings_cls: type[BaseSettings]) -> Iterator[tuple[str, str, FieldInfo]]:
    """(section, key, field) of every setting, in the order of the models."""
    for section, info in settings_cls.model_fields.items():
        model: type[BaseModel] = info.annotation
        for key, field in model.model_fields.items():
            yield section, key, field


class RawSource(PydanticBaseSettingsSource):
    """Raw values per section and key, with the label of where each came from."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.values: dict[str, dict[str, Any]] = {}
        self.origins: dict[str, str] = {}
        self.sections: dict[str, type[BaseModel]] = {
            name: info.annotation for name, info in settings_cls.model_fields.items()
        }

    def put(self, section: str, key: str, raw: Any, origin: str) -> None:
        info = self.sections[section].model_fields[key]
        if isinstance(raw, str) and raw.strip() == "" and info.default is None:
            raw = None  # an empty value of an optional setting unsets it
        self.values.setdefault(section, {})[key] = raw
        self.origins[f"{section}.{key}"] = origin

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.values


class IniSource(RawSource):
    """config.ini: `[section]` and `key = value`, UTF-8 (a byte-order mark is fine)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
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
                f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                f"{exc.start}); save it as UTF-8"
            ) from exc
        for section in parser.sections():
            if section not in self.sections:
                known = ", ".join(f"[{s}]" for s in sorted(self.sections))
                raise SettingsError(f"{path}: unknown section [{section}]; known sections: {known}")
            fields = self.sections[section].model_fields
            for key, raw in parser.items(section):
                if key not in fields:
                    raise SettingsError(
                        f"{path}: unknown key '{key}' in [{section}]; known keys: "
                        + ", ".join(fields)
                    )
                self.put(section, key, raw, f"config file {path}")


class EnvSource(RawSource):
    """XRAY_<SECTION>_<KEY> (and the aliases some settings have); an empty one is unset."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        for section, key, info in model_fields(settings_cls):
            for name in env_names(section, key, info):
                if env.get(name) not in (None, ""):
                    self.put(section, key, env[name], f"environment {name}")
                    break


class CliSource(RawSource):
    """The command line's flags, as `section.key` overrides."""

    def __init__(self, settings_cls: type[BaseSettings], overrides: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        for name, value in overrides.items():
            section, _, key = name.partition(".")
            if section not in self.sections or key not in self.sections[section].model_fields:
                raise SettingsError(f"unknown setting {name}")
            if value is not None:
                self.put(section, key, value, "command line")
