"""File identity, discovery, rotation and truncation, complete-line boundaries."""

import glob
import gzip
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FINGERPRINT_BYTES = 1024


def iter_chunks(
    fh: BinaryIO, size: int, *, start: int = 0, end: int | None = None, partial_tail: bool = True
) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, bytes) chunks of about `size` bytes from `start`, each ending at a LF.

    A line longer than `size` is yielded whole, but a run of NUL bytes that starts a chunk and
    fills it is a chunk of its own, without a LF. At `end` (or EOF) a last line without its LF
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
            if cut < 0 and total >= size and buf[0] == 0:
                # a run of NUL bytes (a truncation under a writer without O_APPEND leaves up
                # to the whole old file of them before the next line): a chunk of its own,
                # so that memory does not grow with it
                cut = total - len(buf[:total].lstrip(b"\0")) - 1
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
    rotation keeps its identity and a new file created at the same path gets a new one. NUL
    bytes before the first line are counted into it, not taken for the line (see below).
    """
    st = os.stat(path)
    with open_log(path) as fh:
        head = fh.read(FINGERPRINT_BYTES)
        hole = 0
        if head.startswith(b"\0"):
            hole = _skip_nul_run(fh, 0 if path.suffix == ".gz" else _first_data(path))
            head = fh.read(FINGERPRINT_BYTES)
    cut = head.find(b"\n")
    if cut < 0 and len(head) < FINGERPRINT_BYTES:
        return None
    first = head if cut < 0 else head[: cut + 1]
    # A file that starts with NUL bytes was truncated under a writer without O_APPEND (a shell
    # redirect and copytruncate): its first line is the one after them, and the length of the
    # run tells two such files apart (the NUL bytes alone would give them one fingerprint).
    # Without a run the fingerprint is the first line's, as it always was.
    digest = hashlib.blake2b(b"%d\0" % hole + first if hole else first, digest_size=8)
    return FileIdentity(st.st_dev, st.st_ino, digest.hexdigest())


_NUL_BLOCK = 1 << 20


def _first_data(path: Path) -> int:
    """Where the first data of a plain file starts: a sparse run of NUL bytes (a hole) is
    skipped, not read; 0 where the system cannot tell."""
    if not hasattr(os, "SEEK_DATA"):
        return 0
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    except OSError:  # ENXIO: a hole to the end, no data yet
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _skip_nul_run(fh: BinaryIO, start: int) -> int:
    """Read past the NUL bytes at the start of `fh`, from `start` (NUL bytes before it are
    known); their number (the stream is left at the first other byte)."""
    run = start
    fh.seek(run)
    while True:
        block = fh.read(_NUL_BLOCK)
        rest = block.lstrip(b"\0")
        run += len(block) - len(rest)
        if rest or len(block) < _NUL_BLOCK:
            fh.seek(run)
            return run


# --------------------------------------------------------------------------- discovery

COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst"})


@dataclass(frozen=True)
class FileState:
    """A file on disk as the planner sees it. `complete_end` is the offset past its last LF
    (None where not looked up: the planner then takes `size`)."""

    path: Path
    identity: FileIdentity
    size: int
    compressed: bool = False
    complete_end: int | None = None


def rotated_siblings(path: Path) -> list[Path]:
    """Plain rotated copies of `path` (access.log.1, access.log-20250101), never .gz."""
    siblings = []
    for candidate in path.parent.glob(glob.escape(path.name) + "[.-]*"):
        if candidate.suffix in COMPRESSED_SUFFIXES or not candidate.is_file():
            continue
        siblings.append(candidate)
    return sorted(siblings)


def gz_archives(path: Path) -> list[Path]:
    """logrotate's compressed copies of `path` (access.log.2.gz, access.log-20250101.gz)."""
    return sorted(path.parent.glob(glob.escape(path.name) + "[.-]*.gz"))


def expand_paths(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Files named by paths or globs, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        found.extend(Path(m) for m in matches) if matches else found.append(Path(pattern))
    return list(dict.fromkeys(found))


def unreadable_reason(path: Path) -> str | None:
    """Why `path`, which exists, cannot be read as a log, with the fix; None when it can be
    read or does not exist (a log that is not there yet is not an error)."""
    try:
        if path.is_dir():
            return f"{path} is a folder: name the log file itself ([parser] logfile, --logfile)"
        with open_log(path) as fh:
            fh.read(1)
    except FileNotFoundError:
        return None
    except PermissionError:
        return (
            f"{path}: permission denied. Xray creates its log with mode 0600: run the pipeline "
            "as the user Xray runs as, or give this user read access to the file and, for the "
            f"files that rotation creates, a default ACL on its folder (setfacl -d -m "
            f"u:{_user()}:r {path.parent})"
        )
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "<user>"


def file_state(path: Path, *, with_complete_end: bool = False) -> FileState | None:
    """The state of a readable file, or None when it does not exist, cannot be read (see
    unreadable_reason) or has no full line yet."""
    try:
        identity = identify(path)
        if identity is None:
            return None
        compressed = path.suffix == ".gz"
        size = -1 if compressed else path.stat().st_size
        end = complete_end(path, size) if with_complete_end and not compressed else None
    except OSError:  # gone, a folder, no permission, an I/O error: the callers say which
        return None
    return FileState(path, identity, size, compressed, end)


def watched_states(
    paths: list[Path], *, include_siblings: bool = True, with_complete_end: bool = False
) -> list[FileState]:
    """The states of the files and (unless compressed) their rotated siblings."""
    candidates: list[Path] = []
    for path in paths:
        candidates.append(path)
        if include_siblings and path.suffix != ".gz":
            candidates.extend(rotated_siblings(path))
    states = (file_state(p, with_complete_end=with_complete_end) for p in dict.fromkeys(candidates))
    return [s for s in states if s is not None]


def complete_end(path: Path, size: int) -> int:
    """The offset just past the last LF before `size` (0 when there is none)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return pos - step + cut + 1
            pos -= step
    return 0


def find_file(
    path: Path, identity: str, *, watched: Path | None = None, min_size: int = 0
) -> Path | None:
    """The file holding the bytes of `identity` (up to `min_size`): `path` itself, or a
    rotated sibling of it or of the `watched` live file (renamed since); else a copy with the
    same fingerprint (copytruncate's `.1`); else a `.gz` archive of it (logrotate's
    `compress` without `delaycompress` gzips the renamed file at once: the same bytes)."""
    own = file_state(path)  # the rule: the file is where it was planned
    if own is not None and own.identity.key == identity and own.size >= min_size:
        return own.path
    bases = list(dict.fromkeys(p for p in (path, watched) if p is not None))
    candidates = [c for base in bases for c in (base, *rotated_siblings(base))]
    states = [
        s
        for s in (file_state(p) for p in dict.fromkeys(candidates))
        if s is not None and s.size >= min_size
    ]
    fingerprint = identity.rsplit(":", 1)[-1]
    for state in states:
        if state.identity.key == identity:
            return state.path
    for state in states:
        if state.identity.fingerprint == fingerprint:
            return state.path
    for base in bases:
        for archive in gz_archives(base):
            state = file_state(archive)
            if state is not None and state.identity.fingerprint == fingerprint:
                return archive
    return None


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
