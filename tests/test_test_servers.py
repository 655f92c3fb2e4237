"""The scripted servers the tests use: each test's own, gone with its test (see conftest's
`httpserver`), so no request or handler of one test meets another's."""
from __future__ import annotations

import threading
import time

import httpx
import pytest

from .support.servers import OwnServer


def test_a_stopped_server_leaves_nothing_listening_on_its_port():
    server = OwnServer()
    server.start()
    server.expect_request("/v2/").respond_with_data("{}")
    url = f"http://{server.host}:{server.port}/v2/"
    assert httpx.get(url, timeout=5).status_code == 200
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)  # a straggler of this test reaches no later test's handlers


def test_a_handler_still_answering_does_not_hold_the_stop():
    server = OwnServer()
    server.STOP_WAIT = 0.5
    server.start()
    release = threading.Event()
    server.expect_request("/stall").respond_with_handler(lambda request: (release.wait(30), "late")[1])
    url = f"http://{server.host}:{server.port}"
    caller = threading.Thread(target=lambda: httpx.get(url + "/stall", timeout=30), daemon=True)
    caller.start()
    time.sleep(0.2)  # the request is in the handler
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/v2/", timeout=5)
    release.set()
    caller.join(10)


def test_each_test_gets_a_server_of_its_own(httpserver, threaded_server):
    assert httpserver is not threaded_server and httpserver.port != threaded_server.port
    assert not httpserver.handlers and not httpserver.log  # nothing from an earlier test
