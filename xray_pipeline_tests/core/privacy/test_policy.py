"""What the rows keep under each [privacy] mode, and the places stored for their addresses,
read back from the tables with SQL after real loads."""

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from conftest import text_traces, write_geo_databases, write_mmdb

from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.places import enrich_day
from xray_pipeline.core.privacy.policy import PrivacyError, RowPolicy

SECRET = b"0123456789abcdef-test"
LINES = (
    "2024/05/01 10:00:00 from 192.0.2.7:40000 accepted tcp:www.video.example.co.uk:443 "
    "[in >> out] email: alice\n"
    "2024/05/01 10:00:01 from 192.0.2.9:40001 accepted udp:198.51.100.20:53 [in >> out] "
    "email: alice\n"
    "2024/05/01 10:00:02 from [2001:db8::5]:40002 accepted tcp:api.example.com:443 "
    "[in >> out] email: bob\n"
    "2024/05/01 10:00:03 from 203.0.113.4:40003 accepted //cdn.example.org:80/x?q=1 "
    "[in -> out] email: bob\n"
    "2024/05/01 10:00:04 from unix:@xray.sock accepted tcp:example.net:443 [in >> out] "
    "email: carol\n"
)


@pytest.fixture
def geoip(tmp_path: Path) -> GeoIP:
    return GeoIP(*write_geo_databases(tmp_path))


def load(conn: psycopg.Connection, tmp_path: Path, policy: RowPolicy, text: str = LINES):
    path = tmp_path / "access.log"
    with path.open("a") as fh:
        fh.write(text)
    return ingest_files(conn, [path], timezone="UTC", batch_size=1 << 20, policy=policy)


def stored(conn: psycopg.Connection) -> list[tuple]:
    rows = conn.execute(
        "SELECT coalesce(host(l.src_ip), l.src_host), e.host, e.port, l.dest_url, "
        "p.country, p.asn FROM logs l LEFT JOIN endpoints e ON e.id = l.endpoint_id "
        "LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host) "
        "ORDER BY l.byte_offset"
    ).fetchall()
    conn.commit()
    return rows


def test_full_keeps_everything_and_places_each_address(conn, tmp_path, geoip):
    load(conn, tmp_path, RowPolicy(geoip=geoip))
    assert stored(conn) == [
        ("192.0.2.7", "www.video.example.co.uk", 443, None, "DE", 64500),
        ("192.0.2.9", "198.51.100.20", 53, None, "DE", 64500),
        ("2001:db8::5", "api.example.com", 443, None, "NL", None),
        ("203.0.113.4", "cdn.example.org", 80, "//cdn.example.org:80/x?q=1", None, 64501),
        ("@xray.sock", "example.net", 443, None, None, None),  # a socket has no place
    ]
    assert conn.execute("SELECT org FROM asns WHERE asn = 64500").fetchone() == ("Example Mobile",)
    versions = {r[0] for r in conn.execute("SELECT db_version FROM ip_places")}
    assert versions == {geoip.version()}


def test_without_databases_the_places_stay_empty(conn, tmp_path):
    load(conn, tmp_path, RowPolicy())
    assert [r[4:] for r in stored(conn)] == [(None, None)] * 5
    assert conn.execute("SELECT count(*) FROM ip_places").fetchone() == (0,)


def test_mask_keeps_the_network_and_its_place(conn, tmp_path, geoip):
    load(conn, tmp_path, RowPolicy(source_ip="mask", geoip=geoip))
    rows = stored(conn)
    assert [r[0] for r in rows] == [
        "192.0.2.0/24",
        "192.0.2.0/24",
        "2001:db8::/48",
        "203.0.113.0/24",
        "@xray.sock",
    ]
    assert [r[4:] for r in rows[:4]] == [("DE", 64500), ("DE", 64500), ("NL", None), (None, 64501)]
    assert conn.execute("SELECT count(*) FROM logs WHERE src_ip IS NOT NULL").fetchone() == (0,)
    assert not text_traces(conn, ["192.0.2.7", "192.0.2.9", "2001:db8::5", "203.0.113.4"])


def test_mask_prefixes_are_configurable(conn, tmp_path):
    load(conn, tmp_path, RowPolicy(source_ip="mask", ipv4_prefix=16, ipv6_prefix=32))
    assert [r[0] for r in stored(conn)][:3] == ["192.0.0.0/16", "192.0.0.0/16", "2001:db8::/32"]


def test_hash_keeps_no_address_but_distinct_sources_still_count(conn, tmp_path, geoip):
    load(conn, tmp_path, RowPolicy(source_ip="hash", secret=SECRET, geoip=geoip))
    rows = stored(conn)
    hashes = [r[0] for r in rows[:4]]
    assert all(h.startswith("hash:") and len(h) == 21 for h in hashes)
    assert len(set(hashes)) == 4  # four addresses, four hashes
    assert [r[4:] for r in rows[:4]] == [("DE", 64500), ("DE", 64500), ("NL", None), (None, 64501)]
    assert not text_traces(conn, ["192.0.2.7", "192.0.2.9", "2001:db8::5", "203.0.113.4"])
    per_user = dict(
        conn.execute(
            "SELECT u.email, count(DISTINCT l.src_host) FROM logs l JOIN users u "
            "ON u.id = l.user_id GROUP BY 1"
        ).fetchall()
    )
    assert per_user == {"alice": 2, "bob": 2, "carol": 1}


def test_hashes_are_stable_across_runs_and_differ_across_secrets():
    ip = RowPolicy().sources(["192.0.2.7"])  # the parse of the address
    one = RowPolicy(source_ip="hash", secret=SECRET)
    again = RowPolicy(source_ip="hash", secret=SECRET)
    other = RowPolicy(source_ip="hash", secret=b"another-secret-of-16+")
    value = ip["address"][0]
    assert one.sources([value])["stored_host"][0] == again.sources([value])["stored_host"][0]
    assert one.sources([value])["stored_host"][0] != other.sources([value])["stored_host"][0]
    # the same address written differently is the same source
    assert (
        one.sources(["2001:DB8::5"])["stored_host"][0]
        == one.sources(["2001:db8:0::5"])["stored_host"][0]
    )


def test_domain_keeps_the_registrable_domain_and_drops_paths(conn, tmp_path):
    load(conn, tmp_path, RowPolicy(destination="domain"))
    assert [r[1:4] for r in stored(conn)] == [
        ("example.co.uk", 443, None),
        ("198.51.100.20", 53, None),  # an address has no domain: it stays
        ("example.com", 443, None),
        ("example.org", 80, None),
        ("example.net", 443, None),
    ]
    hosts = {r[0] for r in conn.execute("SELECT host FROM endpoints")}
    assert "www.video.example.co.uk" not in hosts and "cdn.example.org" not in hosts


def test_none_keeps_no_destination(conn, tmp_path):
    load(conn, tmp_path, RowPolicy(destination="none"))
    assert [r[1:4] for r in stored(conn)] == [(None, None, None)] * 5
    assert conn.execute("SELECT count(*) FROM endpoints").fetchone() == (0,)


def test_ip_destinations_get_their_place(conn, tmp_path, geoip):
    load(conn, tmp_path, RowPolicy(geoip=geoip), LINES.replace("198.51.100.20", "192.0.2.130"))
    place = conn.execute("SELECT country, asn FROM ip_places WHERE address = '192.0.2.130'")
    assert place.fetchone() == ("DE", None)


def test_a_chunk_resolves_each_address_once(conn, tmp_path, geoip):
    text = "".join(
        f"2024/05/01 10:{i // 60:02d}:{i % 60:02d} from 192.0.2.{i % 3}:1 accepted "
        f"tcp:example.com:443 [in >> out] email: u{i % 5}\n"
        for i in range(600)
    )
    load(conn, tmp_path, RowPolicy(geoip=geoip), text)
    assert geoip.lookups == 3
    assert conn.execute("SELECT count(*) FROM ip_places").fetchone() == (3,)


def test_a_replaced_database_places_new_rows_and_a_backfill_refreshes_old_ones(
    conn, tmp_path, geoip
):
    policy = RowPolicy(geoip=geoip)
    load(conn, tmp_path, policy)
    write_mmdb(geoip.country.path, {"192.0.2.0/24": {"country_code": "FR"}}, "Test-Country-2")
    load(
        conn,
        tmp_path,
        policy,
        "2024/05/02 10:00:00 from 192.0.2.50:1 accepted tcp:example.com:443 [in >> out] "
        "email: dave\n",
    )
    place = "SELECT country, db_version FROM ip_places WHERE address = %s"
    new_country, new_version = conn.execute(place, ("192.0.2.50",)).fetchone()
    assert new_country == "FR" and "Test-Country-2@" in new_version
    assert conn.execute(place, ("192.0.2.7",)).fetchone()[0] == "DE"  # day 1 not rewritten
    result = enrich_day(conn, dt.date(2024, 5, 1), "UTC", policy)
    assert result.written >= 2 and result.version == new_version
    assert conn.execute(place, ("192.0.2.7",)).fetchone() == ("FR", new_version)
    assert conn.execute(place, ("192.0.2.9",)).fetchone() == ("FR", new_version)


def test_enabling_databases_later_places_old_days(conn, tmp_path, geoip):
    load(conn, tmp_path, RowPolicy(source_ip="mask"))
    result = enrich_day(conn, dt.date(2024, 5, 1), "UTC", RowPolicy(geoip=geoip))
    assert result.addresses == 4  # three masked networks and one IP destination
    assert [r[4] for r in stored(conn)] == ["DE", "DE", "NL", None, None]


@pytest.mark.parametrize(
    ("policy", "setting"),
    [
        ({"source_ip": "hash"}, "XRAY_PRIVACY_SECRET"),
        ({"source_ip": "hash", "secret": b"short"}, "at least 16 characters"),
        ({"source_ip": "blur"}, "[privacy] source_ip"),
        ({"destination": "path"}, "[privacy] destination"),
        ({"ipv4_prefix": 40}, "[privacy] ipv4_prefix"),
    ],
)
def test_a_policy_that_cannot_work_names_the_setting(policy, setting):
    with pytest.raises(PrivacyError, match=setting.replace("[", r"\[").replace("]", r"\]")):
        RowPolicy(**policy)
