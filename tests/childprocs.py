"""How the tests start the command-line tools they then interrupt, and wait for what they do."""

from __future__ import annotations

import signal
import time


def ctrl_c_as_at_a_terminal() -> None:
    """In the child before it starts (``preexec_fn``): SIGINT's default action, as a shell gives a
    foreground command. A test run launched in the background (`cmd &` without job control)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: the test would
    measure the launcher, not the code."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(condition, timeout: float = 30) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` s pass (the event, not a guess at its time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
