"""How the tests start the command-line tools they then interrupt."""

from __future__ import annotations

import signal


def ctrl_c_as_at_a_terminal() -> None:
    """In the child before it starts (``preexec_fn``): SIGINT's default action, as a shell gives a
    foreground command. A test run launched in the background (`cmd &` without job control)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: the test would
    measure the launcher, not the code."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
