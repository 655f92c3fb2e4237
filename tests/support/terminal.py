"""The command on a pseudo-terminal (its stderr, where progress is drawn), and what a terminal
shows of the bytes it wrote."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
CSI = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z])")


@dataclass
class Terminal:
    """A running command whose stdin and stderr are a terminal (stdout a pipe, as when a script
    reads the result); `raw` is every byte it wrote to the terminal so far."""

    proc: subprocess.Popen
    reader: threading.Thread
    chunks: list[bytes] = field(default_factory=list)

    @property
    def raw(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def wait_for(self, seen: Callable[[str], bool], timeout: float = 60) -> None:
        """Until the terminal has shown what `seen` looks for (AssertionError if it never does)."""
        deadline = time.monotonic() + timeout
        while not seen(self.raw):
            if time.monotonic() > deadline or not self.reader.is_alive():
                raise AssertionError(f"never seen on the terminal; it shows:\n{self.raw!r}")
            time.sleep(0.02)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """The exit status and stdout, once the command ended and its terminal output is read."""
        out, _ = self.proc.communicate(timeout=timeout)
        self.reader.join(10)
        return self.proc.returncode, out


def start(argv: list[str], columns: int = 0, env: dict[str, str] | None = None) -> Terminal:
    """`registry-tools ARGV` on a new terminal `columns` wide (0: one that does not say its size,
    as many a terminal a command runs on under `script`, a CI runner or a container does)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40 if columns else 0, columns, 0, 0))
    environ = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", **(env or {}))
    environ.pop("COLUMNS", None)
    environ.pop("LINES", None)
    proc = subprocess.Popen([sys.executable, "-m", "registry_tools", *argv], stdin=slave, stdout=subprocess.PIPE,
                            stderr=slave, env=environ, text=True)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command and every child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return Terminal(proc, reader, chunks)


def screen(raw: str) -> list[str]:
    """The lines a terminal as wide as the longest line shows after these bytes: carriage returns,
    line feeds, erasing (CSI K, CSI J) and cursor moves applied; colours and modes ignored."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        m = CSI.match(raw, i) if ch == "\x1b" else None
        if m:
            params, op = m.group(1), m.group(2)
            n = int(params) if params.isdigit() else None
            if op == "K":
                lines[row] = lines[row][:col] if n in (None, 0) else ([" "] * col if n == 1 else [])
            elif op == "J":
                if n in (None, 0):
                    lines[row] = lines[row][:col]
                    del lines[row + 1:]
                elif n == 2:
                    lines = [[] for _ in lines]
            elif op == "A":
                row = max(0, row - (n or 1))
            elif op == "B":
                row += n or 1
            elif op == "C":
                col += n or 1
            elif op == "D":
                col = max(0, col - (n or 1))
            elif op == "G":
                col = (n or 1) - 1
            i = m.end()
            while len(lines) <= row:
                lines.append([])
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            while len(lines) <= row:
                lines.append([])
        elif ch == "\x1b":  # another escape (a mode, a title): skipped
            i += 2
            continue
        elif ch >= " " or ch == "\t":
            line = lines[row]
            while len(line) < col:
                line.append(" ")
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    shown = ["".join(line).rstrip() for line in lines]
    while shown and not shown[-1]:
        shown.pop()
    return shown


def frames(raw: str) -> list[str]:
    """Each state of the progress line (what stood on it before the next carriage return)."""
    return [f.replace("\x1b[K", "").strip() for f in raw.split("\r") if "/" in f and "[" in f]
