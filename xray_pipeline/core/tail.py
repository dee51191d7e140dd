"""File identity, offsets, rotation and truncation, complete-line boundaries."""

import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FINGERPRINT_BYTES = 1024


def complete_prefix(data: bytes) -> bytes:
    """The part of `data` that ends with its last LF (a partial last line is left out)."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


def iter_chunks(
    fh: BinaryIO, size: int, *, start: int = 0, end: int | None = None, partial_tail: bool = True
) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, bytes) chunks of about `size` bytes from `start`, each ending at a LF.

    A line longer than `size` is yielded whole. At `end` (or EOF) a last line without its LF
    is yielded only when `partial_tail` is true (a file being written is read without it).
    """
    if start or fh.seekable():
        fh.seek(start)
    offset = start
    # One buffer for the whole file: each block is read in after the line the last one cut
    # off, and a chunk is one copy out of it. Reading into new bytes and joining them took
    # two fresh allocations a chunk, whose page faults cost more than the copies (measured:
    # 150 ms against 100 ms for 240 MB in 4 MB chunks).
    buf = bytearray(size + 64 * 1024)
    filled = 0  # the start of a line the last block cut off: it leads the next chunk
    while True:
        want = size if end is None else max(0, min(size, end - offset - filled))
        if filled + want > len(buf):  # a line longer than the buffer: room for one more block
            buf.extend(bytes(filled + want - len(buf)))
        with memoryview(buf) as view:
            got = fh.readinto(view[filled : filled + want]) if want > 0 else 0
            if not got:
                if filled and partial_tail:
                    yield offset, bytes(view[:filled])
                return
            total = filled + got
            cut = buf.rfind(b"\n", filled, total)
            if cut < 0:
                filled = total
                continue
            chunk = bytes(view[: cut + 1])
        filled = total - cut - 1
        buf[:filled] = buf[cut + 1 : total]
        yield offset, chunk
        offset += len(chunk)


@dataclass(frozen=True)
class FileIdentity:
    """Who a file is, independent of its name: device, inode, fingerprint of its first line."""

    device: int
    inode: int
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.device}:{self.inode}:{self.fingerprint}"


def open_log(path: Path) -> BinaryIO:
    """Open a log for reading; `.gz` files are decompressed transparently."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def identify(path: Path) -> FileIdentity | None:
    """The identity of the file at `path`, or None while its first line is incomplete.

    The fingerprint is a hash of the first line (up to 1 KiB), so a file renamed by a
    rotation keeps its identity and a new file created at the same path gets a new one.
    """
    st = os.stat(path)
    with open_log(path) as fh:
        head = fh.read(FINGERPRINT_BYTES)
    cut = head.find(b"\n")
    if cut < 0 and len(head) < FINGERPRINT_BYTES:
        return None
    first = head if cut < 0 else head[: cut + 1]
    digest = hashlib.blake2b(first, digest_size=8).hexdigest()
    return FileIdentity(st.st_dev, st.st_ino, digest)
