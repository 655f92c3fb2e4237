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
    """A response body moves through h11 and httpcore without being copied in this process.

    h11 appends every received chunk to a bytearray and hands a body chunk out as a slice
    of it, which httpcore then turns into bytes: two copies of every byte of a blob.
    `_HeldBuffer` keeps a chunk that arrives into an empty buffer as it is and, when the
    reader wants all of it (the rule for a body read 1 MiB at a time), hands that same
    bytes object out: httpcore's `bytes()` and h11's join when it is sent on return it
    unchanged. Everything else is h11's own code on the same bytes (tests/test_startup.py
    compares the two over random sequences of operations). New h11 connections use it;
    h11's class is left as it is."""
    try:
        import h11._connection as connection
        from h11._receivebuffer import ReceiveBuffer
    except ImportError:  # pragma: no cover - another h11 layout: keep its default
        return
    if connection.ReceiveBuffer is ReceiveBuffer:
        connection.ReceiveBuffer = held_buffer_class(ReceiveBuffer)  # type: ignore[misc]


def held_buffer_class(base: Any) -> Any:
    """h11's ReceiveBuffer, holding a chunk received into an empty buffer without copying it."""

    class _HeldBuffer(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._held: bytes | None = None  # a chunk received into the empty buffer, not yet in _data

        def _settle(self) -> None:
            if self._held is not None:
                held, self._held = self._held, None
                base.__iadd__(self, held)

        def __iadd__(self, data: Any) -> Any:
            if self._held is None and not self._data and type(data) is bytes and data:
                self._held = data
                return self
            self._settle()
            return base.__iadd__(self, data)

        def __len__(self) -> int:
            return len(self._data) + (len(self._held) if self._held is not None else 0)

        def __bool__(self) -> bool:
            return bool(self._data) or self._held is not None

        def __bytes__(self) -> bytes:
            self._settle()
            return base.__bytes__(self)  # type: ignore[no-any-return]

        def maybe_extract_at_most(self, count: int) -> Any:
            held = self._held
            if held is not None and count >= len(held):  # the whole chunk: handed out as it came
                self._held = None
                self._next_line_search = self._multiple_lines_search = 0
                return held
            self._settle()
            return base.maybe_extract_at_most(self, count)

        def maybe_extract_next_line(self) -> Any:
            self._settle()
            return base.maybe_extract_next_line(self)

        def maybe_extract_lines(self) -> Any:
            self._settle()
            return base.maybe_extract_lines(self)

        def is_next_line_obviously_invalid_request_line(self) -> bool:
            self._settle()
            return base.is_next_line_obviously_invalid_request_line(self)  # type: ignore[no-any-return]

    return _HeldBuffer


def tune() -> None:
    skip_unused_imports()
    system_certifi()
    larger_socket_reads()
    fewer_body_copies()
