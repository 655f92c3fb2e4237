"""Tuning of the command's own process, before anything else is imported.

Each of these changes a library's default for this process only (the Python API leaves
them alone): imports the command never uses are skipped, and a response body moves
through httpcore and h11 with fewer copies. Each is guarded: a library of another
layout keeps its own behaviour.
"""
from __future__ import annotations

import sys
from typing import Any


def skip_unused_imports() -> None:
    """httpcore imports trio and anyio, and httpx its own command line (click, rich, pygments),
    when they are installed; this program uses none of them (together ~160 ms at every start).
    Only if nothing imported them already."""
    if "httpcore" not in sys.modules and "httpx" not in sys.modules:
        for unused in ("trio", "anyio", "httpx._main"):
            sys.modules.setdefault(unused, None)  # type: ignore[arg-type]


def system_certifi() -> None:
    """httpx imports certifi whenever it makes a transport (~30 ms: certifi loads its bundle's
    path through importlib.resources), even when it is handed an SSL context, as this
    program always does (the system's CAs and certs.d, registry.network). Only if nothing
    imported certifi already; should httpx ever ask, `where()` names the system's bundle."""
    if "certifi" in sys.modules:
        return
    import ssl
    import types

    stub = types.ModuleType("certifi", "the system's CA bundle (registry-tools never uses certifi's)")
    paths = ssl.get_default_verify_paths()
    bundle = paths.cafile or paths.openssl_cafile

    def contents() -> str:
        with open(bundle, encoding="ascii") as f:
            return f.read()

    stub.where = lambda: bundle  # type: ignore[attr-defined]
    stub.contents = contents  # type: ignore[attr-defined]
    sys.modules["certifi"] = stub


def larger_socket_reads() -> None:
    """httpcore reads a response 64 KiB at a time; a blob moves with a quarter of the CPU in
    1 MiB reads (fewer recv calls and parser steps)."""
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # pragma: no cover - another httpcore layout: keep its default
        return
    HTTP11Connection.READ_NUM_BYTES = max(HTTP11Connection.READ_NUM_BYTES, 1 << 20)


def fewer_body_copies() -> None:
    """h11 hands out a body chunk by slicing its buffer twice (two copies of every byte of a
    blob); when the chunk is the whole buffer, which is the rule for a body read 1 MiB at a
    time, the buffer itself is handed out and a new one started. Same results, byte for byte
    (tests/test_startup.py compares the two over random sequences of reads)."""
    try:
        from h11._receivebuffer import ReceiveBuffer
    except ImportError:  # pragma: no cover - another h11 layout: keep its default
        return
    if getattr(ReceiveBuffer.maybe_extract_at_most, "_whole_buffer", False):
        return
    original = ReceiveBuffer.maybe_extract_at_most

    def maybe_extract_at_most(self: Any, count: int) -> Any:
        data = self._data
        if data and count >= len(data):
            self._data = bytearray()
            self._next_line_search = 0
            self._multiple_lines_search = 0
            return data
        return original(self, count)

    maybe_extract_at_most._whole_buffer = True  # type: ignore[attr-defined]
    ReceiveBuffer.maybe_extract_at_most = maybe_extract_at_most  # type: ignore[method-assign]


def tune() -> None:
    skip_unused_imports()
    system_certifi()
    larger_socket_reads()
    fewer_body_copies()
