"""Signals for the long-running commands (`up`, `demo`, `ship`): the first stops them cleanly."""

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """The first SIGTERM or SIGINT raises KeyboardInterrupt while inside. SIGINT as well:
    started with `&` from a script, this process inherits an ignored SIGINT (and Python then
    leaves it ignored), yet `kill -INT` should stop it like Ctrl-C does."""

    stopping = False

    def on_signal(signum, frame):
        # only the first: a second signal (a supervisor signalling the whole group, a second
        # Ctrl-C) must not cut the shutdown short and leave children running
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
