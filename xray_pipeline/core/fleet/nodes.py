"""The fleet's node registry: names, hashed tokens, and what each node has shipped."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the shipper checks names with this module and never loads the driver
    import psycopg

NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TOKEN_PREFIX = "xrn_"


class NodeError(ValueError):
    """A node name or token that cannot be used, with what to do instead."""


def valid_name(name: str) -> bool:
    """Whether `name` may name a node (and a folder of the landing store)."""
    return bool(NAME.fullmatch(name)) and name not in {".", ".."}


def check_name(name: str) -> str:
    """The node name, or a NodeError saying what a name may hold."""
    if not valid_name(name):
        raise NodeError(
            f"node name {name!r} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.' "
            "(not '.' or '..' alone), for example de-fra-1"
        )
    return name


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def add_node(conn: psycopg.Connection, name: str) -> str:
    """Register `name`; returns its token (only its hash is kept: print it once)."""
    check_name(name)
    token = new_token()
    inserted = conn.execute(
        "INSERT INTO nodes (name, token_sha256) VALUES (%s, %s) "
        "ON CONFLICT (name) DO NOTHING RETURNING id",
        (name, token_hash(token)),
    ).fetchone()
    if inserted is None:
        raise NodeError(
            f"node {name!r} is already registered: `xray-pipeline nodes remove {name}` first "
            "to give it a new token"
        )
    conn.commit()
    return token


def remove_node(conn: psycopg.Connection, name: str) -> bool:
    """Unregister `name` (its token stops working; its rows stay); False when unknown."""
    removed = conn.execute("DELETE FROM nodes WHERE name = %s RETURNING id", (name,)).fetchone()
    conn.commit()
    return removed is not None


def node_of_token(conn: psycopg.Connection, token: str) -> str | None:
    """The name of the node that holds `token`, None when no node does."""
    row = conn.execute(
        "SELECT name FROM nodes WHERE token_sha256 = %s", (token_hash(token),)
    ).fetchone()
    return None if row is None else row[0]


@dataclass(frozen=True)
class NodeStatus:
    name: str
    created_at: dt.datetime
    newest_line: dt.datetime | None
    lines_today: int
    bytes_today: int
    loaded_by_path: dict[str, int]
    lines_loaded: int
    bytes_loaded: int

    def lag_seconds(self, now: dt.datetime) -> float | None:
        return None if self.newest_line is None else (now - self.newest_line).total_seconds()


def list_nodes(conn: psycopg.Connection, timezone: str) -> list[NodeStatus]:
    """Every registered node with its newest loaded line, what was loaded today (local day in
    `timezone`) and per file; its last contact and landed bytes are the landing store's
    (landing.last_contact, landing.waiting_bytes)."""
    from xray_pipeline.core.db.migrations import load_query

    rows = conn.execute(load_query("node_status"), {"tz": timezone}).fetchall()
    return [NodeStatus(*row) for row in rows]
