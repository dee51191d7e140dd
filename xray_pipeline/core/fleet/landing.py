"""The center's landing store: the byte ranges nodes ship, appended in order, fsynced.

Each source of a node (a log file there, by its identity) lands as append-only segment
files, `ROOT/NODE/KEY.BASE.log` (BASE: the remote offset of the segment's first byte; a new
segment starts once one holds SEGMENT_BYTES), with `KEY.json` beside them (the remote identity
and path, and the remote offset where its landed bytes start). Landed segments are ordinary
log files to the pipeline: the sensor and the tail run read them like local ones (their node
is their folder's name), and the ingest ledger keeps their loads exactly once. Landing itself
is exactly once: a range is appended only where the landed bytes end; one already landed is
acknowledged again and stored once; one that would leave a gap is refused with the offset
expected. Retention (`prune_landed`) removes segments that are loaded and old, never a
source's newest: where its landed bytes end stays known.
"""

import datetime as dt
import fcntl
import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xray_pipeline.core.fleet.nodes import NodeStatus, check_name
from xray_pipeline.core.ingest.files import fsync_dir


class LandingError(Exception):
    """A range that cannot land: `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str, expected: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.expected = expected


SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class LandedSource:
    """A source of a node at the center: remote bytes up to `end` are landed, the newest of
    them in segment `path`, whose first byte is remote offset `base`."""

    identity: str
    remote_path: str
    base: int
    end: int
    path: Path


def segments(folder: Path, key: str) -> list[tuple[int, Path]]:
    """(base, path) of a source's landed segments, oldest first."""
    found = []
    for path in folder.glob(f"{key}.*.log"):
        base = path.name[len(key) + 1 : -len(".log")]
        if base.isdigit():
            found.append((int(base), path))
    return sorted(found)


def source_key(identity: str) -> str:
    """The file name stem of a remote source (its identity holds ':' and may hold anything)."""
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def node_dir(root: Path, node: str) -> Path:
    return root / check_name(node)


def landed_sources(root: Path, node: str) -> dict[str, LandedSource]:
    """What a node has landed, per remote identity."""
    found = {}
    folder = node_dir(root, node)
    for meta_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if meta_path.name == "contact.json":
            continue
        meta = json.loads(meta_path.read_text())
        parts = segments(folder, meta_path.stem)
        if not parts:
            continue
        base, path = parts[-1]
        end = base + path.stat().st_size
        found[meta["identity"]] = LandedSource(meta["identity"], meta["path"], base, end, path)
    return found


def landed_files(root: Path) -> list[tuple[Path, str]]:
    """(landed file, node) of every node: the sensor's and the tail run's extra sources."""
    if not root.is_dir():
        return []
    return [(path, path.parent.name) for path in sorted(root.glob("*/*.log"))]


def waiting_bytes(root: Path, node: str, loaded_by_path: dict[str, int]) -> int:
    """The bytes a node landed that the pipeline has not loaded yet."""
    folder = node_dir(root, node)
    waiting = 0
    for path in folder.glob("*.log") if folder.is_dir() else []:
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # removed by retention meanwhile
            continue
        waiting += max(0, size - loaded_by_path.get(str(path), 0))
    return waiting


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The range's bytes from a request body (gzip or deflate or none), at most `limit`: a
    body that inflates beyond it is refused before it is all inflated."""
    if encoding in (None, "", "identity"):
        data = body
    elif encoding in ("gzip", "deflate"):
        inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise LandingError(400, f"the body is not valid {encoding}: {exc}") from None
        if not inflater.eof and len(data) <= limit:
            raise LandingError(400, f"the {encoding} body is truncated")
    else:
        raise LandingError(415, f"Content-Encoding {encoding!r}: send gzip, deflate or none")
    if len(data) > limit:
        raise LandingError(413, f"the range inflates beyond the limit of {limit} bytes")
    return data


def land(
    root: Path,
    node: str,
    identity: str,
    remote_path: str,
    start: int,
    data: bytes,
    *,
    segment_bytes: int = SEGMENT_BYTES,
) -> int:
    """Append remote bytes [start, start + len(data)) of `identity` to the node's landed
    segments, fsynced, and return where the landed bytes now end (the acknowledgement)."""
    if not identity or len(identity) > 512:
        raise LandingError(422, "identity must be 1 to 512 characters")
    if start < 0:
        raise LandingError(422, "start must be 0 or more")
    if data and data[-1:] not in (b"\n", b"\0"):
        # (or in a run of NUL bytes, which a truncation under a writer leaves: see tail.py)
        raise LandingError(422, "a range must end at the end of a line (LF)")
    folder = node_dir(root, node)
    key = source_key(identity)
    meta_path = folder / f"{key}.json"
    if meta_path not in _tails:
        folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer per source at a time
        first, parts = _tail(meta_path, folder, key, identity, remote_path, start, segment_bytes)
        if parts:
            base, path = parts[-1]
            end = base + path.stat().st_size
        else:
            base, path, end = start, folder / f"{key}.{start}.log", start
        stop = start + len(data)
        if first <= start <= end and stop <= end:
            return end  # landed before: acknowledged again, stored once
        if start > end or start < first:
            raise LandingError(
                409, f"this source's landed bytes end at {end}: send from there", expected=end
            )
        if end - base >= segment_bytes:
            # a new segment: a range ends at a line end, so every segment holds whole lines
            path = folder / f"{key}.{end}.log"
        with open(path, "ab") as fh:
            fh.write(data[end - start :])  # the part not landed yet (a resend after a crash)
            fh.flush()
            os.fsync(fh.fileno())
        if not parts or path != parts[-1][1]:
            fsync_dir(folder)  # the new segment's name is durable too
            base = end if parts else start
        _tails[meta_path] = (first, base, path)
        return stop


# per source (its meta file): where its landed bytes start, and its last segment (base, path),
# so that a call finds them without listing the folder. Only land() makes a segment, under
# the source's lock, and only when the last one is full: a last segment that is not full
# is still the last, whichever process landed meanwhile.
_tails: dict[Path, tuple[int, int, Path]] = {}


def _tail(
    meta_path: Path, folder: Path, key: str, identity: str, remote_path: str, start: int,
    segment_bytes: int,
) -> tuple[int, list[tuple[int, Path]]]:  # fmt: skip
    """The source's first landed offset and its last segment (as a one-item list; empty for
    a new source), from the cache when that segment still exists and is not full."""
    cached = _tails.get(meta_path)
    if cached is not None:
        first, base, path = cached
        try:
            if path.stat().st_size < segment_bytes:
                return first, [(base, path)]
        except FileNotFoundError:
            pass
    if not meta_path.exists():
        # `first`: where the source's landed bytes start (a node may have read the file from
        # the middle); bytes before it were never landed
        _write_json(meta_path, {"identity": identity, "path": remote_path, "first": start})
    first = json.loads(meta_path.read_text())["first"]
    return first, segments(folder, key)[-1:]


def prune_landed(root: Path, loaded_by_path: dict[str, int], before: dt.datetime) -> list[Path]:
    """Remove the landed segments that are loaded to their end and last written before
    `before`, except each source's newest; returns the removed paths."""
    removed = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for meta_path in folder.glob("*.json"):
            if meta_path.name == "contact.json":
                continue
            for _, path in segments(folder, meta_path.stem)[:-1]:
                stat = path.stat()
                written = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
                if loaded_by_path.get(str(path), 0) >= stat.st_size and written < before:
                    path.unlink()
                    removed.append(path)
    return removed


# a node's last contact is written down at most this often (a node calls every second)
CONTACT_EVERY_S = 5.0
_noted: dict[tuple[Path, str], tuple[float, str | None]] = {}


def record_contact(root: Path, node: str, version: str | None) -> None:
    """Note that a node called now (and its shipper's version): at most every
    CONTACT_EVERY_S for the same version, and without an fsync (a crash loses a few seconds
    of "last contact", which the next call writes again)."""
    now = time.monotonic()
    noted = _noted.get((root, node))
    if noted is not None and noted[1] == version and now - noted[0] < CONTACT_EVERY_S:
        return
    folder = node_dir(root, node)
    folder.mkdir(parents=True, exist_ok=True)
    at = dt.datetime.now(dt.UTC).isoformat()
    _write_json(folder / "contact.json", {"at": at, "version": version}, durable=False)
    _noted[(root, node)] = (now, version)


def last_contact(root: Path, node: str) -> tuple[dt.datetime | None, str | None]:
    """When a node last called, and its shipper's version (None, None: never)."""
    try:
        contact = json.loads((node_dir(root, node) / "contact.json").read_text())
    except (OSError, ValueError):
        return None, None
    return dt.datetime.fromisoformat(contact["at"]), contact.get("version")


def silent_nodes(
    nodes: Iterable[NodeStatus], root: Path | None, now: dt.datetime, limit: dt.timedelta
) -> dict[str, float]:
    """The nodes whose last call (or registration, when they never called) is older than
    `limit`, with their silence in minutes."""
    silent = {}
    for node in nodes:
        contact = last_contact(root, node.name)[0] if root is not None else None
        since = now - (contact or node.created_at)
        if since > limit:
            silent[node.name] = round(since.total_seconds() / 60, 1)
    return silent


def _write_json(path: Path, value: dict, *, durable: bool = True) -> None:
    """Write atomically: a crash leaves the old file or the new one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    if durable:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    tmp.replace(path)
