"""The parser against the spec: every shape, every line accounted for, never a crash."""

import json
import re
import string
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from xray_pipeline.core import parse as P
from xray_pipeline.core.parse import parse_chunk, split_lines
from xray_pipeline.core.schema import CANONICAL_FIELDS
from xray_pipeline.core.synthetic.generate import TRUTH_FIELDS, GeneratorConfig, generate

DATA = Path(__file__).parent / "data"
SPEC_EXAMPLES = [json.loads(line) for line in (DATA / "spec_examples.jsonl").open()]


def parse_one(line: str, **kwargs) -> dict:
    parsed = parse_chunk((line + "\n").encode(), **kwargs)
    assert parsed.line_count == 1
    return parsed.lines.drop("line_no", "byte_offset").to_dicts()[0]


def frames_total(parsed) -> int:
    return parsed.access.height + parsed.dns.height + parsed.rejects.height


@pytest.mark.parametrize("case", SPEC_EXAMPLES, ids=[c["name"][:40] for c in SPEC_EXAMPLES])
def test_spec_examples(case):
    assert parse_one(case["line"]) == case["expected"]


N = None
MORE_SHAPES = [
    # line, expected subset
    (
        "2018/02/03 04:05:06 203.0.113.61:40522 accepted tcp:mail.example.org:993 ",
        {
            "ts": "2018-02-03T04:05:06",
            "src_ip": "203.0.113.61",
            "dest_port": 993,
            "outbound_tag": N,
            "email": N,
            "kind": "access",
        },
    ),
    (
        "2017/12/01 10:11:12 198.51.100.77:28113 rejected  Proxy|VMess|Encoding: invalid user",
        {"status": "rejected", "reason": "Proxy|VMess|Encoding: invalid user", "dest_host": N},
    ),
    (
        "2017/12/01 10:11:12 198.51.100.77:28113 rejected proxy/trojan: not trojan protocol",
        {"status": "rejected", "reason": "proxy/trojan: not trojan protocol"},
    ),
    (
        "2017/08/09 12:00:01 192.0.2.5:14022 accepted //www.example.com:8443 ",
        {"dest_network": N, "dest_host": "www.example.com", "dest_port": 8443},
    ),
    (
        "2020/06/07 08:09:10 tcp:192.0.2.7:13001 accepted tcp:git.example.org:443 [proxy-x] ",
        {"src_network": "tcp", "outbound_tag": "proxy-x", "inbound_tag": N},
    ),
    (
        "2026/03/02 10:00:07.554120 from 192.0.2.5:60011 accepted "
        "http://intranet.example.org:8080/status?verbose=1 [http-in -> freedom]",
        {"dest_host": "intranet.example.org", "dest_port": 8080, "inbound_tag": "http-in"},
    ),
    (
        "2026/03/02 10:00:07 from 192.0.2.5:60011 accepted http://static.example.org/app.js?v=3",
        {"dest_host": "static.example.org", "dest_port": N, "dest_network": N},
    ),
    (
        "2024/06/01 12:00:05 DoH accepted https://dns.example.net/dns-query [local]",
        {
            "src_ip": "DoH",
            "src_port": N,
            "dest_host": "dns.example.net",
            "dest_port": N,
            "outbound_tag": "local",
        },
    ),
    (
        "2025/02/06 07:08:09.101112 from [Masked IPv4]:0 accepted udp:[Masked IPv4]:53 "
        "[edge-in -> freedom] email: dave",
        {"src_ip": "Masked IPv4", "src_port": 0, "dest_host": "Masked IPv4", "dest_port": 53},
    ),
    (
        "2025/02/06 07:08:09.101112 from 203.*.*.*:31090 accepted tcp:x.example:443",
        {"src_ip": "203.*.*.*", "src_port": 31090},
    ),
    (
        "2025/03/01 00:00:02.123456 from 0.0.0.0:0 accepted tcp:www.example.net:443 [freedom] "
        "email: erin",
        {"src_ip": "0.0.0.0", "src_port": 0, "outbound_tag": "freedom", "email": "erin"},
    ),
    (
        "2021/01/01 00:00:00 @ accepted tcp:x.example:80",
        {"src_ip": "@", "src_port": N, "kind": "access"},
    ),
    (
        "tcp:192.0.2.8:21500 rejected  proxy/trojan: not trojan protocol",
        {
            "ts": N,
            "src_network": "tcp",
            "kind": "access",
            "reason": "proxy/trojan: not trojan protocol",
        },
    ),
    (
        "2025/01/05 07:08:09 from 192.0.2.50:0 accepted udp:198.51.100.53:53 [grpc-in >> v4-out] "
        "email: frank      2025/01/05 07:08:09 from 192.0.2.50:0 accepted tcp:video.example.com:443",
        {"email": "frank", "dest_host": "198.51.100.53", "inbound_tag": "grpc-in"},
    ),
    (
        "2025/03/05 21:14:02 from 198.51.100.4:5555 accepted tcp:a.example:443 "
        "[VLESS TCP REALITY >> direct -> x] email: 1.bob",
        {"inbound_tag": "VLESS TCP REALITY", "outbound_tag": "direct -> x"},
    ),
    (
        "2025/03/05 21:14:02 from 198.51.100.4:5555 accepted tcp:a.example:443 "
        "[inbound-127.0.0.1:443 -> блок] email: пользователь",
        {"inbound_tag": "inbound-127.0.0.1:443", "outbound_tag": "блок", "email": "пользователь"},
    ),
    (
        "Wed Mar 05 21:14:02 2025 daemon.info xray[3120]: 2025/03/05 21:14:02 from "
        "198.51.100.4:5555 accepted tcp:a.example:443",
        {"ts": "2025-03-05T21:14:02", "src_ip": "198.51.100.4"},
    ),
    (
        "xray-node-1  | 2025/03/05 21:14:02.000001 from 198.51.100.4:5555 accepted tcp:a.example:443",
        {"ts": "2025-03-05T21:14:02.000001"},
    ),
    (
        "2024-06-01T12:00:05.412 app[3e8f91c2] ams [info] 2024/06/01 12:00:05 from 192.0.2.1:1 "
        "accepted tcp:a.example:443",
        {"ts": "2024-06-01T12:00:05"},
    ),
    (
        "2022/08/12 13:14:15 UDP:192.0.2.53:53 cache HIT: img.example.com -> [198.51.100.20, "
        "198.51.100.21]",
        {"kind": "dns", "dest_host": "img.example.com", "reason": N, "status": N},
    ),
    (
        "2024/09/09 09:09:09 DOH//dns.example.net got answer: nx.example.org -> [] 5.000312s "
        "<context deadline exceeded>",
        {"kind": "dns", "dest_host": "nx.example.org", "reason": "context deadline exceeded"},
    ),
    (
        "2024/09/09 09:09:09 localhost got answer: truncated.example.org -> [192.0.2",
        {"kind": "dns", "dest_host": "truncated.example.org"},
    ),
    # what a real V2Ray 4.34 wrote (tests/cli/test_v2ray.py makes these): the email runs to the
    # end of the line, spaces included, trailing whitespace trimmed
    (
        "2026/12/07 15:35:42 127.0.0.1:40586 accepted tcp:127.0.0.1:43001 [direct] email: Carol Smith",
        {"email": "Carol Smith", "outbound_tag": "direct", "inbound_tag": N, "dest_port": 43001},
    ),
    (
        "2026/12/07 15:35:42 127.0.0.1:40586 accepted tcp:127.0.0.1:43001 [direct] email: Carol  Smith \t ",
        {"email": "Carol  Smith"},
    ),
    (
        "2025/01/05 07:08:09 192.0.2.50:1 accepted tcp:a.example:443 email:Guest 7 ",
        {"email": "Guest 7"},
    ),
    (
        "2026/12/07 15:35:43 tcp:127.0.0.1:40590 accepted tcp:127.0.0.1:43001 [direct] email: bob+vpn@example.org",
        {"src_network": "tcp", "src_port": 40590, "email": "bob+vpn@example.org"},
    ),
    (
        "2026/12/07 15:35:43 127.0.0.1:40598 rejected  v2ray.com/core/proxy/vmess/encoding: failed to drain "
        "connection DrainSize = 900 24 0 > v2ray.com/core/proxy/vmess/encoding: invalid user > "
        "v2ray.com/core/proxy/vmess: Not Found",
        {
            "status": "rejected",
            "email": N,
            "reason": "v2ray.com/core/proxy/vmess/encoding: failed to drain "
            "connection DrainSize = 900 24 0 > v2ray.com/core/proxy/vmess/encoding: invalid user > "
            "v2ray.com/core/proxy/vmess: Not Found",
        },
    ),
    (
        "2026/12/07 15:35:43 tcp:127.0.0.1:60164 rejected  v2ray.com/core/proxy/socks: unknown Socks version: 71",
        {
            "status": "rejected",
            "src_network": "tcp",
            "reason": "v2ray.com/core/proxy/socks: unknown Socks version: 71",
        },
    ),
    (
        "2025/01/05 07:08:09 from 192.0.2.5:1 rejected  bad request email: Dan Brown",
        {"email": "Dan Brown"},
    ),
    (
        "2026/12/07 15:36:28 127.0.0.1:52930 accepted http://127.0.0.1:43893/page?q=4 [direct]",
        {"dest_host": "127.0.0.1", "dest_port": 43893, "outbound_tag": "direct"},
    ),
    (
        "2026/12/07 15:36:28 127.0.0.1:52946 accepted //127.0.0.1:43893 [direct]",
        {"dest_host": "127.0.0.1", "dest_port": 43893, "outbound_tag": "direct"},
    ),
    # two records glued on one line: the second does not leak into the first's email
    (
        "2025/01/05 07:08:09 from 192.0.2.50:0 accepted udp:198.51.100.53:53 [grpc-in >> v4-out] "
        "email: Frank Lee      2025/01/05 07:08:09 from 192.0.2.50:0 accepted tcp:video.example.com:443 "
        "[grpc-in >> v4-out] email: frank",
        {"email": "Frank Lee", "dest_host": "198.51.100.53"},
    ),
    ("Xray 25.3.6 (Xray, Penetrates Everything.) Custom (go1.24.1 linux/arm64)", {"kind": "other"}),
    (" 2024-12-02 03:04:05 ERROR: remote recv: Connection reset by peer", {"kind": "other"}),
    ("2025/06/30 22:41:09 connection accepted by server", {"kind": "other", "ts": N}),
    (
        "2024/07/08 09:10:11 [Info] app/dns: UDP:192.0.2.53:53 got answer: static.example.com. "
        "TypeA -> [198.51.100.60] 51.730112ms",
        {"kind": "other", "ts": N, "dest_host": N},
    ),
]


@pytest.mark.parametrize(("line", "expected"), MORE_SHAPES)
def test_more_shapes(line, expected):
    got = parse_one(line)
    assert {k: got[k] for k in expected} == expected


def test_dns_frame_fields():
    data = (
        "2026/01/12 06:12:40.218734 DOHL//dns.example.net got answer: cdn.example.org. -> "
        "[192.0.2.80, 2001:db8:cafe::80] 912.4µs\n"
        "2024/09/09 09:09:09 DOH//dns.example.net got answer: nx.example.org -> [] 1m2.5s "
        "<context deadline exceeded>\n"
        "2022/08/12 13:14:15 UDP:192.0.2.53:53 cache OPTIMISTE: img.example.com -> [198.51.100.20]\n"
    ).encode()
    dns = parse_chunk(data).dns
    assert dns["server"].to_list() == [
        "DOHL//dns.example.net",
        "DOH//dns.example.net",
        "UDP:192.0.2.53:53",
    ]
    assert dns["dns_status"].to_list() == ["got answer", "got answer", "cache OPTIMISTE"]
    assert dns["domain"].to_list() == ["cdn.example.org", "nx.example.org", "img.example.com"]
    assert dns["answers"].to_list() == [["192.0.2.80", "2001:db8:cafe::80"], [], ["198.51.100.20"]]
    micros = [None if d is None else d.total_seconds() * 1e6 for d in dns["elapsed"].to_list()]
    assert micros == [pytest.approx(912), pytest.approx(62_500_000), None]
    assert dns["error"].to_list() == [None, "context deadline exceeded", None]


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("38.204117ms", 38_204),
        ("912.4µs", 912),
        ("850us", 850),
        ("1500ns", 2),
        ("1.2s", 1_200_000),
        ("0s", 0),
        ("1m2.5s", 62_500_000),
        ("2h3m4s", 7_384_000_000),
        ("1h", 3_600_000_000),
        ("5m", 300_000_000),
        ("", None),
        ("12", None),
        ("ms", None),
        ("1m5ms", None),
        ("1.2.3s", None),
    ],
)
def test_go_durations(text, micros):
    got = pl.select(P.go_duration(pl.lit(text, pl.String)).alias("d")).item()
    assert (None if got is None else round(got.total_seconds() * 1e6)) == micros


def test_every_line_lands_in_exactly_one_frame_with_reason_codes():
    data = (
        b"2025/01/01 00:00:00 from 1.2.3.4:1 accepted tcp:a.b:1 [t]\r\n"
        b"\x00\x00\x002025/01/01 00:00:01 from 1.2.3.4:1 accepted tcp:\xff\xfe.b:1\n"
        b"\n   \n"
        b"2025/01/01 00:00:02 [Warning] something\n"
        b"tcp:192.0.2.8:21500 rejected  proxy/trojan: not trojan protocol\n"
        b"2025/02/30 00:00:02 from 1.2.3.4:1 accepted tcp:a.b:1\n"
        b"banner\n"
    )
    parsed = parse_chunk(data)
    assert parsed.line_count == 8
    assert frames_total(parsed) == 8
    numbers = sorted(
        parsed.access["line_no"].to_list()
        + parsed.dns["line_no"].to_list()
        + parsed.rejects["line_no"].to_list()
    )
    assert numbers == list(range(1, 9))
    assert parsed.access["outbound_tag"].to_list() == ["t", None]
    assert parsed.access["dest_host"][1] == "\ufffd\ufffd.b"  # invalid UTF-8 replaced
    reasons = dict(zip(parsed.rejects["line_no"], parsed.rejects["reason"], strict=True))
    assert reasons == {
        3: "empty",
        4: "empty",
        5: "error_log",
        6: "no_timestamp",
        7: "bad_timestamp",
        8: "not_a_record",
    }
    assert parsed.rejects.filter(pl.col("line_no") == 8)["raw"][0] == "banner"
    assert parsed.access["byte_offset"].to_list() == [0, data.index(b"\x00")]


def test_offsets_point_at_line_starts():
    data = b"a\nbb\r\n\nccc"
    lines = split_lines(data, base_offset=100)
    assert lines["byte_offset"].to_list() == [100, 102, 106, 107]
    assert lines["text"].to_list() == ["a", "bb", "", "ccc"]
    assert parse_chunk(data, base_offset=100).end_offset == 110


def reference_lines(data: bytes) -> tuple[list[str], list[int]]:
    """split_lines by hand: LF ends a line, one CR before it goes, NULs go, bad UTF-8 is
    replaced; offsets are the raw bytes' line starts."""
    raw = data.split(b"\n") if data else []
    if data.endswith(b"\n"):
        raw.pop()
    texts, offsets, pos = [], [], 0
    for piece in raw:
        offsets.append(pos)
        pos += len(piece) + 1
        text = piece.decode("utf-8", errors="replace").removesuffix("\r")
        texts.append(text.replace("\x00", ""))
    return texts, offsets


line_bytes = st.lists(
    st.sampled_from(
        [
            b"a",
            b" ",
            b"\r",
            b"\n",
            b"\x00",
            b"\x1f",
            b"\xef\xbb\xbf",
            b"\xff",
            "é".encode(),
            b'"',
            b",",
        ]
    ),
    max_size=60,
).map(b"".join)


@pytest.mark.parametrize("small_chunk", [P.SMALL_CHUNK, 0], ids=["small", "large"])
@pytest.mark.slow  # hundreds of generated cases
@settings(max_examples=400, deadline=None)
@given(data=st.one_of(line_bytes, st.binary(max_size=200)))
def test_split_lines_matches_a_plain_split(data, small_chunk):
    # a small chunk is split by str.split; a large one, if valid UTF-8, by the CSV reader,
    # else by str.split in slices: all must agree with the plain definition, CRs, NULs,
    # quotes and byte-order marks included (0 makes every chunk a large one)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(P, "SMALL_CHUNK", small_chunk)
        lines = split_lines(data, base_offset=7)
    texts, offsets = reference_lines(data)
    assert lines["text"].to_list() == texts
    assert lines["byte_offset"].to_list() == [o + 7 for o in offsets]
    assert lines["line_no"].to_list() == list(range(1, len(texts) + 1))


def test_empty_chunk():
    parsed = parse_chunk(b"")
    assert parsed.line_count == 0
    assert frames_total(parsed) == 0
    assert parsed.lines.columns[:2] == ["line_no", "byte_offset"]


def test_very_long_line():
    url = "http://big.example.org/" + "a" * 1_000_000
    line = f"2025/01/01 00:00:00 from 1.2.3.4:1 accepted {url} [in -> out] email: u"
    got = parse_one(line)
    assert got["dest_host"] == "big.example.org"
    assert got["email"] == "u"
    junk = parse_chunk(b"x" * 1_000_000 + b"\n")
    assert junk.rejects.height == 1


def test_timestamp_zone_and_microseconds():
    line = b"2025/03/14 09:26:53.589793 from 1.2.3.4:1 accepted tcp:a.b:1 [t] email: u\n"
    ts = parse_chunk(line, timezone="Asia/Shanghai").access["ts"][0]
    assert str(ts.tzinfo) == "Asia/Shanghai"
    assert ts.isoformat() == "2025-03-14T09:26:53.589793+08:00"
    nine = parse_chunk(b"2025/03/14 09:26:53.123456789 DNS accepted udp:1.1.1.1:53\n")
    assert nine.access["ts"][0].microsecond == 123456
    assert nine.lines["ts"][0] == "2025-03-14T09:26:53.123456789"


def test_dst_gap_time_is_kept_as_a_reject():
    line = b"2025/03/30 02:30:00 from 1.2.3.4:1 accepted tcp:a.b:1\n"
    parsed = parse_chunk(line, timezone="Europe/Berlin")
    assert parsed.access.height == 0
    assert parsed.rejects["reason"].to_list() == ["bad_timestamp"]
    # the dry run still prints the time the line says (spec: ts as printed, no zone)
    assert parsed.lines["ts"].to_list() == ["2025-03-30T02:30:00"]
    impossible = parse_chunk(b"2025/13/45 00:00:00 from 1.2.3.4:1 accepted tcp:a.b:1\n")
    assert impossible.lines["ts"].to_list() == [None]


@pytest.mark.parametrize(
    ("ts", "kept"),
    [
        ("0000/01/01 00:00:00", False),
        ("0001/01/01 00:00:00.5", False),
        ("1969/12/31 23:59:59", False),
        ("1970/01/01 00:00:00", True),
        ("9999/12/29 23:59:59", True),
        ("9999/12/31 00:00:00", False),
    ],
)
def test_timestamps_outside_a_clock_range_are_rejects(ts, kept):
    # year 0000 once reached the loader and crashed the chunk (PostgreSQL has no year 0)
    for line in (f"{ts} from 1.2.3.4:1 accepted tcp:a.b:1", f"{ts} 1.1.1.1 got answer: a.b. -> []"):
        parsed = parse_chunk((line + "\n").encode(), timezone="Asia/Shanghai")
        assert parsed.rejects["reason"].to_list() == ([] if kept else ["bad_timestamp"])
        assert parsed.lines["ts"][0] == ts.replace("/", "-").replace(" ", "T")


def test_generator_ground_truth_round_trip():
    frame = generate(GeneratorConfig(lines=30_000, days=2, other_share=0.5, seed=7))
    data = ("\n".join(frame["line"].to_list()) + "\n").encode()
    parsed = parse_chunk(data)
    assert set(frame["kind"].unique()) == {"access", "dns", "other"}
    got = parsed.lines.select(TRUTH_FIELDS)
    expected = frame.select(TRUTH_FIELDS)
    for name in TRUTH_FIELDS:
        mismatched = (~got[name].eq_missing(expected[name])).sum()
        assert mismatched == 0, name


def fast_taken(lines: pl.DataFrame) -> pl.Series:
    return P.fast_rows(lines.lazy()).collect().get_column("fast")


def assert_paths_agree(lines: pl.DataFrame, timezone: str = "UTC") -> None:
    """classify() (fast path, tolerant for the rest) gives the tolerant path's rows, the
    timestamp read in `timezone` included."""
    both = P.classify(lines, timezone)
    tolerant = (
        P.tolerant_rows(lines.lazy())
        .with_columns(P.typed_ts(pl.col("ts"), timezone).alias("ts_typed"))
        .collect()
    )
    assert_frame_equal(both.select(tolerant.columns), tolerant)


def test_fast_path_agrees_with_tolerant_path():
    frame = generate(GeneratorConfig(lines=20_000, other_share=0.3, seed=3))
    lines = split_lines(("\n".join(frame["line"].to_list()) + "\n").encode())
    assert fast_taken(lines).mean() > 0.8
    assert_paths_agree(lines)


# Lines at the fast path's edges: each is taken by it, or left to the tolerant path, and
# either way the row is the tolerant grammar's.
EDGE_LINES = [
    ("2025/01/01 00:00:00 from 1.2.3.4:5 rejected  proxy/vmess: invalid user", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 rejected  bad request email: bob", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 rejected \tproxy: tab first", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 rejected  trailing space ", False),
    ("2025/01/01 00:00:00 1.2.3.4:5 rejected", False),
    ("2025/01/01 00:00:00 [Info]:5 accepted tcp:a.b:1", True),
    ("2025/01/01 00:00:00 [Warning] 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/01/01 00:00:00 from [::1]:5 accepted tcp:[2001:db8::2]:443 [a -> b] email: c", True),
    ("2025/01/01 00:00:00 from [fe80::1%eth0]:5 accepted tcp:a.b:1", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:[Masked IPv4]:53", False),
    ("2025/01/01 00:00:00.1234567890 from 1.2.3.4:5 accepted tcp:a.b:1", False),
    ("2025/01/01 00:00:00.123456789 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("25/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", False),
    ("2025/1/1 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", False),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email: x", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email:x ", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [out]", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [out] ", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 ", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53  [out]", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [out]  email: x", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [out] email: x ", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [out]email: x", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:1234567 accepted tcp:a.b:99999999", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1 [] email: e", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1 [x ->  y]", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1 [x >> y ==> z]", True),
    ("2025/01/01 00:00:00 from ..:5 accepted tcp:a.b:1", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:[]:1", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:a:1:2", False),
    ("2025/01/01 00:00:00 from udp:1.2.3.4:5 accepted tcp:a.b:1 [t] email: e f", True),
    ("2025/01/01 00:00:00 from tcp:1.2.3.4:5 accepted tcp:a.b:1 [t] email: é@ü", True),
    (" 2025/01/01 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", False),
    ("2025/01/01 00:00:00  from 1.2.3.4:5 accepted tcp:a.b:1", False),
    ("2025/02/30 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/02/29 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2024/02/29 23:59:59.999999999 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2016/12/31 23:59:60.5 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/01/01 24:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/01/01 23:60:00 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/01/01 23:59:61 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/13/01 00:00:00 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("0000/01/01 00:00:00.1 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/03/30 02:30:00 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/10/26 02:30:00.5 from 1.2.3.4:5 accepted tcp:a.b:1", True),
    ("2025/01/01 00:00:00 1.1.1.1 got answer: a.b. -> [1.2.3.4] 1ms", False),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email:  x", False),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email:", False),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email: x y", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [direct] email: Carol Smith ", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [direct] email: Carol Smith \t ", True),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 [direct] email: Carol Smith\t", False),
    (
        "2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email: x  2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53 email: x",
        False,
    ),
    ("2025/01/01 00:00:00 1.2.3.4:5 accepted udp:a.b:53\t[out]", False),
    ("2025/01/01 00:00:00 from DNS accepted udp:8.8.8.8:53 [dns-in >> direct]", True),
    ("2025/01/01 00:00:00 from DoH accepted tcp:1.1.1.1:443", True),
    ("2025/01/01 00:00:00 from DNS:53 accepted udp:8.8.8.8:53", True),
    ("2025/01/01 00:00:00 from DNS rejected  no route", True),
    ("2025/01/01 00:00:00 from udp:DNS accepted udp:8.8.8.8:53", True),
    ("2025/01/01 00:00:00 from DNSX accepted udp:8.8.8.8:53", False),
    ("2025/01/01 00:00:00 from 1.2.3.4 accepted tcp:a.b:1", False),
    ("2025/01/01 00:00:00 from [::1] accepted tcp:a.b:1", False),
    ("2025/01/01 00:00:00 from @ accepted tcp:a.b:1", True),
    # unix sockets: no port, and only with the unix network
    ("2025/01/01 00:00:00 from unix:@xray-in.sock accepted tcp:a.b:443 [out] email: u", True),
    ("2025/01/01 00:00:00 from unix:/run/xray/in.sock accepted udp:a.b:53", True),
    ("2025/01/01 00:00:00 from unix:@sock:7 rejected  proxy: bad", True),
    ("2025/01/01 00:00:00 from tcp:@sock accepted tcp:a.b:443", False),
    ("2025/01/01 00:00:00 from @sock accepted tcp:a.b:443", False),
    ("2025/01/01 00:00:00 from unix:@so[ck] accepted tcp:a.b:443", False),
    # URLs of the HTTP inbound
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted //a.b:8443 [in -> out]", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted http://a.b/p?q=1#f [out] email: u", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted http://a.b:8080/p?v=1", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted https://a.b:8443", True),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted http://a.b:80x/p", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted http://user@a.b/p", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted http://[2001:db8::1]:80/", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted http://:80/", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted ftp://a.b/", False),
    ("2025/01/01 00:00:00 from 1.2.3.4:5 accepted quic+local://a.b [local]", False),
    # dnsLog lines: the servers that start with a byte no source starts with
    ("2025/01/01 00:00:00 UDP:192.0.2.53:53 got answer: a.b. -> [1.2.3.4, ::1] 38.2ms", True),
    ("2025/01/01 00:00:00 UDP:192.0.2.53:53 cache HIT: a.b -> [1.2.3.4]", True),
    ("2025/01/01 00:00:00 TCP//192.0.2.53:53 got answer: a.b -> [] 5.0s <timeout>", True),
    ("2025/01/01 00:00:00 TCPL//192.0.2.53:53 cache OPTIMISTE: a.b. -> [1.2.3.4]", True),
    ("2025/01/01 00:00:00 localhost got answer: a.b -> [1.2.3.4] 850µs", True),
    ("2025/01/01 00:00:00 quic+local://dns.x got answer: a.b -> [1.2.3.4] 1m2.5s", True),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b -> [1.2.3.4] 1ms <a > b>  ", True),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b -> [1.2.3.4 1ms", True),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b", True),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: [x] -> []", False),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b->[1.2.3.4]", False),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b[x] -> []", False),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b   ", False),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer: a.b -> [1.2.3.4]  ", True),
    ("2025/01/01 00:00:00 UDP:1.1.1.1:53 got answer:  a.b -> []", False),
    ("2025/01/01 00:00:00 DOH//dns.x got answer: a.b -> [1.2.3.4] 1ms", False),
    ("2025/01/01 00:00:00 [Info] app/dns: UDP:1.1.1.1:53 got answer: a.b TypeA -> []", True),
    # error-log lines: the level right after the timestamp
    ("2025/01/01 00:00:00.123456 [Debug] [123] app/dispatcher: taking detour [x]", True),
    ("2025/01/01 00:00:00 [Error] proxy: failed", True),
    ("2025/01/01 00:00:00 [Info]", True),
    ("2025/01/01 00:00:00  [Info] two spaces", False),
    ("2025/01/01 00:00:00 [Notice] not a level", False),
    ("<30>Jan 1 host xray[1]: 2025/01/01 00:00:00 [Info] prefixed", False),
]


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "Asia/Shanghai"])
def test_fast_path_edges_agree_with_tolerant_path(timezone):
    lines = split_lines(("\n".join(line for line, _ in EDGE_LINES) + "\n").encode())
    assert fast_taken(lines).to_list() == [taken for _, taken in EDGE_LINES]
    assert_paths_agree(lines, timezone)


def test_detour_tags_learned_across_chunks_match_the_regex():
    # the tags of known detours are reused from chunk to chunk; new ones are learned, and past
    # MAX_KNOWN the set starts afresh: every chunk's tags stay those of the DETOUR regex
    tags = P.DetourTags()
    tags.MAX_KNOWN = 3
    chunks = [
        ["a -> b", None, "c"],
        ["c", "a -> b"],
        ["x >> y ==> z", "c", "", None],
        ["p", "q -> r", "s", "t"],
        ["a -> b", "t"],
    ]
    for values in chunks:
        detour = pl.Series("detour", values, dtype=pl.String)
        inbound, outbound = tags.columns(detour)
        expected = (
            detour.to_frame().select(pl.col("detour").str.extract_groups(P.DETOUR)).unnest("detour")
        )
        assert inbound.to_list() == expected["inbound_tag"].to_list()
        assert outbound.to_list() == expected["outbound_tag"].to_list()
        assert len(tags.state[0].categories) <= tags.MAX_KNOWN + len(values)


def test_chunk_boundaries_do_not_change_rows():
    frame = generate(GeneratorConfig(lines=60, other_share=0.6, seed=11))
    data = ("\n".join(frame["line"].to_list()) + "\n").encode()
    whole = parse_chunk(data)
    cuts = [i + 1 for i, b in enumerate(data) if b == 0x0A]
    starts = [0, *cuts[:-1]]
    pieces = [parse_chunk(data[s:e], base_offset=s) for s, e in zip(starts, cuts, strict=True)]
    for name in ("access", "dns", "rejects"):
        joined = pl.concat([getattr(p, name) for p in pieces]).drop("line_no")
        assert joined.equals(getattr(whole, name).drop("line_no")), name


# --------------------------------------------------------------------------- properties

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,6}){1,2}", fullmatch=True)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 65535), min_size=8, max_size=8).map(
    lambda xs: ":".join(f"{x:x}" for x in xs)
)
ports = st.integers(0, 65535)
tag_text = (
    st.text(alphabet=string.ascii_letters + string.digits + "-_.:@ абв", min_size=1, max_size=20)
    .map(str.strip)
    .filter(lambda t: t and "  " not in t)
)
# an email may hold spaces (V2Ray takes any string; `Carol Smith`), never at its ends
emails = st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + ".@_-+", min_size=1, max_size=20),
    min_size=1,
    max_size=3,
).map(" ".join)
timestamps = st.datetimes(
    min_value=__import__("datetime").datetime(2000, 1, 1),
    max_value=__import__("datetime").datetime(2035, 1, 1),
)


@st.composite
def access_lines(draw):
    when = draw(timestamps)
    fraction = draw(st.sampled_from(["", "6", "3", "9", "1"]))
    ts = when.strftime("%Y/%m/%d %H:%M:%S")
    iso = when.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        digits = draw(
            st.text(alphabet=string.digits, min_size=int(fraction), max_size=int(fraction))
        )
        ts += "." + digits
        iso += "." + digits
    v6 = draw(st.booleans())
    src = draw(ipv6 if v6 else ipv4)
    src_port = draw(ports)
    src_net = draw(st.sampled_from([None, "tcp", "udp"]))
    prefix = draw(
        st.sampled_from(["", "from ", "Jan 14 17:26:54 edge-01 xray[4127]: ", "xray-node-1  | "])
    )
    src_text = (f"{src_net}:" if src_net else "") + (f"[{src}]" if v6 else src) + f":{src_port}"
    dest_v6 = draw(st.booleans())
    dest = draw(ipv6) if dest_v6 else draw(hosts)
    dest_port = draw(ports)
    dest_net = draw(st.sampled_from(["tcp", "udp"]))
    dest_text = f"{dest_net}:" + (f"[{dest}]" if dest_v6 else dest) + f":{dest_port}"
    in_tag = draw(
        st.one_of(
            st.none(), tag_text.filter(lambda t: "->" not in t and ">>" not in t and "==>" not in t)
        )
    )
    out_tag = draw(st.one_of(st.none(), tag_text))
    sep = draw(st.sampled_from(["->", ">>", "==>"]))
    detour = ""
    if out_tag is not None:
        detour = f" [{in_tag} {sep} {out_tag}]" if in_tag is not None else f" [{out_tag}]"
    else:
        in_tag = None
    email = draw(st.one_of(st.none(), emails))
    old_email = draw(st.booleans())
    mail = "" if email is None else (f" email:{email} " if old_email else f" email: {email}")
    rejected = draw(st.booleans())
    reason = "proxy/vless/encoding: invalid request user id"
    body = (
        f"{src_text} rejected  {reason}"
        if rejected
        else (f"{src_text} accepted {dest_text}{detour}{mail}")
    )
    line = f"{prefix if prefix != 'from ' else ''}{ts} {'from ' if prefix == 'from ' else ''}{body}"
    expected = {
        "ts": iso,
        "src_network": src_net,
        "src_ip": src,
        "src_port": src_port,
        "status": "rejected" if rejected else "accepted",
        "dest_network": None if rejected else dest_net,
        "dest_host": None if rejected else dest,
        "dest_port": None if rejected else dest_port,
        "inbound_tag": None if rejected else in_tag,
        "outbound_tag": None if rejected else out_tag,
        "email": None if rejected else email,
        "reason": reason if rejected else None,
        "kind": "access",
    }
    return line, expected


@pytest.mark.slow  # hundreds of generated cases
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(access_lines())
def test_property_access_lines_round_trip(case):
    line, expected = case
    assert parse_one(line) == expected


@pytest.mark.slow  # hundreds of generated cases
@settings(max_examples=200, deadline=None)
@given(st.lists(access_lines(), min_size=1, max_size=30))
def test_property_batch_equals_single(cases):
    data = ("\n".join(line for line, _ in cases) + "\n").encode()
    parsed = parse_chunk(data)
    assert parsed.lines.drop("line_no", "byte_offset").to_dicts() == [e for _, e in cases]


@pytest.mark.slow  # hundreds of generated cases
@settings(max_examples=100, deadline=None)
@given(st.lists(access_lines(), min_size=1, max_size=30))
def test_property_fast_path_agrees_with_tolerant_path(cases):
    assert_paths_agree(split_lines(("\n".join(line for line, _ in cases) + "\n").encode()))


@pytest.mark.slow  # hundreds of generated cases
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_raises_and_counts_add_up(data):
    parsed = parse_chunk(data)
    expected_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert parsed.line_count == expected_lines
    assert frames_total(parsed) == expected_lines
    assert parsed.lines.columns[2:] == list(CANONICAL_FIELDS)
    assert parsed.rejects["raw"].str.contains("\x00", literal=True).sum() == 0


def test_fast_regex_keeps_within_the_one_pass_dfa():
    # the regex crate runs a capture as a one-pass DFA only up to 16 explicit groups (past
    # them the same capture took twice as long, measured); speed is bench/parse.py's, this
    # guards the structural limit
    assert len(re.compile(P.FAST_CAPTURE).groupindex) <= 16
    assert r"\d" not in P.FAST_CAPTURE  # Unicode digits blow up the DFA table


def test_frames_of_the_fast_query_equal_the_frames_of_the_rows():
    # a chunk whose lines the fast path all takes, with every detour known, is framed in the
    # fast path's own query; otherwise (a new detour, a tolerant line) the rows are framed
    # again after the fix: both ways give the same frames
    frame = generate(GeneratorConfig(lines=3_000, seed=11))
    data = ("\n".join(frame["line"].to_list()) + "\n").encode()
    lines = split_lines(data)
    assert fast_taken(lines).all()
    assert P.classify_chunk(lines, "Europe/Berlin", P.DetourTags(), frames=True)[1] is None
    detours = P.DetourTags()
    first = parse_chunk(data, timezone="Europe/Berlin", detours=detours)  # learns: framed again
    assert P.classify_chunk(lines, "Europe/Berlin", detours, frames=True)[1] is not None
    second = parse_chunk(data, timezone="Europe/Berlin", detours=detours)
    for name in ("access", "dns", "rejects"):
        assert_frame_equal(getattr(first, name), getattr(second, name))
    assert_frame_equal(first.rows, second.rows)
    prefixed = b"<30>Jan  1 host xray[1]: " + data  # one line for the tolerant path
    assert P.classify_chunk(split_lines(prefixed), "UTC", detours, frames=True)[1] is None
    assert parse_chunk(prefixed, detours=detours).access.height == first.access.height


def test_two_sources_never_share_learned_detours():
    """Each caller owns its DetourTags: what one source learned is not another's."""
    one, other = P.DetourTags(), P.DetourTags()
    parse_chunk(b"2025/01/01 00:00:00 from 1.2.3.4:1 accepted tcp:a.b:1 [in -> out]\n", detours=one)
    lines = split_lines(b"2025/01/01 00:00:00 from 1.2.3.4:1 accepted tcp:a.b:1 [in -> out]\n")
    assert P.classify_chunk(lines, "UTC", one, frames=True)[1] is not None
    assert P.classify_chunk(lines, "UTC", other, frames=True)[1] is None


def test_a_value_too_long_to_index_sends_the_line_to_rejects():
    """PostgreSQL's b-tree indexes hold about 2,700 bytes: a record whose user, tag, host or
    source is longer than MAX_VALUE_BYTES is kept whole in rejects, not left unloadable."""
    from xray_pipeline.core.parse import MAX_VALUE_BYTES

    fits = "e" * MAX_VALUE_BYTES
    over = "é" * (MAX_VALUE_BYTES // 2 + 1)  # bytes count, not characters
    lines = [
        f"2025/01/01 00:00:00 from 1.2.3.4:1 accepted tcp:a.b:1 [in >> out] email: {fits}",
        f"2025/01/01 00:00:01 from 1.2.3.4:1 accepted tcp:a.b:1 [in >> out] email: {over}",
        f"2025/01/01 00:00:02 from 1.2.3.4:1 accepted tcp:{over}:443 [in >> out] email: u",
        f"2025/01/01 00:00:03 from 1.2.3.4:1 accepted tcp:a.b:1 [{over} >> out] email: u",
        f"2025/01/01 00:00:04 from unix:@{over} accepted tcp:a.b:1 [in >> out] email: u",
        "2025/01/01 00:00:05 from 1.2.3.4:1 accepted tcp:a.b:1 [in >> out] email: short",
    ]
    parsed = parse_chunk(("\n".join(lines) + "\n").encode())
    assert parsed.access["line_no"].to_list() == [1, 6]
    assert parsed.rejects["line_no"].to_list() == [2, 3, 4, 5]
    assert set(parsed.rejects["reason"]) == {"value_too_long"}
    assert parsed.rejects["raw"].to_list() == lines[1:5]
    assert parsed.access.height + parsed.dns.height + parsed.rejects.height == 6
    # the dry run still shows what the line says
    assert parsed.lines["kind"].to_list() == ["access"] * 6
