"""The demo's own parts, beside the services that `up` supervises: a generator thread per log
(the center's demo log and each demo node's), or for the center's log a real V2Ray driven by
real connections (`demo --v2ray`), a thread that plants abuse for the rules to find, and a
`ship` process per demo node."""

import os
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from xray_pipeline.core.db.session import session
from xray_pipeline.core.runtime.processes import PROJECT_ROOT, reset_sigint
from xray_pipeline.settings import Settings


@dataclass
class Demo:
    """`rate` generated lines a second appended to `log` and to each of `nodes` demo nodes'
    logs (under XRAY_HOME/demo/nodes/), a sharer or a seeder planted every two minutes. With
    `v2ray`, `log` is written by a real V2Ray at `rate` connections a second (its parts under
    XRAY_HOME/demo/v2ray/), and the planting goes to the nodes' logs."""

    log: Path
    rate: float
    timezone: str
    node_logs: dict[str, Path] = field(default_factory=dict)  # node name -> its log
    v2ray: Path | None = None  # the folder of the V2Ray that writes `log`
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lab: object | None = None

    @classmethod
    def of(
        cls, settings: Settings, log: Path, *, rate: float, nodes: int, v2ray: bool = False
    ) -> "Demo":
        folder = settings.home / "demo" / "nodes"
        node_logs = {
            f"demo-node-{i}": folder / f"demo-node-{i}" / "access.log" for i in range(1, nodes + 1)
        }
        lab = settings.home / "demo" / "v2ray" if v2ray else None
        return cls(log, rate, settings.timezone, node_logs, lab)

    def logs(self) -> list[Path]:
        return [self.log, *self.node_logs.values()]

    def start(self) -> None:
        """The generator threads and the planting thread."""
        from xray_pipeline.core.synthetic.live import follow
        from xray_pipeline.core.synthetic.planted import plant_live

        def write_forever(log: Path, seed: int) -> None:
            log.parent.mkdir(parents=True, exist_ok=True)
            for _ in follow(log, rate=self.rate, timezone=self.timezone, seed=seed):
                if self._stop.is_set():
                    return

        generated = self.logs()
        if self.v2ray is not None:
            from xray_pipeline.core.synthetic.v2ray import V2RayLab

            lab = V2RayLab(self.v2ray, access_log=self.log, timezone=self.timezone).start()
            self._lab, generated = lab, list(self.node_logs.values())
            self._spawn(lambda: deque(lab.drive(self.rate, self._stop), maxlen=0), (), "demo-v2ray")
        for seed, log in enumerate(generated, start=43 if self.v2ray else 42):
            self._spawn(write_forever, (log, seed), "demo-generator")
        if generated:  # a sharer or a seeder every two minutes: the rules have something to find
            planting = {"timezone": self.timezone, "stop": self._stop}
            self._spawn(lambda: plant_live(generated, **planting), (), "demo-abuse")

    def _spawn(self, target, args: tuple, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_shippers(self, settings: Settings, central: str) -> list[subprocess.Popen]:
        """A `ship` process per demo node, shipping to the sidecar at `central`."""
        if self.node_logs:
            settings.landing_dir.mkdir(parents=True, exist_ok=True)
        return [start_shipper(settings, name, log, central) for name, log in self.node_logs.items()]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._lab is not None:
            self._lab.stop()


def start_shipper(settings: Settings, name: str, log: Path, central: str) -> subprocess.Popen:
    """A demo node: register `name` afresh (a new token) and run `xray-pipeline ship` for its
    log in its own process group and state folder, as a node of a fleet does."""
    from xray_pipeline.core.fleet.nodes import add_node, remove_node

    with session(settings) as conn:
        remove_node(conn, name)  # its token was shown once, to the last demo: a new one
        token = add_node(conn, name)
    home = log.parent
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAY_")}
    env.update(XRAY_HOME=str(home), XRAY_SHIP_TOKEN=token)
    out = (home / "ship.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "xray_pipeline.cli", "ship", "--central", central,
         "--node", name, "--logfile", str(log)],
        cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=reset_sigint,
    )  # fmt: skip
