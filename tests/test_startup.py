"""The command's own process tuning (registry_tools.cli.startup): same results, fewer copies."""
from __future__ import annotations

import h11
import h11._connection
from h11._receivebuffer import ReceiveBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from registry_tools.cli import startup

Held = startup.held_buffer_class(ReceiveBuffer)
CHUNKS = st.binary(max_size=64) | st.sampled_from([b"\r\n", b"a\r\n\r\nb", b"\n", b"GET / HTTP/1.1\r\n"])
OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), CHUNKS),
    st.tuples(st.just("add_bytearray"), CHUNKS),
    st.tuples(st.just("at_most"), st.integers(min_value=0, max_value=80)),
    st.tuples(st.just("line"), st.none()),
    st.tuples(st.just("lines"), st.none()),
    st.tuples(st.just("invalid_request_line"), st.none()),
), max_size=40)


def _run(ops, buf):
    out = []
    for op, arg in ops:
        if op == "add":
            buf += arg
        elif op == "add_bytearray":
            buf += bytearray(arg)
        elif op == "at_most":
            got = buf.maybe_extract_at_most(arg)
            out.append(None if got is None else bytes(got))
        elif op == "line":
            got = buf.maybe_extract_next_line()
            out.append(None if got is None else bytes(got))
        elif op == "lines":
            lines = buf.maybe_extract_lines()
            out.append(None if lines is None else [bytes(x) for x in lines])
        elif buf:
            out.append(buf.is_next_line_obviously_invalid_request_line())
        out.append((len(buf), bool(buf)))
    out.append(bytes(buf))
    return out


@settings(max_examples=400, deadline=None)
@given(ops=OPS)
def test_the_held_buffer_gives_what_h11s_own_gives(ops):
    assert _run(ops, Held()) == _run(ops, ReceiveBuffer())


def test_a_whole_chunk_is_handed_out_as_it_came():
    buf = Held()
    chunk = b"x" * 1000
    buf += chunk
    assert buf.maybe_extract_at_most(1 << 20) is chunk and len(buf) == 0 and not buf
    buf += b"yz"
    assert bytes(buf.maybe_extract_at_most(1)) == b"y" and bytes(buf) == b"z"  # a part: h11's own way


def test_new_h11_connections_use_it_and_a_body_is_never_copied():
    original = h11._connection.ReceiveBuffer
    try:
        startup.fewer_body_copies()
        conn = h11.Connection(h11.CLIENT)
        assert isinstance(conn._receive_buffer, ReceiveBuffer) and type(conn._receive_buffer) is not ReceiveBuffer
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + b"a" * 500)
        assert isinstance(conn.next_event(), h11.Response)
        assert bytes(conn.next_event().data) == b"a" * 500
        rest = b"b" * 1500
        conn.receive_data(rest)
        assert conn.next_event().data is rest  # what httpcore's bytes() and h11's join hand on unchanged
        assert isinstance(conn.next_event(), h11.EndOfMessage)
        assert bytes(rest) is rest and b"".join([rest]) is rest
    finally:
        h11._connection.ReceiveBuffer = original


def test_httpx_makes_its_transports_without_certifi_and_would_get_the_system_bundle():
    import os
    import subprocess
    import sys
    # (a site .pth of the machine may import certifi at start: forget it, as a fresh process would not have it)
    code = ("import ssl, sys; [sys.modules.pop(m) for m in list(sys.modules) if m.split('.')[0] == 'certifi']; "
            "from registry_tools.cli import startup; startup.tune(); import httpx; "
            "httpx.HTTPTransport(verify=ssl.create_default_context()); import certifi; "
            "print(certifi.where()); print(certifi.__file__ if hasattr(certifi, '__file__') else 'stub')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert os.path.isfile(out[0]) and out[1] == "stub"
