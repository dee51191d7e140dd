"""A node simulator for bench/fleet.py: one process that speaks the ship protocol as many nodes,
each with its own token, source identity and offsets, so that 200 nodes fit this machine.

Each simulated node appends its lines to an in-memory log ten times a second (the generator's
mix, stamped now in UTC) and ships what it has every --interval seconds, as `xray-pipeline ship`
does: one gzipped range per call over its own kept-alive connection (the shipper's own `Center`
client). On SIGUSR1 every node appends --burst lines at once and the offsets it reached are
written to OUT/burst.json. At the end every write is listed in OUT/writes.txt as
"epoch node end-offset" for the runner to time against the ledger.

Usage: python bench/fleet_nodes.py --central URL --tokens tokens.json --rate 20 --seconds 180
                                   --out DIR [--burst 2500] [--interval 1]
"""

import argparse
import datetime as dt
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xray_pipeline.core.fleet.shipper import Center, CenterRefused, CenterUnavailable
from xray_pipeline.core.synthetic.live import line_pool, stamped


class SimNode:
    """One node: its log (the bytes not yet acknowledged) and its connection to the center."""

    def __init__(self, name: str, token: str, central: str) -> None:
        self.name = name
        self.center = Center(central, name, token)
        self.identity = f"sim:{name}:{random.getrandbits(64):016x}"
        self.path = "/var/log/xray/access.log"
        self.pending = bytearray()  # the bytes from `acked` on
        self.acked = 0
        self.lock = threading.Lock()
        self.errors = 0
        self.calls: list[float] = []  # seconds each landing call took

    def append(self, data: bytes) -> int:
        with self.lock:
            self.pending += data
            return self.acked + len(self.pending)

    def ship(self, max_bytes: int = 4 * 1024 * 1024) -> bool:
        """Send what is pending (up to `max_bytes`, at a line end), as a shipper's step does;
        True when that was all there was (the next step waits for the interval)."""
        with self.lock:
            data = bytes(self.pending[:max_bytes])
        cut = data.rfind(b"\n") + 1
        if not cut:
            return True
        began = time.monotonic()
        try:
            end = self.center.send(self.identity, self.path, self.acked, data[:cut])
            self.calls.append(time.monotonic() - began)
        except CenterUnavailable:
            self.errors += 1
            return True  # the shipper waits for its next step (its backoff aside)
        except CenterRefused as exc:
            if exc.expected is None:
                raise
            end = exc.expected
        with self.lock:
            del self.pending[: end - self.acked]
            self.acked = end
        return len(data) < max_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--central", required=True)
    parser.add_argument("--tokens", type=Path, required=True, help="JSON {node: token}")
    parser.add_argument("--rate", type=float, required=True, help="lines a second per node")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--burst", type=int, default=0, help="lines per node on SIGUSR1")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    tokens = json.loads(args.tokens.read_text())
    nodes = [SimNode(name, token, args.central) for name, token in tokens.items()]
    pool = line_pool(size=2_000, seed=11, users=300, other_share=0.15)
    burst = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: burst.set())
    writing = threading.Event()
    writing.set()
    stop = threading.Event()
    writes: list[tuple[float, int, int]] = []

    def write() -> None:
        carry, cursor, tick = 0.0, 0, 0
        started = time.monotonic()
        while not stop.is_set():
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            if burst.is_set():
                burst.clear()
                lines = line_pool(size=args.burst, seed=7, users=300, other_share=0.15)
                text = stamped(lines, now).encode()
                (args.out / "burst-lines.log").write_bytes(text)
                ends = {node.name: node.append(text) for node in nodes}
                (args.out / "burst.json").write_text(json.dumps(ends))
            if writing.is_set() and time.monotonic() - started < args.seconds:
                carry += args.rate / 10.0
                n = int(carry)
                carry -= n
                if n:
                    for i, node in enumerate(nodes):
                        lines = [pool[(cursor + i * 7 + k) % len(pool)] for k in range(n)]
                        end = node.append(stamped(lines, now).encode())
                        writes.append((time.time(), i, end))
                    cursor += n
            tick += 1
            time.sleep(max(0.0, started + tick / 10.0 - time.monotonic()))

    def ship(node: SimNode) -> None:
        time.sleep(random.uniform(0, args.interval))  # real nodes do not start in step
        while not stop.is_set():
            began = time.monotonic()
            if node.ship():
                time.sleep(max(0.0, args.interval - (time.monotonic() - began)))

    threads = [threading.Thread(target=write, daemon=True)]
    threads += [threading.Thread(target=ship, args=(node,), daemon=True) for node in nodes]
    for thread in threads:
        thread.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    with (args.out / "writes.txt").open("w") as fh:
        fh.writelines(f"{t:.3f} {nodes[i].name} {end}\n" for t, i, end in writes)
    errors = sum(node.errors for node in nodes)
    calls = sorted(c for node in nodes for c in node.calls)
    p50, p95 = (calls[int(q * (len(calls) - 1))] if calls else float("nan") for q in (0.5, 0.95))
    print(f"{len(nodes)} simulated nodes, {len(writes):,} writes, {errors} failed calls")
    print(f"landing calls: {len(calls)}, p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms")


if __name__ == "__main__":
    main()
