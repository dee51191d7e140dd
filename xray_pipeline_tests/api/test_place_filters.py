"""`country` and `asn` narrow the stats, the series, the log pages and the users list to the
sources placed there, and the stats list the top countries and networks with their remainder:
each checked against SQL over the stored tables, on rollup days and live days alike."""

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from xray_pipeline.api.main import create_app
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.rollups import ROLLUPS, rebuild_rollup
from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.privacy.geoip import GeoIP
from xray_pipeline.core.privacy.policy import RowPolicy, parse_ip
from xray_pipeline.core.synthetic.generate import GeneratorConfig, write_log
from xray_pipeline.core.synthetic.mmdb import write_synthetic_geoip

WINDOW = {"from": "2025-11-17T00:00:00Z", "to": "2025-11-19T00:00:00Z"}
PLACED = (
    "logs l LEFT JOIN ip_places p ON p.address = coalesce(host(l.src_ip), l.src_host) "
    "LEFT JOIN users u ON u.id = l.user_id"
)


@pytest.fixture(scope="module")
def data_url(db_url: str, tmp_path_factory) -> str:
    folder = Path(tmp_path_factory.mktemp("places"))
    geoip = GeoIP(*write_synthetic_geoip(folder))
    log = folder / "access.log"
    write_log(GeneratorConfig(lines=4_000, days=2, users=60, seed=3), log)
    with connect(db_url) as conn:
        ingest_files(
            conn, [log], timezone="UTC", batch_size=64 * 1024, policy=RowPolicy(geoip=geoip)
        )
        for day in (dt.date(2025, 11, 17), dt.date(2025, 11, 18)):
            for table in ROLLUPS:
                rebuild_rollup(conn, table, day, "UTC")
    return db_url


@pytest.fixture(scope="module")
def client(data_url: str):
    with TestClient(create_app(data_url)) as c:
        yield c


def sql(url: str, query: str, params: dict | None = None) -> list[tuple]:
    with connect(url) as conn:
        return conn.execute(query.format(rows=PLACED), params or {}).fetchall()


def busiest(url: str, column: str):
    return sql(
        url,
        f"SELECT p.{column} FROM {{rows}} WHERE p.{column} IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
    )[0][0]


@pytest.mark.parametrize("top", [3, 100])
def test_stats_list_the_top_countries_and_networks_with_the_rest(client, data_url, top):
    body = client.get("/api/logs/stats", params={**WINDOW, "top": top}).json()
    assert body["days_from_rollups"] == 2  # read from daily_user_ips
    for key, column in (("countries", "country"), ("networks", "asn")):
        truth = sql(
            data_url,
            f"SELECT p.{column}, count(*) FROM {{rows}} GROUP BY 1 ORDER BY 2 DESC, 1",
        )
        placed = [(k, n) for k, n in truth if k is not None]
        part = body[key]
        assert [(i[column], i["connections"]) for i in part["items"]] == placed[:top]
        assert part["other"] == sum(n for _, n in placed[top:])
        assert part["unknown"] == sum(n for k, n in truth if k is None)
        assert part["distinct"] == len(placed)
        assert (
            sum(i["connections"] for i in part["items"]) + part["other"] + part["unknown"]
            == body["connections"]
        )
    assert "xray-pipeline-synthetic" in body["geoip"]
    assert all(i["org"].startswith("Synthetic ") for i in body["networks"]["items"])


def test_stats_and_series_of_one_country(client, data_url):
    country = busiest(data_url, "country")
    body = client.get("/api/logs/stats", params={**WINDOW, "country": country.lower()}).json()
    [(connections, rejected, users)] = sql(
        data_url,
        "SELECT count(*), count(*) FILTER (WHERE l.status = 'rejected'), "
        "count(DISTINCT l.user_id) FROM {rows} WHERE p.country = %(c)s",
        {"c": country},
    )
    assert (body["connections"], body["rejected"], body["unique_users"]) == (
        connections,
        rejected,
        users,
    )
    assert [i["country"] for i in body["countries"]["items"]] == [country]
    for bucket in ("hour", "day"):  # hours from logs, whole days from daily_places
        series = client.get(
            "/api/timeseries", params={**WINDOW, "country": country, "bucket": bucket}
        ).json()
        expected = sql(
            data_url,
            f"SELECT date_trunc('{bucket}', l.ts, 'UTC'), count(*) FROM {{rows}} "
            "WHERE p.country = %(c)s GROUP BY 1 ORDER BY 1",
            {"c": country},
        )
        got = [(dt.datetime.fromisoformat(p["t"]), p["connections"]) for p in series["points"]]
        assert got == expected, bucket


def test_log_pages_of_one_network(client, data_url):
    asn = busiest(data_url, "asn")
    body = client.get("/api/logs", params={**WINDOW, "asn": asn, "limit": 500}).json()
    [(count,)] = sql(data_url, "SELECT count(*) FROM {rows} WHERE p.asn = %(a)s", {"a": asn})
    assert body["total"] == count and len(body["items"]) == min(count, 500)
    assert {i["asn"] for i in body["items"]} == {asn}
    assert all(i["country"] for i in body["items"])
    # a destination that is an address has its own place
    destinations = [i for i in body["items"] if parse_ip(i["dest_host"] or "")]
    assert destinations and all(i["dest_country"] for i in destinations)
    assert all(i["dest_country"] is None for i in body["items"] if i not in destinations)


def test_users_of_one_country_and_a_users_places(client, data_url):
    country = busiest(data_url, "country")
    users = client.get("/api/users", params={"country": country, "limit": 500}).json()
    expected = {
        r[0]
        for r in sql(
            data_url,
            "SELECT DISTINCT u.email FROM {rows} WHERE p.country = %(c)s AND u.email IS NOT NULL",
            {"c": country},
        )
    }
    assert {i["email"] for i in users["items"]} == expected and users["total"] == len(expected)
    email = sorted(expected)[0]
    detail = client.get(f"/api/users/{email}", params=WINDOW).json()
    truth = sql(
        data_url,
        "SELECT p.country, count(*) FROM {rows} WHERE u.email = %(e)s AND p.country IS NOT NULL "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
        {"e": email},
    )
    assert [(c["country"], c["connections"]) for c in detail["countries"]] == truth
    addresses = [ip for ip in detail["source_ips"] if parse_ip(ip["ip"])]
    assert addresses and all(ip["country"] and ip["asn"] for ip in addresses)
    assert all(ip["country"] is None for ip in detail["source_ips"] if not parse_ip(ip["ip"]))
    assert len(detail["networks"]) >= 1 and detail["networks"][0]["org"].startswith("Synthetic")


@pytest.mark.parametrize(
    ("params", "named"),
    [({"country": "Germany"}, "country"), ({"asn": -1}, "asn"), ({"asn": "AS13335"}, "asn")],
)
def test_a_bad_place_filter_is_refused_naming_it(client, params, named):
    response = client.get("/api/logs/stats", params={**WINDOW, **params})
    assert response.status_code == 422
    assert named in response.text
