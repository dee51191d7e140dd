"""A webhook receiver for trying the alerts out (`xray-pipeline alerts receive`): it keeps each
request with the time it arrived and whether its X-Xray-Signature is right, and can be told to
fail the next requests (a target that is down)."""

import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xray_pipeline.core.alerts.targets import SIGNATURE_HEADER, signature


@dataclass
class Received:
    """One request: its path, headers, parsed JSON body, arrival (epoch seconds), and whether
    its signature matched (None: no secret to check it with)."""

    path: str
    headers: dict[str, str]
    body: dict
    at: float
    signed: bool | None


@dataclass
class Receiver:
    """The requests received; `failures` is how many of the next ones answer 500."""

    secret: bytes | None = None
    failures: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "Receiver":
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The requests once there are `count` of them (or all there are after `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    break
            time.sleep(0.05)
        with self.lock:
            return list(self.requests)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                if receiver.failures > 0:
                    receiver.failures -= 1
                    fail = True
                else:
                    fail = False
            if fail:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"down for the test")
                return
            signed = None
            if receiver.secret is not None:
                got = self.headers.get(SIGNATURE_HEADER, "")
                signed = hmac.compare_digest(got, signature(receiver.secret, raw))
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"unparsed": raw.decode(errors="replace")}
            with receiver.lock:
                receiver.requests.append(
                    Received(self.path, dict(self.headers), body, time.time(), signed)
                )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok":true}')

        def log_message(self, *args) -> None:  # the caller reports what it received
            pass

    return Handler
