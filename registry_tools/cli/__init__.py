"""The `registry-tools` command: argument parsing and messages over the Python API."""
from __future__ import annotations

import errno
import logging
import os
import sys
from typing import NoReturn, Sequence

from registry_tools.cli import startup
from registry_tools.cli.parser import build_parser
from registry_tools.errors import RegistryToolsError

__all__ = ["build_parser", "main"]


def _exit_now(code: int, grace: float = 0.8) -> NoReturn:
    """Leave within about a second. The session is closed and cancelled by now, so workers stop
    at their next chunk or wake from their sleeps and remove their temporary files; give them
    `grace` seconds for that, then go, even if one is still blocked in a read (at interpreter
    exit it would otherwise be joined, for as long as its read timeout)."""
    import threading
    import time

    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class _Lines(logging.Formatter):
    """Log lines as every line of the program: `registry-tools: …`; with -v, the part of the
    program that speaks follows the name: `registry-tools (transport): GET … -> 200`."""

    def __init__(self, verbose: bool):
        super().__init__("registry-tools (%(part)s): %(message)s" if verbose else "registry-tools: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.part = record.name.removeprefix("registry_tools.")
        return super().format(record)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command's own process (not a caller of main)
        startup.tune()
    words = list(sys.argv[1:] if argv is None else argv)
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (see `registry-tools completion`)
        import argcomplete

        parser = build_parser()
        argcomplete.autocomplete(parser)
    else:
        parser = build_parser(words[0] if words else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return int(e.code or 0)
    verbose = getattr(args, "verbose", False)
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(_Lines(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[lines])
    # httpx and httpcore log whole URLs (pre-signed ones carry secrets) and headers: never let them.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("registry-tools: interrupted; the destination was left untouched", file=sys.stderr)
        if argv is None:
            _exit_now(130)
        return 130
    except BrokenPipeError:
        # The reader went away (`… --stream | head`): stop quietly, as Unix tools do.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141
    except RegistryToolsError as e:
        print(f"registry-tools: {e}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:
        print(f"registry-tools: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"registry-tools: permission denied: {e.filename}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {e.filename}" if e.filename else ""
            print(f"registry-tools: no space left on the device{where}; nothing was written there: free some "
                  "space or write somewhere else", file=sys.stderr)
        else:
            print(f"registry-tools: {e}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The command's entry point: `main`, then leave at once. Every file is closed and every
    worker stopped when `main` returns, so what is left is flushing the output; the
    interpreter's own teardown (modules, idle threads) cost about 50 ms of every run."""
    _exit_now(main(), grace=0.8)


if __name__ == "__main__":
    run()
