"""Settings: precedence config.ini < environment < CLI, and errors that name the setting."""

import zoneinfo
from pathlib import Path

import pytest

from xray_pipeline.settings import SettingsError, describe, load_settings, mask_url


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(text)
    return path


def test_defaults_use_embedded_server_and_utc():
    settings = load_settings(None, env={})
    assert settings.uses_embedded
    assert settings.timezone == "UTC"
    assert settings.external_url() is None
    assert settings.origin("parser.timezone") == "default"


def test_precedence_file_then_env_then_cli(tmp_path: Path):
    path = write_config(
        tmp_path,
        "[parser]\ntimezone = Asia/Shanghai\nbatch_size = 1000\nlogfile = /a.log, /b.log\n",
    )
    from_file = load_settings(path, env={})
    assert from_file.timezone == "Asia/Shanghai"
    assert from_file.batch_size == 1000
    assert from_file.logfiles == ("/a.log", "/b.log")
    assert from_file.origin("parser.timezone") == f"config file {path}"

    env = {"XRAY_PARSER_TIMEZONE": "Europe/Berlin"}
    from_env = load_settings(path, env=env)
    assert from_env.timezone == "Europe/Berlin"
    assert from_env.origin("parser.timezone") == "environment XRAY_PARSER_TIMEZONE"
    assert from_env.batch_size == 1000

    from_cli = load_settings(path, {"parser.timezone": "America/New_York"}, env=env)
    assert from_cli.timezone == "America/New_York"
    assert from_cli.origin("parser.timezone") == "command line"


def test_postgresql_section_builds_url(tmp_path: Path):
    path = write_config(
        tmp_path,
        "[postgresql]\nhost = db.example.org\nport = 6543\ndbname = logs\n"
        "user = xray\npassword = p@ss:word\n",
    )
    settings = load_settings(path, env={})
    assert not settings.uses_embedded
    assert settings.external_url() == "postgresql://xray:p%40ss%3Aword@db.example.org:6543/logs"


def test_database_url_env_wins_over_section_and_database_url_alias(tmp_path: Path):
    path = write_config(tmp_path, "[postgresql]\nhost = db.example.org\n")
    env = {"DATABASE_URL": "postgresql://a@h1/x", "XRAY_DATABASE_URL": "postgresql://b@h2/y"}
    assert load_settings(path, env=env).external_url() == "postgresql://b@h2/y"
    env = {"DATABASE_URL": "postgres://a@h1/x"}
    assert load_settings(path, env=env).external_url() == "postgresql://a@h1/x"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[parser]\ntimezone = Mars/Olympus\n", "[parser] timezone = 'Mars/Olympus'"),
        ("[parser]\nbatch_size = -3\n", "[parser] batch_size"),
        ("[parser]\nbatch_size = huge\n", "expected a size in bytes, such as 4194304, 4M"),
        ("[parser]\nbatch_size = 0k\n", "expected a size above 0"),
        ("[retention]\ndays = a week\n", "expected a whole number, such as 10"),
        ("[checks]\nreject_rate = high\n", "expected a number from 0 to 1, such as 0.05"),
        ("[parser]\nbatchsize = 3\n", "unknown key 'batchsize' in [parser]"),
        ("[postgres]\nhost = x\n", "unknown section [postgres]"),
        ("[postgresql]\nport = http\n", "[postgresql] port = 'http'"),
        ("[stats]\nformat = xml\n", "expected json or csv"),
        ("[migration]\ndrop_old = maybe\n", "expected true or false"),
        ("not an ini file", "not a valid INI file"),
    ],
)
def test_bad_config_names_the_setting(tmp_path: Path, text: str, needle: str):
    path = write_config(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_bad_env_value_names_the_variable():
    with pytest.raises(SettingsError, match="XRAY_PARSER_TIMEZONE"):
        load_settings(None, env={"XRAY_PARSER_TIMEZONE": "Nowhere"})
    with pytest.raises(SettingsError, match="postgresql://user:password@host"):
        load_settings(None, env={"XRAY_DATABASE_URL": "mysql://x@y/z"})


def test_missing_config_file_is_an_error(tmp_path: Path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.ini", env={})


def test_describe_masks_secrets(tmp_path: Path):
    path = write_config(tmp_path, "[postgresql]\nhost = h\npassword = hunter2\n")
    env = {"XRAY_DATABASE_URL": "postgresql://u:s3cret@h:5432/d"}
    rows = {name: (shown, origin) for name, shown, origin in describe(load_settings(path, env=env))}
    assert rows["postgresql.password"][0] == "***"
    assert rows["postgresql.url"][0] == "postgresql://u:***@h:5432/d"
    flat = repr(rows)
    assert "hunter2" not in flat and "s3cret" not in flat


def test_mask_url_without_password_is_unchanged():
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_stats_defaults_follow_format(tmp_path: Path):
    settings = load_settings(None, {"stats.format": "csv", "general.home": str(tmp_path)}, env={})
    assert settings.stats_output == str(tmp_path / "stats.csv")
    assert settings.spool_dir == tmp_path / "spool"


@pytest.mark.parametrize(
    ("raw", "size"),
    [("4194304", 4194304), ("4M", 4 << 20), ("4 MiB", 4 << 20), ("512k", 512 << 10),
     ("8mb", 8 << 20), ("1G", 1 << 30), ("1.5M", 1572864), ("100 B", 100)],
)  # fmt: skip
def test_byte_sizes_take_units(tmp_path: Path, raw: str, size: int):
    path = write_config(
        tmp_path, f"[parser]\nbatch_size = {raw}\n[dagster]\nmax_run_bytes = {raw}\n"
    )
    settings = load_settings(path, env={})
    assert settings.batch_size == size and settings.dagster.max_run_bytes == size


def test_timezone_hint_only_when_left_at_utc_on_a_non_utc_machine(tmp_path: Path):
    import datetime as dt

    berlin_summer = dt.datetime(2025, 7, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
    utc_now = dt.datetime(2025, 7, 1, 12, 0, tzinfo=dt.UTC)
    default = load_settings(None, env={})
    hint = default.timezone_hint(now=berlin_summer)
    assert hint is not None and "[parser] timezone is UTC (the default)" in hint
    assert "--timezone" in hint and "XRAY_PARSER_TIMEZONE" in hint
    assert default.timezone_hint(now=utc_now) is None  # a UTC machine: nothing to say
    chosen = load_settings(None, env={"XRAY_PARSER_TIMEZONE": "UTC"})
    assert chosen.timezone_hint(now=berlin_summer) is None  # set on purpose, even to UTC


def test_config_saved_by_a_windows_editor_reads(tmp_path: Path):
    """Notepad's byte-order mark and CRLF line ends: the same settings."""
    path = tmp_path / "config.ini"
    path.write_bytes(b"\xef\xbb\xbf[parser]\r\ntimezone = Europe/Berlin\r\nbatch_size = 8M\r\n")
    settings = load_settings(path, env={})
    assert settings.timezone == "Europe/Berlin" and settings.batch_size == 8 << 20


def test_config_in_another_encoding_says_so(tmp_path: Path):
    path = tmp_path / "config.ini"
    path.write_bytes("# café\n[parser]\ntimezone = UTC\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"not UTF-8 text .*save it as UTF-8") as info:
        load_settings(path, env={})
    assert str(path) in str(info.value)


def test_configuration_reference_page_is_current():
    """docs/configuration.md is made from the models; regenerate it with
    `uv run xray-pipeline config reference > docs/configuration.md`."""
    from xray_pipeline.settings import reference

    page = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == reference()
    assert "| `batch_size` | `4194304` | `XRAY_PARSER_BATCH_SIZE` |" in reference()
