"""A center and its fleet on this machine, for the fleet and alerts benchmarks: a database with
registered nodes, `xray-pipeline up` with everything on, real shippers and the node simulator
(bench/fleet_nodes.py), and what their processes use."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
from psycopg import sql

from bench._common import OUT
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.session import with_database

ROOT = Path(__file__).resolve().parents[1]
SIMULATOR = Path(__file__).resolve().parent / "fleet_nodes.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_database(server: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    with connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, with_database(server, name)


def drop_databases(server: str, *names: str) -> None:
    with connect(server, autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def loaded_by_node(conn) -> dict[str, int]:
    """Bytes loaded per node: each node's sources (its landed segments) are loaded from their
    start, so the end of a source's last range is what it loaded; one index probe a source."""
    rows = conn.execute(
        "SELECT s.node, sum(last.end_offset)::bigint FROM sources s CROSS JOIN LATERAL ("
        "  SELECT end_offset FROM ingest_ledger l WHERE l.source_id = s.id"
        "  ORDER BY start_offset DESC LIMIT 1) last "
        "WHERE s.node IS NOT NULL GROUP BY s.node"
    ).fetchall()
    conn.commit()
    return dict(rows)


def sample(procs: list[psutil.Process]) -> list[tuple[float, float]]:
    """(CPU seconds, RSS MB) of each process (0, 0 once gone)."""
    out = []
    for proc in procs:
        try:
            t = proc.cpu_times()
            out.append((t.user + t.system, proc.memory_info().rss / 1e6))
        except psutil.Error:
            out.append((0.0, 0.0))
    return out


def tree_rss_mb(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss / 1e6
        except psutil.Error:
            continue
    return total


def _label(proc: psutil.Process) -> str:
    line = " ".join(proc.cmdline())
    for key, label in (("spawn_main", "runs"), (" serve", "API sidecar"),
                       ("dagster._daemon", "Dagster daemon"), ("dagster_webserver", "webserver"),
                       ("code-server", "code server"), ("api grpc", "code server"),
                       (" up ", "up")):  # fmt: skip
        if key in line:
            return label
    return "other"


def tree_cpu_by_process(root: psutil.Process) -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds with its waited-for children) of a process tree."""
    found = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            found[proc.pid] = (
                _label(proc),
                t.user + t.system + t.children_user + t.children_system,
            )
        except psutil.Error:
            continue
    return found


def cpu_shares(before: dict, after: dict, wall: float) -> dict[str, float]:
    """Each kind of process's share of a core over `wall` seconds (a process started in the
    window counts from zero)."""
    shares: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        shares[label] = shares.get(label, 0.0) + (seconds - before.get(pid, (label, 0.0))[1]) / wall
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def tree_env(tree: Path | None) -> dict[str, str]:
    """This environment without the XRAY_ and DAGSTER_ variables, running `tree`'s code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRAY_", "DAGSTER_"))}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def clean_env() -> dict[str, str]:
    return tree_env(None)


_REGISTER = """
import json, sys
from xray_pipeline.core.db.connect import connect
from xray_pipeline.core.db.migrations import apply_migrations
from xray_pipeline.core.fleet.nodes import add_node
with connect(sys.argv[1]) as conn:
    apply_migrations(conn)
    print(json.dumps({name: add_node(conn, name) for name in sys.argv[2:]}))
"""


def fleet_setup(server: str, prefix: str, nodes: int, *, real: int | None = None, tree=None):
    """A new database (its schema and `nodes` registered nodes by `tree`'s code), and a folder
    in bench/out with the center's state folder and an empty log for each of the first `real`
    nodes (all by default): (name, url, folder, tokens, logs)."""
    name, url = new_database(server, prefix)
    work = OUT / f"{prefix.removeprefix('xray_bench_')}-{name}"
    (work / "center" / "landed").mkdir(parents=True)
    names = [f"node-{i:03d}" for i in range(nodes)]
    done = subprocess.run(
        [sys.executable, "-c", _REGISTER, url, *names], env=tree_env(tree), cwd=tree or ROOT,
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    tokens = json.loads(done.stdout.strip().splitlines()[-1])
    logs = {node: work / node / "access.log" for node in names[: nodes if real is None else real]}
    for log in logs.values():
        log.parent.mkdir(parents=True)
        log.write_bytes(b"")
    return name, url, work, tokens, logs


def start_center(
    work: Path, env: dict[str, str], tree: Path | None = None
) -> tuple[subprocess.Popen, int, Path]:
    """`xray-pipeline up` with everything on (the code of `tree`), its output in work/up.out:
    (the process, the API's port, the output file)."""
    ui_port, api_port = free_port(), free_port()
    out_path = work / "up.out"
    with out_path.open("w") as out:
        center = subprocess.Popen(
            [sys.executable, "-m", "xray_pipeline.cli", "up", "--port", str(ui_port),
             "--api-port", str(api_port)],
            env=env, cwd=tree or ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return center, api_port, out_path


def wait_ready(center: subprocess.Popen, out_path: Path) -> None:
    """Until `up` says ready (its first sensor tick)."""
    deadline = time.monotonic() + 300
    while "ready:" not in out_path.read_text():
        if time.monotonic() > deadline or center.poll() is not None:
            raise SystemExit(f"up did not become ready; see {out_path}")
        time.sleep(1)


def start_shipper(
    node: str, token: str, log: Path, api_port: int, tree: Path | None = None
) -> subprocess.Popen:
    """A real `xray-pipeline ship` of `log` as `node`, its output beside the log."""
    env = {**tree_env(tree), "XRAY_HOME": str(log.parent), "XRAY_SHIP_TOKEN": token}
    args = [sys.executable, "-m", "xray_pipeline.cli", "ship", "--node", node,
            "--central", f"http://127.0.0.1:{api_port}", "--logfile", str(log)]  # fmt: skip
    out = (log.parent / "ship.out").open("w")
    return subprocess.Popen(
        args, env=env, cwd=tree or ROOT, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop_all(shippers: list[subprocess.Popen], center: subprocess.Popen) -> None:
    """Stop the shippers, then the center (SIGINT, as Ctrl-C)."""
    for proc in shippers:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in shippers:
        proc.wait(timeout=60)
    if center.poll() is None:
        os.killpg(center.pid, signal.SIGINT)
    center.wait(timeout=120)


def start_simulator(
    work: Path, tokens: dict[str, str], api_port: int, rate: float, seconds: float, burst: int
) -> subprocess.Popen:
    folder = work / "simulated"
    folder.mkdir()
    (folder / "tokens.json").write_text(json.dumps(tokens))
    return subprocess.Popen(
        [sys.executable, str(SIMULATOR), "--central", f"http://127.0.0.1:{api_port}",
         "--tokens", str(folder / "tokens.json"), "--rate", str(rate), "--seconds",
         str(seconds), "--out", str(folder), "--burst", str(burst)],
        env=clean_env(), cwd=ROOT, stdout=(folder / "out.txt").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
