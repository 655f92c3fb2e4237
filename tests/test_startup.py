"""The command's own process tuning (registry_tools.cli.startup): same results, fewer copies."""
from __future__ import annotations

import pytest
from h11._receivebuffer import ReceiveBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from registry_tools.cli import startup

OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.binary(max_size=64) | st.sampled_from([b"\r\n", b"a\r\n\r\nb", b"\n"])),
    st.tuples(st.just("at_most"), st.integers(min_value=0, max_value=80)),
    st.tuples(st.just("line"), st.none()),
    st.tuples(st.just("lines"), st.none()),
), max_size=40)


@pytest.fixture(scope="module")
def both():
    """(the original maybe_extract_at_most, the tuned one); the class is left as it was."""
    original = ReceiveBuffer.maybe_extract_at_most
    try:
        startup.fewer_body_copies()
        tuned = ReceiveBuffer.maybe_extract_at_most
    finally:
        ReceiveBuffer.maybe_extract_at_most = original
    assert tuned is not original
    return original, tuned


def _run(ops, extract_at_most):
    buf, out = ReceiveBuffer(), []
    for op, arg in ops:
        if op == "add":
            buf += arg
        elif op == "at_most":
            got = extract_at_most(buf, arg)
            out.append(None if got is None else bytes(got))
        elif op == "line":
            got = buf.maybe_extract_next_line()
            out.append(None if got is None else bytes(got))
        else:
            lines = buf.maybe_extract_lines()
            out.append(None if lines is None else [bytes(x) for x in lines])
        out.append(bytes(buf))
    return out


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_tuned_body_reads_give_what_h11_gives(both, ops):
    original, tuned = both
    assert _run(ops, tuned) == _run(ops, original)


def test_a_whole_buffer_is_handed_out_without_a_copy(both):
    _, tuned = both
    buf = ReceiveBuffer()
    buf += b"x" * 1000
    inner = buf._data
    assert tuned(buf, 1 << 20) is inner and len(buf) == 0
    buf += b"yz"
    assert bytes(tuned(buf, 1)) == b"y" and bytes(buf) == b"z"  # a part: h11's own way


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
