"""The fleet's node registry: names checked, tokens kept hashed, removal revokes."""

from pathlib import Path

import psycopg
import pytest

from xray_pipeline.core.fleet.nodes import (
    NodeError,
    add_node,
    check_name,
    list_nodes,
    node_of_token,
    remove_node,
)
from xray_pipeline.core.ingest.oneshot import ingest_files


@pytest.mark.parametrize("name", ["a/b", "..", ".", "", "x" * 65, "naïve", "a b", "a\\b"])
def test_names_outside_the_alphabet_are_refused_with_the_rule(name: str):
    with pytest.raises(NodeError, match="letters, digits"):
        check_name(name)


def test_the_database_refuses_such_a_name_too(conn: psycopg.Connection):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO nodes (name, token_sha256) VALUES ('../x', '\\x00')")


def test_a_token_is_shown_once_and_kept_hashed(conn: psycopg.Connection):
    token = add_node(conn, "de-fra-1")
    other = add_node(conn, "nl_ams.2")
    assert token != other and len(token) > 40
    stored = conn.execute("SELECT token_sha256 FROM nodes").fetchall()
    assert all(token.encode() not in bytes(row[0]) for row in stored)
    assert node_of_token(conn, token) == "de-fra-1"
    assert node_of_token(conn, other) == "nl_ams.2"
    assert node_of_token(conn, token + "x") is None
    with pytest.raises(NodeError, match="already registered"):
        add_node(conn, "de-fra-1")
    assert remove_node(conn, "de-fra-1")
    assert node_of_token(conn, token) is None  # revoked
    assert not remove_node(conn, "de-fra-1")


def test_the_list_counts_a_nodes_loaded_lines(conn: psycopg.Connection, tmp_path: Path):
    add_node(conn, "n1")
    add_node(conn, "idle")
    log = tmp_path / "access.log"
    log.write_text(
        "".join(
            f"2025/01/01 00:00:0{i} from 192.0.2.1:1 accepted tcp:a.example:443 email: u\n"
            for i in range(3)
        )
    )
    ingest_files(conn, [log], timezone="UTC", batch_size=1 << 20, node="n1")
    by_name = {n.name: n for n in list_nodes(conn, "UTC")}
    assert by_name["n1"].lines_today == 3
    assert by_name["n1"].newest_line.isoformat() == "2025-01-01T00:00:02+00:00"
    assert by_name["idle"].lines_today == 0 and by_name["idle"].newest_line is None
