"""Real access-log lines from a real V2Ray: Debian's `v2ray` (4.34, the v2fly core that Xray
forked from) serving VMess, Shadowsocks, SOCKS and HTTP inbounds on 127.0.0.1, with routing to
`direct` (freedom) and `blocked` (blackhole), driven by a second V2Ray as the client, and local
TCP, UDP and HTTP destinations. The tests load what it writes; `demo --v2ray` runs it as the
demo's writer. Each connection it makes returns what its access-log line should say."""

import contextlib
import http.client
import http.server
import itertools
import json
import os
import random
import shutil
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = (
    "Debian's v2ray is not installed: `apt-get install v2ray` (4.34, the v2fly core); "
    "`.ci/run` installs it"
)
LOCALHOST = "127.0.0.1"


def v2ray_executable() -> str | None:
    return shutil.which("v2ray")


@dataclass(frozen=True)
class LabUser:
    """A VMess user of the server; `email` as the config has it (None: no email)."""

    key: str
    email: str | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


# a plus address, a non-ASCII one, one with a space (V2Ray accepts any string), none at all
USERS = (
    LabUser("alice", "alice@example.org"),
    LabUser("plus", "bob+vpn@example.org"),
    LabUser("cyrillic", "пользователь@пример.рф"),
    LabUser("spaced", "Carol Smith"),
    LabUser("anonymous", None),
)
MUX_USER = USERS[1]
SHADOWSOCKS_EMAIL = "shadow socks"
# what one connection is: through a user's VMess (tcp, udp, blocked, mux), Shadowsocks, the
# HTTP inbound (a GET, a CONNECT), or bytes each inbound refuses
KINDS = ("tcp", "udp", "blocked", "mux", "shadowsocks", "http", "connect", "bad_user", "bad_socks")


@dataclass(frozen=True)
class Expected:
    """What the access-log line of one connection says, as the parser reads it."""

    kind: str
    status: str
    email: str | None = None
    dest_port: int | None = None
    outbound_tag: str | None = None
    network: str | None = None  # tcp, udp, or None for a URL (http) destination


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        if isinstance(self.request, tuple):  # UDP: (data, socket)
            data, sock = self.request
            sock.sendto(data, self.client_address)
            return
        while data := self.request.recv(4096):
            self.request.sendall(data)


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _TCP(socketserver.ThreadingTCPServer):
    daemon_threads = allow_reuse_address = True


class _UDP(socketserver.ThreadingUDPServer):
    daemon_threads = allow_reuse_address = True


class _HTTP(http.server.ThreadingHTTPServer):
    daemon_threads = True


class V2RayLab:
    """A V2Ray server writing `access_log`, its client, and the destinations, in `folder`
    (configs, the error log, the processes' output); a context manager."""

    def __init__(self, folder: Path, *, access_log: Path | None = None, timezone: str = "UTC"):
        executable = v2ray_executable()
        if executable is None:
            raise RuntimeError(INSTALL_HINT)
        self.executable = executable
        self.folder = folder
        self.access_log = access_log or folder / "access.log"
        self.timezone = timezone
        self.port: dict[str, int] = {}
        self._servers: list[socketserver.BaseServer] = []
        self._processes: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ the parts
    def _serve(self, server: socketserver.BaseServer) -> int:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers.append(server)
        return server.server_address[1]

    def _server_config(self) -> dict:
        p = self.port
        clients = [
            {"id": u.id, "alterId": 0, **({"email": u.email} if u.email else {})} for u in USERS
        ]
        inbound = {"listen": LOCALHOST}
        return {
            "log": {"access": str(self.access_log), "error": str(self.folder / "error.log"),
                    "loglevel": "warning"},
            "inbounds": [
                {**inbound, "tag": "vmess-in", "port": p["vmess"], "protocol": "vmess",
                 "settings": {"clients": clients}},
                {**inbound, "tag": "ss-in", "port": p["shadowsocks"], "protocol": "shadowsocks",
                 "settings": {"method": "aes-128-gcm", "password": self._ss_password,
                              "email": SHADOWSOCKS_EMAIL, "network": "tcp,udp"}},
                {**inbound, "tag": "socks-in", "port": p["socks"], "protocol": "socks",
                 "settings": {"auth": "noauth", "udp": True}},
                {**inbound, "tag": "http-in", "port": p["http"], "protocol": "http"},
            ],
            "outbounds": [{"protocol": "freedom", "tag": "direct"},
                          {"protocol": "blackhole", "tag": "blocked"}],
            "routing": {"rules": [{"type": "field", "port": str(p["blackholed"]),
                                   "outboundTag": "blocked"}]},
        }  # fmt: skip

    def _client_config(self) -> dict:
        p = self.port
        vnext = [{"address": LOCALHOST, "port": p["vmess"]}]
        inbounds, outbounds, rules = [], [], []

        def forward(tag: str, to: int, network: str, outbound: str) -> None:
            self.port[tag] = free_port()
            inbounds.append(
                {
                    "tag": tag,
                    "listen": LOCALHOST,
                    "port": self.port[tag],
                    "protocol": "dokodemo-door",
                    "settings": {"address": LOCALHOST, "port": to, "network": network},
                }
            )
            rules.append({"type": "field", "inboundTag": [tag], "outboundTag": outbound})

        for user in USERS:
            outbounds.append({"tag": user.key, "protocol": "vmess", "settings": {
                "vnext": [{**vnext[0], "users": [{"id": user.id, "alterId": 0}]}]}})  # fmt: skip
            forward(f"{user.key}-tcp", p["echo"], "tcp", user.key)
            forward(f"{user.key}-udp", p["udp_echo"], "udp", user.key)
            forward(f"{user.key}-blocked", p["blackholed"], "tcp", user.key)
        outbounds.append({"tag": "mux", "protocol": "vmess", "mux": {"enabled": True},
                          "settings": {"vnext": [{**vnext[0], "users": [
                              {"id": MUX_USER.id, "alterId": 0}]}]}})  # fmt: skip
        forward("mux-tcp", p["echo"], "tcp", "mux")
        outbounds.append({"tag": "ss", "protocol": "shadowsocks", "settings": {"servers": [
            {"address": LOCALHOST, "port": p["shadowsocks"], "method": "aes-128-gcm",
             "password": self._ss_password}]}})  # fmt: skip
        forward("ss-tcp", p["echo"], "tcp", "ss")
        # readiness: answered by the client itself, so that probing leaves no line at the server
        outbounds.append({"tag": "local", "protocol": "freedom"})
        forward("probe", p["echo"], "tcp", "local")
        return {"log": {"loglevel": "warning"}, "inbounds": inbounds, "outbounds": outbounds,
                "routing": {"rules": rules}}  # fmt: skip

    def _start_v2ray(self, name: str, config: dict) -> None:
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
        out = (self.folder / f"{name}.out").open("ab")
        env = {**os.environ, "TZ": self.timezone}  # V2Ray writes the local time of its zone
        self._processes.append(
            subprocess.Popen([self.executable, "-config", str(path)], stdin=subprocess.DEVNULL,
                             stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        )  # fmt: skip

    def start(self) -> "V2RayLab":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.access_log.parent.mkdir(parents=True, exist_ok=True)
        self._ss_password = uuid.uuid4().hex
        self.port["echo"] = self._serve(_TCP((LOCALHOST, 0), _Echo))
        self.port["udp_echo"] = self._serve(_UDP((LOCALHOST, 0), _Echo))
        self.port["page"] = self._serve(_HTTP((LOCALHOST, 0), _Page))
        for name in ("vmess", "shadowsocks", "socks", "http", "blackholed"):
            self.port[name] = free_port()  # blackholed: routed to `blocked`, never listened on
        self._start_v2ray("server", self._server_config())
        self._start_v2ray("client", self._client_config())
        deadline = time.monotonic() + 20
        for name in ("vmess", "http", "probe"):  # ss and socks log a probe as rejected
            while True:
                try:
                    socket.create_connection((LOCALHOST, self.port[name]), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or any(
                        p.poll() is not None for p in self._processes
                    ):
                        self.stop()
                        raise RuntimeError(
                            f"V2Ray did not start: see {self.folder}/server.out, client.out"
                        ) from None
                    time.sleep(0.1)
        return self

    def stop(self) -> None:
        for proc in self._processes:
            proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._processes, self._servers = [], []

    def __enter__(self) -> "V2RayLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ connections
    def _roundtrip(self, port: int, payload: bytes = b"ping\n", *, wait: float = 10) -> None:
        """Send and read the echo (a blackholed connection is never answered: `wait` less)."""
        with socket.create_connection((LOCALHOST, port), timeout=10) as conn:
            conn.sendall(payload)
            conn.settimeout(wait)
            with contextlib.suppress(TimeoutError):
                conn.recv(len(payload))

    def connect(self, kind: str, user: LabUser = USERS[0]) -> Expected:
        """Make one connection of `kind` (as `user` where a user is chosen); returns what its
        access-log line says once V2Ray writes it."""
        p = self.port
        if kind in ("tcp", "blocked"):
            self._roundtrip(p[f"{user.key}-{kind}"], wait=10 if kind == "tcp" else 0.3)
            tag, dest = ("direct", p["echo"]) if kind == "tcp" else ("blocked", p["blackholed"])
            return Expected(kind, "accepted", user.email, dest, tag, "tcp")
        if kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                sock.sendto(b"ping", (LOCALHOST, p[f"{user.key}-udp"]))
                sock.recvfrom(64)
            return Expected(kind, "accepted", user.email, p["udp_echo"], "direct", "udp")
        if kind == "mux":
            self._roundtrip(p["mux-tcp"])
            return Expected(kind, "accepted", MUX_USER.email, p["echo"], "direct", "tcp")
        if kind == "shadowsocks":
            self._roundtrip(p["ss-tcp"])
            return Expected(kind, "accepted", SHADOWSOCKS_EMAIL, p["echo"], "direct", "tcp")
        if kind in ("http", "connect"):
            conn = http.client.HTTPConnection(LOCALHOST, p["http"], timeout=10)
            if kind == "connect":
                conn.set_tunnel(LOCALHOST, p["page"])
                conn.request("GET", "/tunnelled")
            else:
                conn.request("GET", f"http://{LOCALHOST}:{p['page']}/page?q={random.randint(1, 9)}")
            conn.getresponse().read()
            conn.close()
            return Expected(kind, "accepted", None, p["page"], "direct", None)
        if kind in ("bad_user", "bad_socks"):
            port, payload = (p["vmess"], os.urandom(64)) if kind == "bad_user" else (
                p["socks"], b"GET / HTTP/1.1\r\n\r\n")  # fmt: skip
            with socket.create_connection((LOCALHOST, port), timeout=10) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                try:
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass
            return Expected(kind, "rejected")
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")

    def drive(self, rate: float, stop: threading.Event, *, seed: int = 7) -> Iterator[Expected]:
        """Connections at `rate` a second, a mix of every kind and user, until `stop`."""
        rng = random.Random(seed)
        weights = {"tcp": 40, "udp": 10, "blocked": 5, "mux": 10, "shadowsocks": 10, "http": 10,
                   "connect": 5, "bad_user": 2, "bad_socks": 2}  # fmt: skip
        kinds = list(weights)
        started = time.monotonic()
        for n in itertools.count(1):
            if stop.is_set():
                return
            kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
            with contextlib.suppress(OSError):  # V2Ray stopping under us: the demo goes on
                yield self.connect(kind, rng.choice(USERS))
            stop.wait(max(0.0, started + n / rate - time.monotonic()))
