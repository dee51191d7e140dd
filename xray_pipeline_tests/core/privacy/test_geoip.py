"""Country and ASN look-ups from MMDB files the tests write themselves (documentation ranges)."""

from pathlib import Path

import pytest
from conftest import write_geo_databases, write_mmdb

from xray_pipeline.core.privacy.geoip import Database, GeoIP, GeoIPError, Place


@pytest.fixture
def databases(tmp_path: Path) -> tuple[Path, Path]:
    return write_geo_databases(tmp_path)


def test_addresses_get_their_country_and_network(databases):
    geo = GeoIP(*databases)
    places = geo.lookup(
        ["192.0.2.7", "192.0.2.200", "2001:db8::1", "203.0.113.9", "198.51.100.1", None]
    )
    assert places == {
        "192.0.2.7": Place("DE", 64500, "Example Mobile"),
        "192.0.2.200": Place("DE"),
        "2001:db8::1": Place("NL"),
        "203.0.113.9": Place(None, 64501, None),
    }  # an address no database knows has no entry


@pytest.mark.parametrize("source", ["@xray.sock", "/run/xray.sock", "DNS", "192.0.2.*", ""])
def test_socket_named_and_masked_sources_get_none_without_error(databases, source):
    assert GeoIP(*databases).lookup([source]) == {}


def test_each_distinct_address_is_looked_up_once(databases, monkeypatch):
    geo = GeoIP(*databases)
    calls: list[str] = []
    for db in (geo.country, geo.asn):
        real = db.reader()

        class Counting:
            def __init__(self, reader):
                self.reader = reader

            def get(self, ip):
                calls.append(str(ip))
                return self.reader.get(ip)

        monkeypatch.setattr(db, "reader", lambda real=real: Counting(real))
    chunk = ["192.0.2.7"] * 500 + ["2001:db8::1"] * 300 + ["192.0.2.7"]
    assert len(geo.lookup(chunk)) == 2
    assert sorted(calls) == sorted(["192.0.2.7", "2001:db8::1"] * 2)  # once per database


def test_a_replaced_database_is_used_without_a_restart(databases, tmp_path: Path):
    country, asn = databases
    geo = GeoIP(country, asn)
    before = geo.version()
    assert geo.lookup(["192.0.2.7"])["192.0.2.7"].country == "DE"
    write_mmdb(country, {"192.0.2.0/24": {"country_code": "FR"}}, "Test-Country-2")
    assert geo.lookup(["192.0.2.7"])["192.0.2.7"].country == "FR"  # ip-location-db's field
    assert geo.version() != before and "Test-Country-2@" in geo.version()


def test_a_missing_file_names_the_setting(tmp_path: Path):
    with pytest.raises(GeoIPError, match=r"\[geoip\] country_db .*cannot read it"):
        GeoIP(tmp_path / "nowhere.mmdb", None)


def test_a_file_that_is_not_an_mmdb_names_the_setting(tmp_path: Path):
    text = tmp_path / "asn.csv"
    text.write_text("1.0.0.0,1.0.0.255,13335,Cloudflare\n")
    with pytest.raises(GeoIPError, match=r"\[geoip\] asn_db .*not a MaxMind-format database"):
        GeoIP(None, text)


def test_an_mmdb_of_the_wrong_kind_names_the_setting(databases):
    country, asn = databases
    with pytest.raises(GeoIPError, match=r"\[geoip\] asn_db .*not an ASN database"):
        GeoIP(None, country)
    with pytest.raises(GeoIPError, match=r"\[geoip\] country_db .*not a country database"):
        Database(asn, "country", "[geoip] country_db")


def test_without_databases_nothing_resolves():
    geo = GeoIP(None, None)
    assert not geo.enabled and geo.lookup(["192.0.2.7"]) == {} and geo.version() == "none"
