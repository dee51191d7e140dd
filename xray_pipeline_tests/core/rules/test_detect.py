"""The abuse rules over rows: sliding windows by time, counting by address, prefix or ASN,
per-user limits, and the evidence of each breach."""

import datetime as dt

import polars as pl
import pytest

from xray_pipeline.core.rules.detect import (
    ROWS_SCHEMA,
    IpLimitRule,
    RejectedRule,
    TaggedRule,
    ip_limit_breaches,
    rejected_breaches,
    tagged_breaches,
)

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def rows(*items: tuple) -> pl.DataFrame:
    """(minute, user, source[, node, country, asn, outbound_tag, status])"""
    full = []
    for item in items:
        minute, user, source, *rest = item
        node, country, asn, tag, status = [*rest, *[None] * (5 - len(rest))]
        full.append((T0 + dt.timedelta(minutes=minute), user, source, node or "n1", country, asn,
                     tag or "direct", status or "accepted"))  # fmt: skip
    return pl.DataFrame(full, schema=ROWS_SCHEMA, orient="row")


def test_a_user_over_the_limit_across_nodes_with_the_evidence():
    batch = rows(
        (0, "sharer", "192.0.2.1", "n1", "DE", 64500),
        (1, "sharer", "198.51.100.1", "n2", "NL", 64501),
        (2, "sharer", "203.0.113.1", "n3", "FR", 64502),
        (3, "sharer", "2001:db8:1::1", "n1", "US", 64503),
        (3, "honest", "192.0.2.200", "n1", "DE", 64500),
    )
    [breach] = ip_limit_breaches(batch, IpLimitRule(limit=3, window_minutes=10))
    assert (breach.rule, breach.subject, breach.peak, breach.limit) == ("ip_limit", "sharer", 4, 3)
    assert breach.first == breach.last == T0 + dt.timedelta(minutes=3)
    evidence = {e["unit"]: e for e in breach.evidence}
    assert set(evidence) == {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8:1::/64"}
    assert evidence["198.51.100.0/24"]["nodes"] == ["n2"]
    assert evidence["198.51.100.0/24"]["country"] == "NL"
    assert evidence["198.51.100.0/24"]["sources"] == ["198.51.100.1"]


def test_the_window_slides():
    spread = rows(*[(15 * i, "u", f"192.0.{i}.1") for i in range(6)])  # one every 15 minutes
    assert ip_limit_breaches(spread, IpLimitRule(limit=1, window_minutes=10)) == []
    [breach] = ip_limit_breaches(spread, IpLimitRule(limit=1, window_minutes=20))
    assert breach.peak == 2 and breach.first == T0 + dt.timedelta(minutes=15)


@pytest.mark.parametrize(("count_by", "breached"), [("address", True), ("prefix", False)])
def test_a_phone_moving_inside_one_prefix_is_one_source(count_by, breached):
    moving = rows(*[(i, "u", f"192.0.2.{10 + i}") for i in range(5)])
    found = ip_limit_breaches(moving, IpLimitRule(limit=3, count_by=count_by))
    assert bool(found) is breached


def test_counting_by_asn_and_the_prefix_without_one():
    carrier = rows(*[(i, "u", f"10.{i}.0.1", "n1", "DE", 64500) for i in range(5)])
    assert ip_limit_breaches(carrier, IpLimitRule(limit=3, count_by="asn")) == []
    unplaced = rows(*[(i, "u", f"10.{i}.0.1") for i in range(5)])  # no ASN: by prefix
    [breach] = ip_limit_breaches(unplaced, IpLimitRule(limit=3, count_by="asn"))
    assert breach.peak == 5


def test_per_user_limits_and_what_is_not_an_address():
    batch = rows(*[(i, "family", f"192.0.{i}.1") for i in range(5)],
                 *[(i, "sock", "@xray.sock") for i in range(5)],
                 *[(i, "sock", "DNS") for i in range(5)])  # fmt: skip
    assert ip_limit_breaches(batch, IpLimitRule(limit=3), {"family": 5}) == []
    assert [b.subject for b in ip_limit_breaches(batch, IpLimitRule(limit=3))] == ["family"]


def test_hashed_and_masked_sources_count_as_they_are_stored():
    batch = rows(*[(i, "u", f"hash:{i:016x}") for i in range(4)],
                 (5, "v", "192.0.2.0/24"), (5, "v", "198.51.100.0/24"))  # fmt: skip
    [breach] = ip_limit_breaches(batch, IpLimitRule(limit=3))
    assert breach.subject == "u" and breach.peak == 4
    assert ip_limit_breaches(batch, IpLimitRule(limit=1))[1].subject == "v"


def test_tagged_traffic_over_the_limit():
    batch = rows(
        *[(i * 0.2, "seeder", "192.0.2.1", "n1", None, None, "TORRENT") for i in range(25)],
        *[(i * 10, "slow", "192.0.2.2", "n1", None, None, "TORRENT") for i in range(25)],
        *[(i * 0.1, "browser", "192.0.2.3") for i in range(50)],
    )
    [breach] = tagged_breaches(batch, TaggedRule(tags=("TORRENT",), limit=20, window_minutes=10))
    assert (breach.subject, breach.peak) == ("seeder", 25)
    assert breach.evidence[0]["unit"] == "TORRENT" and breach.evidence[0]["connections"] == 25


def test_a_storm_of_rejected_connections_from_one_source():
    batch = rows(
        *[(i * 0.01, None, "203.0.113.66", "n2", "CN", None, None, "rejected") for i in range(150)],
        *[(i, None, "198.51.100.9", "n1", None, None, None, "rejected") for i in range(50)],
    )
    [breach] = rejected_breaches(batch, RejectedRule(limit=100, window_minutes=5))
    assert (breach.subject, breach.peak, breach.evidence[0]["nodes"]) == (
        "203.0.113.66",
        150,
        ["n2"],
    )


def test_nothing_to_evaluate():
    empty = pl.DataFrame(schema=ROWS_SCHEMA)
    assert ip_limit_breaches(empty, IpLimitRule()) == []
    assert tagged_breaches(empty, TaggedRule()) == []
    assert rejected_breaches(empty, RejectedRule()) == []
