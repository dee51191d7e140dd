"""iter_chunks: chunks of whole lines that put the byte range back together exactly."""

import io

from hypothesis import given
from hypothesis import strategies as st

from xray_pipeline.core.tail import iter_chunks

# lines of any length (empty, longer than a chunk), the last one with or without its LF
logs = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30).map(
    lambda lines: b"\n".join(lines)
) | st.binary(max_size=300)


@given(data=logs, size=st.integers(1, 64), partial_tail=st.booleans())
def test_chunks_are_whole_lines_that_add_up_to_the_file(data, size, partial_tail):
    chunks = list(iter_chunks(io.BytesIO(data), size, partial_tail=partial_tail))
    joined = b"".join(chunk for _, chunk in chunks)
    complete = data[: data.rfind(b"\n") + 1]
    assert joined == (data if partial_tail else complete)
    position = 0
    for offset, chunk in chunks:
        assert offset == position
        assert chunk
        position += len(chunk)
        # a chunk ends at a LF (but for a last line without one) and cuts no line it could
        # have left whole: it holds at most `size` bytes beyond its first line
        if not chunk.endswith(b"\n"):
            assert position == len(data) and partial_tail
        first_line_end = chunk.find(b"\n") + 1 or len(chunk)
        assert len(chunk) - first_line_end < size


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
