"""Rate limits a registry announces (Docker Hub's RateLimit-Remaining), against a scripted server."""
from __future__ import annotations

import json
import threading
import time

import pytest
from werkzeug.wrappers import Request, Response

from registry_tools import cli
from registry_tools.errors import RateLimitLow
from registry_tools.registry.client import TransportOptions
from registry_tools.session import Session

from .support import imagegen

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": imagegen.OCI_MANIFEST,
                       "config": {"mediaType": imagegen.OCI_CONFIG, "digest": "sha256:" + "a" * 64, "size": 2},
                       "layers": []}).encode()
DIGEST = imagegen.sha(MANIFEST)


class Budget:
    """Docker Hub's headers: every manifest GET costs one of `left`; HEADs are free."""

    def __init__(self, left: int, reset: int | None = None):
        self.left = left
        self.reset = reset
        self.gets = 0
        self.heads = 0
        self.lock = threading.Lock()

    def handle(self, request: Request) -> Response:
        with self.lock:
            if request.method == "GET":
                self.gets += 1
                self.left -= 1
            else:
                self.heads += 1
            headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": f"{self.left};w=21600",
                       "Docker-Content-Digest": DIGEST}
            if self.reset is not None:
                headers["ratelimit-reset"] = str(self.reset)
                if self.gets == 0 or request.method == "GET" and self.left < 3:
                    self.left = 100  # the window turned over
        return Response(MANIFEST if request.method == "GET" else b"", headers=headers,
                        content_type=imagegen.OCI_MANIFEST)


def serve(httpserver, budget: Budget) -> str:
    httpserver.expect_request("/v2/").respond_with_data("{}")
    httpserver.expect_request("/v2/x/y/manifests/1").respond_with_handler(budget.handle)
    httpserver.expect_request(f"/v2/x/y/manifests/{DIGEST}").respond_with_handler(budget.handle)
    return f"127.0.0.1:{httpserver.port}"


def test_manifest_gets_stop_before_the_budget_runs_out_and_heads_go_on(httpserver):
    budget = Budget(left=6)
    host = serve(httpserver, budget)
    with Session(transport=TransportOptions(rate_limit_min=3)) as s:
        reg = s.registry(host)
        for _ in range(3):  # 5, 4, 3 left after these
            reg.get_manifest("x/y", "1")
        with pytest.raises(RateLimitLow, match=r"only 3 of 100 manifest request\(s\) left.*Retry after"):
            reg.get_manifest("x/y", "1")
        assert budget.gets == 3
        assert reg.manifest_digest("x/y", "1") is not None  # a HEAD costs nothing and is not held back
    with Session(transport=TransportOptions(rate_limit_min=0)) as s:
        for _ in range(4):
            s.registry(host).get_manifest("x/y", "1")
    assert budget.gets == 7


def test_a_reset_that_comes_soon_is_waited_for(httpserver):
    budget = Budget(left=4, reset=1)
    host = serve(httpserver, budget)
    with Session(transport=TransportOptions(rate_limit_min=3)) as s:
        reg = s.registry(host)
        reg.get_manifest("x/y", "1")  # 3 left, the window resets in 1 s
        started = time.monotonic()
        reg.get_manifest("x/y", "1")
        assert time.monotonic() - started >= 1.0
    assert budget.gets == 2


def test_the_command_line_stops_with_one_line_saying_when_to_retry(httpserver, cache_dir, capsys):
    """The tag's HEAD (free) tells the budget; the manifest GET it would cost is never sent."""
    budget = Budget(left=2)
    host = serve(httpserver, budget)
    code = cli.main(["inspect", "--raw", f"{host}/x/y:1"])
    err = capsys.readouterr().err
    assert code == 1 and budget.gets == 0 and budget.heads == 1
    assert len(err.splitlines()) == 1
    assert f"{host}: only 2 of 100 manifest request(s) left" in err and "Retry after the registry's window (6 h" in err
    assert cli.main(["inspect", "--raw", f"{host}/x/y:1", "--rate-limit-min", "0"]) == 0
    assert budget.gets == 1


def test_manifest_gets_sent_at_once_do_not_spend_the_budget_past_the_minimum(threaded_server):
    """Eight GETs at once (an index's manifests are read concurrently) with 5 left and a minimum of 3:
    two go out, the rest stop, and the registry never counts below the minimum."""
    budget = Budget(left=6)
    slow = budget.handle

    def handle(request: Request) -> Response:
        time.sleep(0.2)  # all eight are asked before the first answer says what is left
        return slow(request)

    threaded_server.expect_request("/v2/").respond_with_data("{}")
    threaded_server.expect_request("/v2/x/y/manifests/1").respond_with_handler(handle)
    host = f"127.0.0.1:{threaded_server.port}"
    with Session(transport=TransportOptions(rate_limit_min=3)) as s:
        reg = s.registry(host)
        reg.get_manifest("x/y", "1")  # 5 left
        outcomes: list[str] = []

        def get() -> None:
            try:
                reg.get_manifest("x/y", "1")
                outcomes.append("sent")
            except RateLimitLow:
                outcomes.append("stopped")

        threads = [threading.Thread(target=get) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(outcomes) == ["sent"] * 2 + ["stopped"] * 6
    assert budget.gets == 3 and budget.left == 3
