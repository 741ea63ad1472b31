"""What both command-line tools share: one-line failures, opening a build, and running a typer app
so that only bugs can show a traceback."""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn


def fail(console, message: str, code: int = 2) -> NoReturn:
    """One red line on ``console`` and exit ``code`` (2: the user's input is wrong)."""
    import typer

    console.print(f"[red]error:[/red] {_text(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _text(message) -> str:
    """A message as rich shows it verbatim: a file name such as ``a[/]b.wav`` in it is text, not
    (broken) markup."""
    from rich.markup import escape

    return escape(str(message))


def require_build(console, location: str, marker: str = "stats.json", hint: str = "") -> None:
    """Exit with one line unless ``location`` (a folder or URL) holds a build's ``marker`` file."""
    from . import storage
    from .readers import build_file

    try:
        found = storage.exists(build_file(location, marker))
    except (ValueError, OSError) as e:
        fail(console, f"{location}: {e}")
    if not found:
        fail(console, f"{location} holds no s2i-data build (no {marker})" + (f": {hint}" if hint else ""))


def run_app(app, console, interrupted: str, expected: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``app``; Ctrl-C outside a command's own handling exits 130 with ``interrupted``; an
    ``expected`` error (bad input found deep inside, e.g. a refused checkpoint) exits 1 with its
    one line; anything else exits 1 with one line too (``S2I_DEBUG=1`` shows the traceback)."""
    try:
        app()
    except KeyboardInterrupt:
        console.print(interrupted)
        sys.exit(130)
    except expected as e:
        if os.environ.get("S2I_DEBUG"):
            raise
        console.print(f"[red]error:[/red] {_text(e)}", highlight=False)
        sys.exit(1)
    except Exception as e:  # a bug, not bad input
        if os.environ.get("S2I_DEBUG"):
            raise
        console.print(f"[red]internal error:[/red] {type(e).__name__}: {_text(e)} "
                      "(set S2I_DEBUG=1 for the traceback; please report it)", highlight=False)
        sys.exit(1)
    finally:
        # Nothing is left to collect at exit: moving every object out of the collector's reach
        # skips the full collection at interpreter teardown (~0.13 s of a build command's start-up
        # cost, measured by bench/build.py).
        gc.freeze()
