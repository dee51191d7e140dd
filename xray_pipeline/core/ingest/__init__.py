"""From log bytes to rows, exactly once: file identity, planning, the ledger, loads, the offline
spool, rebuilds."""
