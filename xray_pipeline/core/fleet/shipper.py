"""The node side of a fleet: follow the local access logs and ship their complete lines to
the center, each byte range exactly once, in order, surviving outages on either side.

The shipper keeps no ledger of its own: at start it asks the center where each source's
landed bytes end, and goes on from there, so a restarted or reinstalled node neither resends
nor skips. What it reads while the center cannot take it goes to a bounded local spool of raw
ranges (read ahead, so that a rotation or a truncation during the outage loses nothing), which
is sent first, in order, once the center answers; when the spool is full, reading pauses. No
Dagster, no PostgreSQL, no Polars: a loop over file facts (ingest/files.py, ingest/plan.py) and
HTTP, on the standard library alone (it runs on the node's own python3; a test keeps it so).
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xray_pipeline.core.fleet.backlog import Backlog
from xray_pipeline.core.ingest.files import iter_chunks, open_log, watched_states
from xray_pipeline.core.ingest.plan import ordered_states, plan_reads

try:
    from importlib.metadata import PackageNotFoundError, version

    USER_AGENT = f"xray-pipeline-ship/{version('xray-pipeline')}"
except (ImportError, PackageNotFoundError):  # a source tree that is not installed
    USER_AGENT = "xray-pipeline-ship"

log = logging.getLogger("xray_pipeline.ship")


class CenterUnavailable(Exception):
    """The center did not take a request (no answer, a timeout, a 5xx): try again later."""


class CenterRefused(Exception):
    """The center refused a request for good (a 4xx): `status`, its reason, and for a 409
    where the source's landed bytes end (`expected`)."""

    def __init__(self, status: int, detail: str, expected: int | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.expected = expected


class Center:
    """The center's landing API, as node `node` with its token, over one kept-alive HTTP(S)
    connection (standard library only: the shipper runs on the node's own python3)."""

    def __init__(self, url: str, node: str, token: str, *, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"[ship] central {url!r} is not a center's address: give http(s)://HOST[:PORT]"
            )
        self.node = node
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._prefix = f"{parts.path}/api/ship/{urllib.parse.quote(node, safe='')}"
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self.port, timeout=self._timeout)
        return self._conn

    def _request(self, method: str, target: str, body: bytes | None, headers: dict) -> tuple:
        # a kept-alive connection the center closed meanwhile fails at once: one new try
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                conn = self._connection()
                conn.request(method, target, body=body, headers={**self._headers, **headers})
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError))
                if attempt == 1 and reused and stale:
                    continue
                raise CenterUnavailable(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _call(
        self, method: str, path: str, *, params: dict | None = None, body: bytes | None = None,
        headers: dict | None = None,
    ) -> dict | list:  # fmt: skip
        target = self._prefix + path + ("?" + urllib.parse.urlencode(params) if params else "")
        status, raw = self._request(method, target, body, headers or {})
        if status >= 500 or status == 429:
            raise CenterUnavailable(f"the center answered {status}")
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"detail": raw[:200].decode(errors="replace")}
        if status >= 400:
            detail = answer.get("detail") if isinstance(answer, dict) else answer
            expected = answer.get("expected") if isinstance(answer, dict) else None
            raise CenterRefused(status, str(detail), expected)
        return answer

    def landed(self) -> dict[str, int]:
        """Where each of the node's sources ends at the center."""
        return {s["identity"]: s["end"] for s in self._call("GET", "/sources")}

    def send(self, identity: str, path: str, start: int, data: bytes) -> int:
        """Land bytes [start, start + len(data)) of a source; returns the acknowledged end."""
        answer = self._call(
            "POST",
            "/ranges",
            params={"identity": identity, "start": start, "path": path},
            body=gzip.compress(data, compresslevel=1),  # cheap: the node is busy proxying
            headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
        )
        return int(answer["end"])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class ShipStats:
    """What one step did."""

    sent_bytes: int = 0
    sent_ranges: int = 0
    spooled_bytes: int = 0
    waiting_bytes: int = 0
    online: bool = True
    notes: list[str] = field(default_factory=list)


class Shipper:
    """Follows `files` (and their rotated copies) and ships their complete lines.

    While the center is away, each step still reads what is new into the spool (so that a
    rotation or truncation loses nothing); only the attempts to reach the center back off,
    from `interval` doubling up to `max_backoff`. Where each source was read to is kept in
    `state_file`, so that a shipper started while the center is away reads on from there."""

    def __init__(
        self,
        files: list[Path],
        center: Center,
        spool: Backlog,
        *,
        max_range_bytes: int = 1024 * 1024,
        state_file: Path | None = None,
        interval: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.files = files
        self.center = center
        self.spool = spool
        self.max_range_bytes = max_range_bytes
        self.state_file = state_file
        self.interval = interval
        self.max_backoff = max_backoff
        self.acked: dict[str, int] | None = None  # per identity, once the center said
        self.read: dict[str, int] = self._saved()  # per identity: read (sent or spooled)
        for entry in spool.entries():
            self.read[entry.identity] = max(self.read.get(entry.identity, 0), entry.end)
        self.paused = False
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.backoff = interval

    def _saved(self) -> dict[str, int]:
        try:
            return json.loads(self.state_file.read_text())["read"] if self.state_file else {}
        except (OSError, ValueError, KeyError):
            return {}

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"read": self.read}))
        tmp.replace(self.state_file)

    def _reachable(self) -> bool:
        return time.monotonic() >= self.retry_at

    def _unavailable(self, exc: CenterUnavailable, stats: ShipStats) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        stats.notes.append(f"center unavailable: {exc}")
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.max_backoff, self.backoff * 2)

    def _available(self) -> None:
        self.down_since = None
        self.backoff = self.interval

    def connect(self) -> None:
        """Ask the center where each source ends: the spool's ranges and those ends are where
        reading goes on (not the saved state: the center may have lost what it held)."""
        acked = self.center.landed()
        self.acked = acked
        read = dict(acked)
        for entry in self.spool.entries():
            read[entry.identity] = max(read.get(entry.identity, 0), entry.end)
        self.read = read

    def step(self) -> ShipStats:
        """One look at the files: drain the spool, then ship (or spool) what is new."""
        stats = ShipStats()
        online = self._reachable()
        if online and self.acked is None:
            try:
                self.connect()
            except CenterUnavailable as exc:
                self._unavailable(exc, stats)
                online = False
        if online:
            online = self._drain(stats)
        states = watched_states(self.files, with_complete_end=True)
        loaded = {k: [(0, end)] for k, end in self.read.items() if end > 0}
        states = ordered_states(self.files, states, set(loaded))
        tasks, notes = plan_reads(states, loaded, explicit=set(self.files))
        stats.notes.extend(notes)
        complete = {s.path: s.complete_end for s in states}
        self.paused = False
        for task in tasks:
            if task.compressed or task.end is None:
                continue
            end = min(task.end, complete.get(task.path) or 0)
            if end <= task.start:
                continue
            with open_log(task.path) as fh:
                for offset, data in iter_chunks(
                    fh, self.max_range_bytes, start=task.start, end=end, partial_tail=False
                ):
                    if online:
                        online = self._send(task.identity, str(task.path), offset, data, stats)
                        if online:
                            continue
                    if not self.spool.has_room(len(data)):
                        self.paused = True  # the spool is full: read no further for now
                        break
                    self.spool.put(task.identity, str(task.path), offset, data)
                    self.read[task.identity] = offset + len(data)
                    stats.spooled_bytes += len(data)
            if self.paused:
                break
        if online:
            self._available()
        self._save()
        stats.online = online
        stats.waiting_bytes = self.spool.size()
        return stats

    def _send(self, identity: str, path: str, start: int, data: bytes, stats: ShipStats) -> bool:
        """Send one range; False when the center cannot take it now (keep it for later)."""
        try:
            end = self.center.send(identity, path, start, data)
        except CenterUnavailable as exc:
            self._unavailable(exc, stats)
            return False
        except CenterRefused as exc:
            if exc.status == 409 and exc.expected is not None:
                # the center holds another end for this source: go on from there
                stats.notes.append(
                    f"{path}: the center expects offset {exc.expected}, not {start}; going on "
                    "from there"
                )
                self.read[identity] = exc.expected
                self.acked[identity] = exc.expected
                return True
            raise
        self.acked[identity] = end
        self.read[identity] = max(self.read.get(identity, 0), end)
        stats.sent_bytes += len(data)
        stats.sent_ranges += 1
        return True

    def _drain(self, stats: ShipStats) -> bool:
        """Send the spool's ranges in order; False when the center stopped taking them."""
        for entry in self.spool.entries():
            if not self._send(entry.identity, entry.path, entry.start, entry.data(), stats):
                return False
            self.spool.remove(entry)
        return True


def run_forever(
    shipper: Shipper, *, interval: float = 1.0, should_stop: Callable[[], bool] = lambda: False
) -> None:
    """Step every `interval` until `should_stop()`, saying when the center goes away (once per
    outage) and when it is back."""
    was_down = was_paused = False
    while not should_stop():
        began = time.monotonic()
        stats = shipper.step()
        for note in stats.notes:
            if not note.startswith("center unavailable"):
                log.warning(note)
        down = shipper.down_since is not None
        if down and not was_down:
            reason = next((n for n in stats.notes if n.startswith("center unavailable")), "")
            log.warning(
                "the center is unavailable (%s); reading on into the spool, retrying with backoff",
                reason[len("center unavailable: ") :],
            )
        if shipper.paused and not was_paused:
            log.warning("the spool is full (%d bytes): reading paused", stats.waiting_bytes)
        was_paused = shipper.paused
        if not down and was_down:
            log.info("the center answers again; the spool is drained")
        was_down = down
        if stats.sent_ranges:
            log.debug("sent %d ranges, %d bytes", stats.sent_ranges, stats.sent_bytes)
        _sleep(max(0.0, interval - (time.monotonic() - began)), should_stop)


def _sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not should_stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.2, left))
