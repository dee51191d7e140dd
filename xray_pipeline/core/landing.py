"""The center's landing store: the byte ranges nodes ship, appended in order, fsynced.

Each source of a node (a log file there, by its identity) lands as one append-only file,
`ROOT/NODE/KEY.log`, with `KEY.json` beside it (the remote identity and path, and `base`: the
remote offset of its first byte). Landed files are ordinary log files to the pipeline: the
sensor and the tail run read them like local ones (their node is their folder's name), and
the ingest ledger keeps their loads exactly once. Landing itself is exactly once: a range is
appended only where the landed bytes end; one already landed is acknowledged again and
stored once; one that would leave a gap is refused with the offset expected.
"""

import datetime as dt
import fcntl
import hashlib
import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xray_pipeline.core.nodes import NodeStatus, check_name


class LandingError(Exception):
    """A range that cannot land: `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str, expected: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.expected = expected


@dataclass(frozen=True)
class LandedSource:
    """A source of a node at the center: remote bytes [base, end) are landed at `path`."""

    identity: str
    remote_path: str
    base: int
    end: int
    path: Path


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
        path = meta_path.with_suffix(".log")
        size = path.stat().st_size if path.exists() else 0
        found[meta["identity"]] = LandedSource(
            meta["identity"], meta["path"], meta["base"], meta["base"] + size, path
        )
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


def land(root: Path, node: str, identity: str, remote_path: str, start: int, data: bytes) -> int:
    """Append remote bytes [start, start + len(data)) of `identity` to the node's landed
    file, fsynced, and return where the landed bytes now end (the acknowledgement)."""
    if not identity or len(identity) > 512:
        raise LandingError(422, "identity must be 1 to 512 characters")
    if start < 0:
        raise LandingError(422, "start must be 0 or more")
    if data and data[-1:] not in (b"\n", b"\0"):
        # (or in a run of NUL bytes, which a truncation under a writer leaves: see tail.py)
        raise LandingError(422, "a range must end at the end of a line (LF)")
    folder = node_dir(root, node)
    folder.mkdir(parents=True, exist_ok=True)
    key = source_key(identity)
    path = folder / f"{key}.log"
    meta_path = folder / f"{key}.json"
    with open(path, "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one writer per source at a time
        if not meta_path.exists():
            _write_json(meta_path, {"identity": identity, "path": remote_path, "base": start})
        base = json.loads(meta_path.read_text())["base"]
        end = base + os.fstat(fh.fileno()).st_size
        stop = start + len(data)
        if stop <= end and start >= base:
            return end  # landed before: acknowledged again, stored once
        if start > end or start < base:
            raise LandingError(
                409, f"this source's landed bytes end at {end}: send from there", expected=end
            )
        fh.write(data[end - start :])  # the part not landed yet (a resend after a crash)
        fh.flush()
        os.fsync(fh.fileno())
        return stop


def record_contact(root: Path, node: str, version: str | None) -> None:
    """Note that a node called now (and its shipper's version)."""
    folder = node_dir(root, node)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat()
    _write_json(folder / "contact.json", {"at": now, "version": version})


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


def _write_json(path: Path, value: dict) -> None:
    """Write atomically: a crash leaves the old file or the new one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
