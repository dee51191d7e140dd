"""Stopping `up` and `demo`: the first signal stops them, a second one cannot cut the
shutdown short (a supervisor may signal the whole process group after the process itself)."""

import os
import signal
import time

import pytest

from xray_pipeline.core.runtime.signals import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_stops_and_a_second_is_ignored_while_stopping(sig):
    cleaned = False
    with pytest.raises(KeyboardInterrupt), stop_on_signals():
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # interrupted at once
            pytest.fail("the signal did not stop the block")
        finally:
            os.kill(os.getpid(), sig)  # while shutting down: nothing happens
            time.sleep(0.05)
            cleaned = True
    assert cleaned
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
