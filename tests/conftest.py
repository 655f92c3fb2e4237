"""Shared fixtures: a real registry seeded by skopeo from the committed test images."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest

from .helpers import IMAGES
from .support.registry import LocalRegistry, require_tools as _require, skopeo_push_layout

REQUIRED_TOOLS = ("docker-registry", "skopeo")


def pytest_configure(config):
    """Ctrl-C reaches the commands the tests start even where the suite itself was started with
    SIGINT ignored (a background job of a shell without job control, nohup): a Python that
    starts with SIGINT ignored never turns it into KeyboardInterrupt. A handler, unlike an
    ignored signal, is not inherited by the commands the tests run."""
    import signal
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _the_shared_server_is_ours(request):
    """The session's pytest-httpserver must still be the only listener on its port when a test
    starts: a test that finds another process there (a registry started on a port picked as free)
    says so, with what listens, instead of failing on answers its server never gave."""
    if "httpserver" not in request.fixturenames:
        return
    server = request.getfixturevalue("httpserver")
    holders = _listeners(server.port)
    if holders is not None and holders != {os.getpid()}:
        pytest.fail(f"port {server.port} of the shared httpserver is held by pids {sorted(holders)}, "
                    f"not only this one ({os.getpid()}): {_ss(server.port)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test on the shared httpserver carries what listened on its port then, and on the machine."""
    report = yield
    if report.failed and "httpserver" in getattr(item, "fixturenames", ()):
        server = item.funcargs.get("httpserver")
        if server is not None:
            every = _ss() or ""
            report.sections.append(("shared httpserver", f"pid {os.getpid()}, {server.host}:{server.port}, "
                                    f"running {server.is_running()}\n{_ss(server.port)}\nall listeners:\n{every}"))
    return report


def _listeners(port: int) -> set[int] | None:
    """The pids with a listening TCP socket on `port` (None where ss is missing)."""
    import re
    out = _ss(port)
    if out is None:
        return None
    return {int(p) for p in re.findall(r"pid=(\d+)", out)}


def _ss(port: int | None = None) -> str | None:
    """`ss`'s listening TCP sockets, of one port or all (None where ss is missing)."""
    import shutil
    import subprocess
    if not shutil.which("ss"):
        return None
    args = ["-ltnpH", f"sport = :{port}"] if port is not None else ["-ltnp"]
    return subprocess.run(["ss", *args], capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def facts() -> dict:
    return json.loads((IMAGES / "facts.json").read_text())


def seed(reg: LocalRegistry) -> None:
    skopeo_push_layout(IMAGES / "multi", "v1", f"{reg.host}/test/multi:v1")
    for name in ("single-gzip", "single-zstd", "single-none", "docker-types"):
        skopeo_push_layout(IMAGES / name, "v1", f"{reg.host}/test/{name}:v1", all_images=False)


@contextmanager
def seeded_registry(root):
    _require(*REQUIRED_TOOLS)
    reg = LocalRegistry(root).start()
    try:
        seed(reg)
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A registry shared by tests that only read from it."""
    with seeded_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def own_registry(tmp_path):
    """A registry of the test's own, for tests that damage its storage."""
    with seeded_registry(tmp_path / "own-registry") as reg:
        yield reg


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(d))
    return d


@pytest.fixture
def target(tmp_path):
    """An empty registry of the test's own, to copy, push or sign into."""
    reg = LocalRegistry(tmp_path / "target").start()
    yield reg
    reg.stop()


@pytest.fixture
def threaded_server():
    """A pytest-httpserver answering requests in parallel (the default one answers one at a time)."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()

