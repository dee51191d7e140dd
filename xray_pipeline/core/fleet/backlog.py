"""The shipper's backlog: raw ranges kept on the node while the center cannot take them, in order
and bounded."""

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BacklogEntry:
    """A range kept in the spool: `file` holds a JSON header line, then the bytes."""

    file: Path
    identity: str
    path: str
    start: int
    end: int

    def data(self) -> bytes:
        with self.file.open("rb") as fh:
            fh.readline()
            return fh.read()


class Backlog:
    """Raw ranges waiting for the center, in the order they were read; at most `max_bytes`.
    One file per range (a JSON header line, then the bytes), indexed in memory."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        for tmp in folder.glob("*.tmp"):  # a write a crash cut short
            tmp.unlink()
        self._entries: list[BacklogEntry] = []
        self._size = 0
        for file in sorted(folder.glob("*.range")):
            with file.open("rb") as fh:
                head = json.loads(fh.readline())
            self._entries.append(
                BacklogEntry(file, head["identity"], head["path"], head["start"], head["end"])
            )
            self._size += file.stat().st_size
        self._seq = int(self._entries[-1].file.stem) if self._entries else 0

    def entries(self) -> list[BacklogEntry]:
        return list(self._entries)

    def size(self) -> int:
        return self._size

    def has_room(self, size: int) -> bool:
        return self._size + size <= self.max_bytes

    def put(self, identity: str, path: str, start: int, data: bytes) -> None:
        self._seq += 1
        head = json.dumps(
            {"identity": identity, "path": path, "start": start, "end": start + len(data)}
        ).encode()
        target = self.folder / f"{self._seq:012d}.range"
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(head + b"\n" + data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(target)
        self._entries.append(BacklogEntry(target, identity, path, start, start + len(data)))
        self._size += len(head) + 1 + len(data)

    def remove(self, entry: BacklogEntry) -> None:
        size = entry.file.stat().st_size if entry.file.exists() else 0
        entry.file.unlink(missing_ok=True)
        self._entries.remove(entry)
        self._size -= size
