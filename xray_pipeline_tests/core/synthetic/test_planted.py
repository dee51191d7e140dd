"""`generate --sharers`: the planted cases of a three-node fleet are all found, with their
evidence, and nobody else is, on the default mix under the default rules."""

import datetime as dt
import json
from pathlib import Path

import polars as pl

from xray_pipeline.core.ingest.oneshot import ingest_files
from xray_pipeline.core.privacy.policy import RowPolicy, open_geoip
from xray_pipeline.core.rules.evaluate import RulesConfig, evaluate_loaded, evaluate_range
from xray_pipeline.core.synthetic.generate import GeneratorConfig, node_path, write_log
from xray_pipeline.core.synthetic.mmdb import write_synthetic_geoip
from xray_pipeline.core.synthetic.planted import SHARER_SOURCES, plant, write_cases
from xray_pipeline_tests.conftest import run_cli

START = dt.datetime(2025, 11, 17)


def test_the_generator_plants_cases_over_the_nodes_and_writes_them_down(tmp_path: Path):
    out = tmp_path / "access.log"
    done = run_cli("generate", "-o", str(out), "-n", "5000", "--users", "100", "--sharers", "2",
                   "--nodes", "3", "--truth", str(tmp_path / "truth.jsonl"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    cases = json.loads((tmp_path / "truth.planted.json").read_text())
    assert [c["rule"] for c in cases] == ["ip_limit", "tagged", "ip_limit", "tagged"]
    sharer = cases[0]
    assert len(sharer["sources"]) == SHARER_SOURCES and sharer["nodes"] == ["n1", "n2", "n3"]
    logs = {n: node_path(out, n).read_text() for n in ("n1", "n2", "n3")}
    for source in sharer["sources"]:  # each planted line is in its node's log, with its truth
        assert sum(f"from {source}:" in text for text in logs.values()) == 1
    truth = pl.concat(
        [pl.read_ndjson(node_path(tmp_path / "truth.jsonl", n)) for n in ("n1", "n2", "n3")]
    )
    assert truth.height == 5000 + sum(c["connections"] for c in cases)
    too_many = run_cli("generate", "-o", str(out), "-n", "10", "--users", "3", "--sharers", "2")
    assert too_many.returncode == 2 and "at most half of --users" in too_many.stderr


def test_planted_cases_are_found_with_their_evidence_and_no_one_else(conn, tmp_path: Path):
    country_db, asn_db = write_synthetic_geoip(tmp_path)
    policy = RowPolicy(geoip=open_geoip(str(country_db), str(asn_db)))
    cfg = GeneratorConfig(lines=60_000, days=1, start=START, users=300)
    names = ["n1", "n2", "n3"]
    planted, cases = plant(sharers=4, users=cfg.users, start=START, days=1, nodes=names)
    out = tmp_path / "access.log"
    write_log(cfg, out, planted=planted, nodes=3)
    write_cases(tmp_path / "cases.json", cases)
    for name in names:
        ingest_files(conn, [node_path(out, name)], timezone="UTC", batch_size=1 << 20,
                     node=name, policy=policy)  # fmt: skip
    lo = dt.datetime.combine(START.date(), dt.time(), dt.UTC)
    result = evaluate_range(conn, lo, lo + dt.timedelta(days=1), RulesConfig())
    assert result.rows > 0
    found = conn.execute(
        'SELECT rule, subject, evidence, peak, "limit" FROM incidents ORDER BY opened_at'
    ).fetchall()
    expected = {(c.rule, c.user) for c in cases}
    assert {(rule, subject) for rule, subject, *_ in found} == expected  # precision and recall
    assert len(found) == len(cases)  # one incident each
    by_case = {(rule, subject): (evidence, peak) for rule, subject, evidence, peak, _ in found}
    for case in cases:
        evidence, peak = by_case[case.rule, case.user]
        if case.rule == "ip_limit":
            units = {u["unit"] for u in evidence}
            prefixes = {s.rsplit(".", 1)[0] + ".0/24" for s in case.sources}
            assert prefixes <= units and peak >= SHARER_SOURCES
            seen = {n for u in evidence for n in u["nodes"]}
            assert set(case.nodes) <= seen
            assert all(u["country"] and u["asn"] for u in evidence if u["unit"] in prefixes)
        else:
            assert [u["unit"] for u in evidence] == ["TORRENT"]
            assert peak == case.connections


def test_an_import_judged_in_steps_finds_what_one_evaluation_finds(conn, tmp_path: Path):
    """A first import is judged in steps of about `rows_at_once` rows (what is read at once
    follows a step, not the import): the same cases are found, and no one else."""
    cfg = GeneratorConfig(lines=20_000, days=2, start=START, users=200)
    planted, cases = plant(sharers=3, users=cfg.users, start=START, days=2, nodes=["n1"])
    out = tmp_path / "access.log"
    write_log(cfg, out, planted=planted)
    stats = ingest_files(conn, [out], timezone="UTC", batch_size=1 << 20)
    stepped = evaluate_loaded(conn, [stats], RulesConfig(), rows_at_once=2_000)
    assert stepped.judged == stats.access_rows  # every row judged once, over 10 steps or so
    found = {r for r in conn.execute("SELECT rule, subject FROM incidents")}
    assert found == {(c.rule, c.user) for c in cases}
