"""A synthetic but realistic access-log writer, with the ground truth of every line.

Lines are built column-wise (NumPy draws, Polars string expressions), so millions of lines take
seconds. The default mix is mostly the modern Xray shape plus a share of every other shape of
docs/log-format.md; users and destinations follow Zipf-like popularity.
"""

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

# shape -> weight within the non-modern share
OTHER_SHAPES: dict[str, float] = {
    "xray_1_8": 4,  # from, no fraction (Xray 1.8.24 – 25.1.1)
    "xray_1_5": 3,  # no from, [in -> out] (Xray 1.5.5 – 1.8.23)
    "out_only": 3,  # [out] (v2fly, or an inbound without tag)
    "v2ray_old": 2,  # email:x with trailing space, no detour (V2Ray 4.21 – 4.33)
    "forced": 1,  # [in ==> out]
    "rejected": 6,  # two spaces, reason to the end
    "ipv6": 3,  # bracketed IPv6 on both sides
    "mux": 3,  # from tcp:ip:port (mux/XUDP)
    "unix": 1,  # from unix:@name
    "port0": 2,  # X-Forwarded-For: port 0
    "connect_url": 1,  # //host:port (HTTP CONNECT)
    "http_url": 1,  # http://host:port/path
    "dns_source": 2,  # DNS accepted udp:... [dns-module >> freedom]
    "dnslog": 4,  # dnsLog line
    "error_log": 2,  # [Info] ... in the same stream
}

INBOUND_TAGS = ["vless-reality", "VLESS TCP REALITY", "inbound-8443", "trojan-ws", "vmess-grpc"]
OUTBOUND_TAGS = ["direct", "freedom", "warp-out", "proxy-a", "blocked"]
REJECT_REASONS = [
    "proxy/vless/encoding: invalid request user id",
    "proxy/trojan: not trojan protocol",
    "proxy/vless/encoding: invalid request version",
    "proxy/socks: insufficient header > EOF",
    "common/drain: common/drain: unable to drain connection > websocket: close 1006 "
    "(abnormal closure): unexpected EOF",
]
TLDS = ["com", "net", "org", "io", "example"]


@dataclass
class GeneratorConfig:
    lines: int = 10_000
    days: int = 1
    start: dt.datetime = field(default_factory=lambda: dt.datetime(2025, 11, 17))
    seed: int = 42
    users: int = 200
    destinations: int = 2_000
    other_share: float = 0.15


def _zipf_choice(rng: np.random.Generator, n_items: int, size: int, a: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_items + 1) ** a
    weights /= weights.sum()
    return rng.choice(n_items, size=size, p=weights)


def build_frame(cfg: GeneratorConfig, *, timestamps: np.ndarray | None = None) -> pl.DataFrame:
    """The fields of `cfg.lines` records (before rendering), time-ordered."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.lines
    if timestamps is None:
        timestamps = _slice_timestamps(cfg, 0, n)
    shapes = np.array(["modern", *OTHER_SHAPES])
    other_weights = np.array(list(OTHER_SHAPES.values()), dtype=float)
    probs = np.concatenate(
        ([1 - cfg.other_share], cfg.other_share * other_weights / other_weights.sum())
    )
    shape = shapes[rng.choice(len(shapes), size=n, p=probs)]
    user = _zipf_choice(rng, cfg.users, n)
    dest = _zipf_choice(rng, cfg.destinations, n)
    # two IPv4 addresses per user (home and mobile, in two /24s) and one IPv6 /64: within the
    # default IP limit (3 sources by prefix), so that the default mix plants no sharer
    ip_slot = rng.integers(0, 2, size=n)
    src_ip_num = (user * 7919 + ip_slot * 104729) % (200 * 2**24) + 16 * 2**24
    # a rejected connection comes from a scanner or a stale client, not from a user's own
    # address: spread over the range, so that the default mix holds no rejected storm
    scanner = (np.arange(n, dtype=np.int64) * 2654435761 + cfg.seed) % (200 * 2**24) + 16 * 2**24
    src_ip_num = np.where(shape == "rejected", scanner, src_ip_num)
    dest_is_ip = dest % 10 == 0
    dest_ip_num = (dest * 2654435761) % (200 * 2**24) + 16 * 2**24
    return pl.DataFrame(
        {
            "when": timestamps,
            "shape": shape,
            "user": user,
            "dest": dest,
            "src_ip_num": src_ip_num,
            "dest_is_ip": dest_is_ip,
            "dest_ip_num": dest_ip_num,
            "src_port": rng.integers(1024, 65536, size=n),
            "port_pick": rng.integers(0, 100, size=n),
            "udp": rng.random(n) < 0.12,
            "sep_pick": rng.integers(0, 10, size=n),
            "in_pick": _zipf_choice(rng, len(INBOUND_TAGS), n),
            "out_pick": _zipf_choice(rng, len(OUTBOUND_TAGS), n),
            "reason_pick": rng.integers(0, len(REJECT_REASONS), size=n),
            "ms": rng.integers(1, 900_000, size=n),
            "conn_id": rng.integers(10**9, 4 * 10**9, size=n),
        }
    )


_NIBBLES = np.array(list("0123456789abcdef"))


def _hex16(value: pl.Expr) -> pl.Expr:
    """The low 16 bits of `value` as four hex digits (an IPv6 group)."""
    return pl.concat_str([pl.lit(_NIBBLES).get((value // 16**k) % 16) for k in (3, 2, 1, 0)])


def render(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `line` (the log text) and the 13 expected canonical fields to a generated frame."""
    s = pl.col("shape")
    ts6 = pl.col("when").dt.strftime("%Y/%m/%d %H:%M:%S%.6f")
    ts0 = pl.col("when").dt.strftime("%Y/%m/%d %H:%M:%S")
    no_fraction = s.is_in(["xray_1_5", "v2ray_old", "xray_1_8", "out_only"])
    ts_text = pl.when(no_fraction).then(ts0).otherwise(ts6)
    email = pl.concat_str([pl.col("user") + 1, pl.lit("."), pl.lit("user"), pl.col("user")])
    # Marzban's `id.name`, Remnawave's numeric id, and free words with a space (V2Ray and 3x-ui
    # take any string): planted.email_of says the same
    email = (
        pl.when(pl.col("user") % 5 == 0)
        .then((pl.col("user") + 1).cast(pl.String))
        .when(pl.col("user") % 23 == 7)
        .then(pl.concat_str([pl.lit("Guest "), pl.col("user") + 1]))
        .otherwise(email)
    )
    domain = pl.concat_str(
        [
            pl.lit("www.site"),
            pl.col("dest"),
            pl.lit("."),
            pl.lit(np.array(TLDS)).get(pl.col("dest") % len(TLDS)),
        ]
    )
    src_v4 = pl.concat_str(
        [((pl.col("src_ip_num") // 256**k) % 256).cast(pl.String) for k in (3, 2, 1, 0)],
        separator=".",
    )
    dst_v4 = pl.concat_str(
        [((pl.col("dest_ip_num") // 256**k) % 256).cast(pl.String) for k in (3, 2, 1, 0)],
        separator=".",
    )
    src_v6 = pl.concat_str([pl.lit("2001:db8:"), _hex16(pl.col("user")), pl.lit("::5")])
    dst_v6 = pl.concat_str([pl.lit("2001:db8:4860::"), (pl.col("dest") % 65536).cast(pl.String)])
    is_v6 = s == "ipv6"
    src_ip = pl.when(is_v6).then(src_v6).otherwise(src_v4)
    src_port = pl.when(s == "port0").then(0).otherwise(pl.col("src_port"))
    dest_host = (
        pl.when(is_v6).then(dst_v6).when(pl.col("dest_is_ip")).then(dst_v4).otherwise(domain)
    )
    pp = pl.col("port_pick")
    udp = pl.col("udp") & ~s.is_in(["connect_url", "http_url"])
    dest_port = (
        pl.when(udp)
        .then(pl.when(pp < 70).then(53).otherwise(443))
        .when(pp < 85)
        .then(443)
        .when(pp < 95)
        .then(80)
        .otherwise(8443)
    )
    dest_net = pl.when(udp).then(pl.lit("udp")).otherwise(pl.lit("tcp"))
    in_tag = pl.lit(np.array(INBOUND_TAGS)).get(pl.col("in_pick"))
    out_tag = pl.lit(np.array(OUTBOUND_TAGS)).get(pl.col("out_pick"))
    sep = (
        pl.when(s == "forced")
        .then(pl.lit("==>"))
        .when(pl.col("sep_pick") < 6)
        .then(pl.lit(">>"))
        .otherwise(pl.lit("->"))
    )
    reason = pl.lit(np.array(REJECT_REASONS)).get(pl.col("reason_pick"))

    def bracket(h):
        return pl.when(is_v6).then(pl.concat_str([pl.lit("["), h, pl.lit("]")])).otherwise(h)

    src_hp = pl.concat_str([bracket(src_ip), pl.lit(":"), src_port.cast(pl.String)])
    dest_hp = pl.concat_str([bracket(dest_host), pl.lit(":"), dest_port.cast(pl.String)])
    dest_full = pl.concat_str([dest_net, pl.lit(":"), dest_hp])
    detour = pl.concat_str(
        [pl.lit(" ["), in_tag, pl.lit(" "), sep, pl.lit(" "), out_tag, pl.lit("]")]
    )
    out_only = pl.concat_str([pl.lit(" ["), out_tag, pl.lit("]")])
    mail = pl.concat_str([pl.lit(" email: "), email])
    http_path = pl.concat_str([pl.lit("/p"), pl.col("dest"), pl.lit("?v="), pl.col("ms")])
    url_port = pl.when(pp < 50).then(pl.lit(":8080")).otherwise(pl.lit(""))

    line = (
        pl.when(s == "modern")
        .then(pl.concat_str([ts6, pl.lit(" from "), src_hp, pl.lit(" accepted "), dest_full, detour, mail]))
        .when(s.is_in(["xray_1_8", "port0", "ipv6"]))
        .then(pl.concat_str([ts_text, pl.lit(" from "), src_hp, pl.lit(" accepted "), dest_full, detour, mail]))
        .when(s == "xray_1_5")
        .then(pl.concat_str([ts0, pl.lit(" "), src_hp, pl.lit(" accepted "), dest_full, detour, mail]))
        .when(s == "out_only")
        .then(pl.concat_str([ts0, pl.lit(" "), src_hp, pl.lit(" accepted "), dest_full, out_only]))
        .when(s == "v2ray_old")
        .then(pl.concat_str([ts0, pl.lit(" "), src_hp, pl.lit(" accepted "), dest_full, pl.lit(" email:"), email, pl.lit(" ")]))
        .when(s == "forced")
        .then(pl.concat_str([ts6, pl.lit(" from tcp:"), src_hp, pl.lit(" accepted "), dest_full, detour]))
        .when(s == "rejected")
        .then(pl.concat_str([ts6, pl.lit(" from "), src_hp, pl.lit(" rejected  "), reason]))
        .when(s == "mux")
        .then(pl.concat_str([ts6, pl.lit(" from tcp:"), src_hp, pl.lit(" accepted "), dest_full, detour, mail]))
        .when(s == "unix")
        .then(pl.concat_str([ts6, pl.lit(" from unix:@xray-in.sock accepted "), dest_full, out_only, mail]))
        .when(s == "connect_url")
        .then(pl.concat_str([ts6, pl.lit(" from "), src_hp, pl.lit(" accepted //"), dest_host, pl.lit(":8443"), detour]))
        .when(s == "http_url")
        .then(pl.concat_str([ts6, pl.lit(" from "), src_hp, pl.lit(" accepted http://"), dest_host, url_port, http_path, detour]))
        .when(s == "dns_source")
        .then(pl.concat_str([ts6, pl.lit(" from DNS accepted udp:192.0.2.53:53 [dns-module >> freedom]")]))
        .when(s == "dnslog")
        .then(pl.concat_str([ts6, pl.lit(" UDP:192.0.2.53:53 got answer: "), domain, pl.lit(". -> ["), dst_v4, pl.lit("] "), (pl.col("ms") / 1000).round(3).cast(pl.String), pl.lit("ms")]))
        .otherwise(pl.concat_str([ts6, pl.lit(" [Info] ["), pl.col("conn_id"), pl.lit("] app/dispatcher: taking detour ["), out_tag, pl.lit("] for ["), dest_full, pl.lit("]")]))
    )  # fmt: skip

    access = ~s.is_in(["dnslog", "error_log"])
    accepted = access & (s != "rejected")
    url_shape = s.is_in(["connect_url", "http_url"])
    has_email = s.is_in(
        ["modern", "xray_1_8", "port0", "ipv6", "xray_1_5", "v2ray_old", "mux", "unix"]
    )
    has_detour = s.is_in(["modern", "xray_1_8", "port0", "ipv6", "xray_1_5", "forced", "mux", "connect_url", "http_url", "dns_source"])  # fmt: skip
    has_out = has_detour | s.is_in(["out_only", "unix"])
    iso = (
        pl.when(no_fraction)
        .then(ts0)
        .otherwise(ts6)
        .str.replace_all("/", "-")
        .str.replace(" ", "T")
    )
    null = pl.lit(None, pl.String)
    return frame.select(
        line.alias("line"),
        pl.when(s != "error_log").then(iso).alias("ts"),
        pl.when(s.is_in(["forced", "mux"])).then(pl.lit("tcp")).when(s == "unix").then(pl.lit("unix")).otherwise(null).alias("src_network"),
        pl.when(s == "dns_source").then(pl.lit("DNS")).when(s == "unix").then(pl.lit("@xray-in.sock")).when(access).then(src_ip).alias("src_ip"),
        pl.when(access & ~s.is_in(["dns_source", "unix"])).then(src_port).cast(pl.Int32).alias("src_port"),
        pl.when(s == "rejected").then(pl.lit("rejected")).when(access).then(pl.lit("accepted")).alias("status"),
        pl.when(s == "dns_source").then(pl.lit("udp")).when(accepted & ~url_shape).then(dest_net).alias("dest_network"),
        pl.when(s == "dns_source").then(pl.lit("192.0.2.53")).when(accepted | (s == "dnslog")).then(pl.when(s == "dnslog").then(domain).otherwise(dest_host)).alias("dest_host"),
        pl.when(s == "dns_source").then(53).when(s == "connect_url").then(8443).when(s == "http_url").then(pl.when(pp < 50).then(8080)).when(accepted).then(dest_port).cast(pl.Int32).alias("dest_port"),
        pl.when(s == "dns_source").then(pl.lit("dns-module")).when(has_detour).then(in_tag).alias("inbound_tag"),
        pl.when(s == "dns_source").then(pl.lit("freedom")).when(has_out).then(out_tag).alias("outbound_tag"),
        pl.when(has_email).then(email).alias("email"),
        pl.when(s == "rejected").then(reason).alias("reason"),
        pl.when(access).then(pl.lit("access")).when(s == "dnslog").then(pl.lit("dns")).otherwise(pl.lit("other")).alias("kind"),
    )  # fmt: skip


TRUTH_FIELDS = (
    "ts", "src_network", "src_ip", "src_port", "status", "dest_network", "dest_host",
    "dest_port", "inbound_tag", "outbound_tag", "email", "reason", "kind",
)  # fmt: skip


def generate(cfg: GeneratorConfig) -> pl.DataFrame:
    """`cfg.lines` rendered lines with their expected fields, time-ordered."""
    return render(build_frame(cfg))


def node_path(path: Path, node: str) -> Path:
    """The file of one node when a log is written for several: access.log -> access-n1.log."""
    return path.with_name(f"{path.stem}-{node}{path.suffix}")


def write_log(
    cfg: GeneratorConfig,
    out: Path,
    *,
    truth: Path | None = None,
    batch: int = 500_000,
    append: bool = False,
    planted: pl.DataFrame | None = None,
    nodes: int = 1,
) -> int:
    """Write the log (and its ground truth as JSON lines); returns bytes written.

    `planted` lines (core.planted) merge in by time. With `nodes` > 1 each node n1..nN gets
    its own log and truth (node_path): a user's own lines go to one node, the planted ones to
    the node they name."""
    names = [f"n{i + 1}" for i in range(nodes)] if nodes > 1 else [""]
    outs = {n: node_path(out, n) if n else out for n in names}
    truths = {n: (node_path(truth, n) if n else truth) for n in names} if truth else {}
    mode = "ab" if append else "wb"
    handles = {n: outs[n].open(mode) for n in names}
    truth_handles = {n: path.open(mode) for n, path in truths.items()}
    written = 0
    step_us = cfg.days * 86_400 * 1_000_000 / max(cfg.lines, 1)
    base = cfg.start.replace(tzinfo=None)
    try:
        done = 0
        part = 0
        while done < cfg.lines:
            n = min(batch, cfg.lines - done)
            sub = GeneratorConfig(
                lines=n,
                days=cfg.days,
                start=cfg.start,
                seed=cfg.seed * 1_000_003 + part,
                users=cfg.users,
                destinations=cfg.destinations,
                other_share=cfg.other_share,
            )
            frame = build_frame(sub, timestamps=_slice_timestamps(cfg, done, n))
            rendered = render(frame).with_columns(
                frame["when"],
                pl.lit(np.array(names)).get(frame["user"] % len(names)).alias("node"),
            )
            if planted is not None and not planted.is_empty():
                lo = base + dt.timedelta(microseconds=done * step_us) if done else None
                last = done + n >= cfg.lines
                hi = None if last else base + dt.timedelta(microseconds=(done + n) * step_us)
                mine = planted
                if lo is not None:
                    mine = mine.filter(pl.col("when") >= lo)
                if hi is not None:
                    mine = mine.filter(pl.col("when") < hi)
                rendered = pl.concat(
                    [rendered, mine.select(rendered.columns)], how="vertical_relaxed"
                ).sort("when", maintain_order=True)
            for name in names:
                rows = rendered.filter(pl.col("node") == name) if len(names) > 1 else rendered
                if rows.is_empty():
                    continue
                data = ("\n".join(rows["line"].to_list()) + "\n").encode()
                handles[name].write(data)
                written += len(data)
                if name in truth_handles:
                    truth_handles[name].write(rows.select(TRUTH_FIELDS).write_ndjson().encode())
            done += n
            part += 1
    finally:
        for fh in [*handles.values(), *truth_handles.values()]:
            fh.close()
    return written


def _slice_timestamps(cfg: GeneratorConfig, start_index: int, n: int) -> np.ndarray:
    """Evenly spread, ordered timestamps over the whole span, with jitter (same for any batch)."""
    span_us = cfg.days * 86_400 * 1_000_000
    step = span_us / max(cfg.lines, 1)
    rng = np.random.default_rng(cfg.seed + start_index)
    idx = np.arange(start_index, start_index + n, dtype=np.float64)
    jitter = rng.random(n) * step
    offsets = np.floor(idx * step + jitter).astype(np.int64)
    base = np.datetime64(cfg.start.replace(tzinfo=None), "us")
    return base + offsets.astype("timedelta64[us]")
