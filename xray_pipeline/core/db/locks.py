"""Advisory locks that serialize the writers of shared state in one database."""

import psycopg

LEDGER_LOCK_KEY = 0x786C6467  # "xldg"


def lock_ledger(conn: psycopg.Connection) -> None:
    """Hold the ledger's lock until the caller's transaction ends: a compaction (which merges
    ledger rows) and the writers that update ledger rows in place (forget's `erased`, a
    rebuild's status) take turns. Loads, which only add rows, never wait for it."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK_KEY,))
