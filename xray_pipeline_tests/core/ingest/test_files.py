"""iter_chunks: chunks of whole lines that put the byte range back together exactly."""

import hashlib
import io

from hypothesis import given
from hypothesis import strategies as st

from xray_pipeline.core.ingest.files import identify, iter_chunks

# lines of any length (empty, longer than a chunk, runs of NUL bytes such as a truncation
# under a writer without O_APPEND leaves), the last one with or without its LF
nul_runs = st.integers(1, 120).map(lambda n: b"\0" * n)
pieces = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")) | nul_runs
logs = st.lists(st.lists(pieces, max_size=3).map(b"".join), max_size=30).map(
    b"\n".join
) | st.binary(max_size=300)


@given(data=logs, size=st.integers(1, 64), partial_tail=st.booleans())
def test_chunks_are_whole_lines_that_add_up_to_the_file(data, size, partial_tail):
    chunks = list(iter_chunks(io.BytesIO(data), size, partial_tail=partial_tail))
    joined = b"".join(chunk for _, chunk in chunks)
    complete = data.rfind(b"\n") + 1
    if partial_tail:
        assert joined == data
    else:  # the complete lines, and perhaps NUL bytes after them (they hold no line)
        assert data.startswith(joined) and len(joined) >= complete
        assert not joined[complete:].strip(b"\0")
    position = 0
    for offset, chunk in chunks:
        assert offset == position
        assert chunk
        position += len(chunk)
        # a chunk ends at a LF (but for a last line without one, or a run of NUL bytes that
        # filled a chunk) and cuts no line it could have left whole: it holds at most `size`
        # bytes beyond its first line
        if not chunk.endswith(b"\n"):
            assert (position == len(data) and partial_tail) or not chunk.strip(b"\0")
        first_line_end = chunk.find(b"\n") + 1 or len(chunk)
        assert len(chunk) - first_line_end < size
    # memory does not grow with a run of NUL bytes: no chunk is much longer than `size`
    # unless it holds a long line of other bytes
    longest_text_line = max((len(ln.lstrip(b"\0")) + 1 for ln in data.split(b"\n")), default=0)
    assert all(len(chunk) < 2 * size + longest_text_line for _, chunk in chunks)


@given(
    data=logs, size=st.integers(1, 64), bounds=st.tuples(st.integers(0, 300), st.integers(0, 300))
)
def test_chunks_of_a_range_start_and_stop_where_asked(data, size, bounds):
    start, end = sorted(bounds)
    # a planned range starts on a line start and ends after a LF (or at the end of the file)
    start = data.rfind(b"\n", 0, start) + 1 if start <= len(data) else len(data)
    end = min(end, len(data))
    end = max(start, data.rfind(b"\n", 0, end) + 1)
    chunks = list(iter_chunks(io.BytesIO(data), size, start=start, end=end, partial_tail=False))
    assert b"".join(chunk for _, chunk in chunks) == data[start:end]
    assert [offset for offset, _ in chunks] == [
        start + sum(len(c) for _, c in chunks[:i]) for i in range(len(chunks))
    ]


def test_identity_of_a_file_that_starts_with_nul_bytes(tmp_path):
    first = b"2025/01/01 00:00:00 from 198.51.100.7:1 accepted tcp:a.example:443\n"
    plain = tmp_path / "plain.log"
    plain.write_bytes(first + first)
    # no NUL bytes: the fingerprint is the first line's, as in the ledgers written before
    assert identify(plain).fingerprint == hashlib.blake2b(first, digest_size=8).hexdigest()

    def holed(name: str, run: int, *, sparse: bool) -> str:
        path = tmp_path / name
        with path.open("wb") as fh:
            if sparse:  # what a writer without O_APPEND leaves after a truncation
                fh.seek(run)
            else:  # the same bytes written out (a copy, a filesystem without holes)
                fh.write(b"\0" * run)
            fh.write(first)
        return identify(path).fingerprint

    big = 3 * 1024 * 1024 + 5  # past a read block
    assert holed("a", big, sparse=True) == holed("b", big, sparse=False)
    assert holed("c", 5000, sparse=True) == holed("d", 5000, sparse=False)
    assert holed("e", 5000, sparse=True) != holed("f", 5001, sparse=True)  # two truncations
    assert holed("g", 5000, sparse=True) != identify(plain).fingerprint
    only_nul = tmp_path / "only-nul.log"
    only_nul.write_bytes(b"\0" * 4096)
    assert identify(only_nul) is None  # no line yet
