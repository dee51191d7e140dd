"""Planted abuse for the generator (`generate --sharers K`): K users who share their account
(more distinct sources than the default IP limit within minutes, over every node) and K users
whose traffic goes to a watched tag (more connections than the default tagged limit), with
the cases written down so that a test or a bench can score what the rules find.

The lines are of the modern Xray shape and merge into the generated log by time; their
sources fall in the generator's address range, so the synthetic databases place them.
"""

import datetime as dt
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

# over the default [rules]: more than 3 sources by prefix, more than 20 tagged connections,
# each within 10 minutes
SHARER_SOURCES = 6
SHARER_CONNECTIONS_EACH = 2
SHARER_MINUTES = 4
SEEDER_CONNECTIONS = 30
SEEDER_MINUTES = 5
WATCHED_TAG = "TORRENT"
PLANTED_INBOUND = "vless-reality"


@dataclass
class PlantedCase:
    """One planted case: the rule it breaks, its user (email), when, from where, on which
    nodes, how many connections."""

    rule: str
    user: str
    first: str
    last: str
    sources: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    connections: int = 0


def email_of(user: int) -> str:
    """The email the generator gives user number `user` (see generate.render)."""
    if user % 5 == 0:
        return str(user + 1)
    return f"Guest {user + 1}" if user % 23 == 7 else f"{user + 1}.user{user}"


def _v4(number: int) -> str:
    return ".".join(str((number >> shift) & 255) for shift in (24, 16, 8, 0))


def plant(
    *,
    sharers: int,
    users: int,
    start: dt.datetime,
    days: int,
    nodes: list[str] | None = None,
) -> tuple[pl.DataFrame, list[PlantedCase]]:
    """The planted lines (`when`, `line`, `node`, the truth fields) and their cases. Sharers
    and seeders are users spread over the popularity ranks; the cases over the span."""
    if sharers <= 0:
        return pl.DataFrame(), []
    if 2 * sharers > users:
        raise ValueError(f"--sharers {sharers}: at most half of --users ({users})")
    nodes = nodes or [""]
    step = users // (2 * sharers)
    span = dt.timedelta(days=days)
    rows, cases = [], []
    for i in range(sharers):
        for kind in ("ip_limit", "tagged"):
            user = 1 + (2 * i + (kind == "tagged")) * step
            index = 2 * i + (kind == "tagged")
            at = start + span * (index + 0.5) / (2 * sharers)
            if kind == "ip_limit":
                made = _sharer(user, at, nodes, i)
            else:
                made = _seeder(user, at, nodes[(user + i) % len(nodes)])
            rows += made
            cases.append(
                PlantedCase(
                    rule=kind,
                    user=email_of(user),
                    first=min(r["when"] for r in made).isoformat(),
                    last=max(r["when"] for r in made).isoformat(),
                    sources=sorted({r["src_ip"] for r in made}),
                    nodes=sorted({r["node"] for r in made if r["node"]}),
                    connections=len(made),
                )
            )
    frame = pl.DataFrame(rows).sort("when")
    return frame, cases


def _row(when: dt.datetime, user: int, ip: str, port: int, host: str, tag: str, node: str):
    text = when.strftime("%Y/%m/%d %H:%M:%S.%f")
    email = email_of(user)
    return {
        "when": when,
        "line": f"{text} from {ip}:{port} accepted tcp:{host}:443 [{PLANTED_INBOUND} >> {tag}] "
        f"email: {email}",
        "node": node,
        "ts": text.replace("/", "-").replace(" ", "T"),
        "src_network": None,
        "src_ip": ip,
        "src_port": port,
        "status": "accepted",
        "dest_network": "tcp",
        "dest_host": host,
        "dest_port": 443,
        "inbound_tag": PLANTED_INBOUND,
        "outbound_tag": tag,
        "email": email,
        "reason": None,
        "kind": "access",
    }


def _sharer(user: int, at: dt.datetime, nodes: list[str], i: int) -> list[dict]:
    """SHARER_SOURCES people on one account within SHARER_MINUTES: each from its own /24 (the
    generator's range, away from the users' own), over the nodes in turn."""
    rows = []
    for k in range(SHARER_SOURCES):
        ip = _sharer_ip(user, k, i)
        for c in range(SHARER_CONNECTIONS_EACH):
            offset = (k * SHARER_CONNECTIONS_EACH + c) * SHARER_MINUTES * 60
            when = at + dt.timedelta(seconds=offset / (SHARER_SOURCES * SHARER_CONNECTIONS_EACH))
            node = nodes[k % len(nodes)]
            port = 40_000 + k * 10 + c
            rows.append(_row(when, user, ip, port, f"www.shared{k}.com", "direct", node))
    return rows


def _sharer_ip(user: int, k: int, i: int) -> str:
    """The k-th source of the i-th sharer: a /24 of its own in the generator's range."""
    network = 16 * 2**24 + ((user * 7919 + (k + 3) * 1_000_003 + i * 65_537) % (200 * 2**24))
    return _v4((network & ~255) | (10 + k))


def _seeder(user: int, at: dt.datetime, node: str) -> list[dict]:
    """SEEDER_CONNECTIONS connections routed to WATCHED_TAG within SEEDER_MINUTES, from the
    user's own first address."""
    ip = _v4((user * 7919) % (200 * 2**24) + 16 * 2**24)
    every = dt.timedelta(seconds=SEEDER_MINUTES * 60 / SEEDER_CONNECTIONS)
    host = "tracker{}.example".format
    return [
        _row(at + c * every, user, ip, 50_000 + c, host(c % 3), WATCHED_TAG, node)
        for c in range(SEEDER_CONNECTIONS)
    ]


def write_cases(path: Path, cases: list[PlantedCase]) -> None:
    """The planted cases as JSON: what the rules must find, and nothing else."""
    path.write_text(json.dumps([asdict(c) for c in cases], indent=1) + "\n")


def plant_live(
    logs: list[Path],
    *,
    timezone: str,
    stop: threading.Event,
    every: float = 120.0,
    first_after: float = 60.0,
    users: int = 200,
) -> None:
    """For the demo: every `every` seconds until `stop` is set, append a case to the logs, as
    they happen, stamped now in `timezone`: in turn a sharer (SHARER_SOURCES sources, one every
    two seconds, over the logs in turn) and a seeder (SEEDER_CONNECTIONS connections to
    WATCHED_TAG, one every two seconds)."""
    import zoneinfo

    zone = zoneinfo.ZoneInfo(timezone)
    index = 0
    if stop.wait(first_after):
        return
    while True:
        user = 1 + (index * 37) % users
        if index % 2 == 0:
            for k in range(SHARER_SOURCES):
                ip = _sharer_ip(user, k, index)
                _append(logs[k % len(logs)], zone, user, ip, 40_000 + k, "direct")
                if stop.wait(2.0):
                    return
        else:
            ip = _v4((user * 7919) % (200 * 2**24) + 16 * 2**24)
            for c in range(SEEDER_CONNECTIONS):
                _append(logs[index % len(logs)], zone, user, ip, 50_000 + c, WATCHED_TAG)
                if stop.wait(2.0):
                    return
        index += 1
        if stop.wait(every):
            return


def _append(log: Path, zone, user: int, ip: str, port: int, tag: str) -> None:
    now = dt.datetime.now(zone).replace(tzinfo=None)
    row = _row(now, user, ip, port, f"www.shared{port % 7}.com", tag, "")
    with log.open("a") as fh:
        fh.write(row["line"] + "\n")
