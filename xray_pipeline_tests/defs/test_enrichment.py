"""Enrichment and privacy in the Dagster graph: the load runs apply [privacy] and [geoip], the
`ip_places` asset places days loaded before, and a wrong setting stops the code location."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest
from conftest import write_geo_databases

from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.privacy.geoip import GeoIPError
from xray_pipeline.core.privacy.policy import PrivacyError
from xray_pipeline.definitions import build_definitions
from xray_pipeline.settings import load_settings

LOG = (
    "2025/01/01 12:00:00 from 192.0.2.7:1 accepted tcp:www.a.example.co.uk:443 [in >> out] "
    "email: u1\n"
    "2025/01/01 12:00:01 from 203.0.113.9:1 accepted tcp:198.51.100.3:443 [in >> out] "
    "email: u2\n"
)


def settings_for(db_url: str, tmp_path: Path, log: Path, **extra: str):
    overrides = {
        "postgresql.url": db_url,
        "general.home": str(tmp_path / "home"),
        "parser.logfile": str(log),
        "dagster.start_date": "2025-01-01",
        "dagster.tail_minutes": "0",
    }
    overrides.update(extra)
    return load_settings(None, overrides)


def test_load_runs_apply_the_policy_and_place_the_addresses(
    fresh_db_url: str, tmp_path: Path, instance, monkeypatch
):
    monkeypatch.setenv("XRAY_PRIVACY_SECRET", "s" * 32)  # as the daemon and its runs have it
    country, asn = write_geo_databases(tmp_path)
    log = tmp_path / "access.log"
    log.write_text(LOG)
    defs = build_definitions(
        settings_for(
            fresh_db_url, tmp_path, log,
            **{"geoip.country_db": str(country), "geoip.asn_db": str(asn),
               "privacy.source_ip": "hash", "privacy.destination": "domain"},
        )
    )  # fmt: skip
    sensor = defs.resolve_sensor_def("access_log_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
    [request] = result.run_requests
    run = defs.resolve_job_def("load_logs_job").execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key, instance=instance
    )
    [loaded] = [
        m for m in run.asset_materializations_for_node("logs") if m.asset_key == dg.AssetKey("logs")
    ]
    assert loaded.metadata["new_places"].value == 2  # the two sources (198.51.100.3: unknown)
    with connect(fresh_db_url) as conn:
        rows = conn.execute(
            "SELECT l.src_ip, l.src_host, e.host, p.country, p.asn FROM logs l "
            "JOIN endpoints e ON e.id = l.endpoint_id "
            "LEFT JOIN ip_places p ON p.address = l.src_host ORDER BY l.byte_offset"
        ).fetchall()
    assert [r[0] for r in rows] == [None, None]
    assert all(r[1].startswith("hash:") for r in rows)
    assert [r[2:] for r in rows] == [("example.co.uk", "DE", 64500), ("198.51.100.3", None, 64501)]


def test_the_ip_places_asset_places_days_loaded_before(fresh_db_url: str, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text(LOG)
    with connect(fresh_db_url) as conn:  # loaded while no database was configured
        ingest_files(conn, [log], timezone="UTC", batch_size=1 << 20)
        assert conn.execute("SELECT count(*) FROM ip_places").fetchone() == (0,)
    country, asn = write_geo_databases(tmp_path)
    defs = build_definitions(
        settings_for(
            fresh_db_url, tmp_path, log,
            **{"geoip.country_db": str(country), "geoip.asn_db": str(asn)},
        )
    )  # fmt: skip
    asset = defs.resolve_assets_def("ip_places")
    result = dg.materialize([asset], partition_key="2025-01-01")  # its resources are bound
    assert result.success
    [materialization] = result.asset_materializations_for_node("ip_places")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    # two sources and one IP destination (198.51.100.3, which no database knows)
    assert metadata["addresses"] == 3 and metadata["resolved"] == 2
    assert "Test-Country@" in metadata["db_version"]
    with connect(fresh_db_url) as conn:
        places = conn.execute(
            "SELECT address, country, asn FROM ip_places ORDER BY address"
        ).fetchall()
    assert places == [("192.0.2.7", "DE", 64500), ("203.0.113.9", None, 64501)]
    # nothing changed since: a second materialization writes nothing
    again = dg.materialize([asset], partition_key="2025-01-01")
    [second] = again.asset_materializations_for_node("ip_places")
    assert second.metadata["written"].value == 0
    assert dt.date(2025, 1, 1).isoformat() in second.metadata["days"].value


@pytest.mark.parametrize(
    ("overrides", "error", "named"),
    [
        ({"privacy.source_ip": "hash"}, PrivacyError, "XRAY_PRIVACY_SECRET"),
        ({"geoip.country_db": "missing.mmdb"}, GeoIPError, "[geoip] country_db"),
    ],
)
def test_a_setting_that_cannot_work_stops_the_code_location(
    fresh_db_url: str, tmp_path: Path, overrides, error, named
):
    settings = load_settings(
        None,
        {"postgresql.url": fresh_db_url, "general.home": str(tmp_path), **overrides},
        env={},
    )
    with pytest.raises(error) as raised:
        build_definitions(settings)
    assert named in str(raised.value)
