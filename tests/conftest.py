"""Shared fixtures: a real registry seeded by skopeo from the committed test images."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest

from .helpers import IMAGES
from .support.servers import own_server
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


@pytest.fixture
def httpserver():
    """A pytest-httpserver of the test's own, on a port of its own (it overrides the plugin's one
    server for the session). A request an earlier test left in flight (a Ctrl-C test's reads, a
    stalled server's retries: seen reaching the shared server during the next test) finds nothing
    listening, instead of being answered by this test's handlers, and no handler, log or state of
    one test can answer another's requests."""
    with own_server() as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test on an httpserver carries what listened on its port then, and on the machine."""
    report = yield
    if report.failed and "httpserver" in getattr(item, "fixturenames", ()):
        server = item.funcargs.get("httpserver")
        if server is not None:
            every = _ss() or ""
            served = "\n".join(f"{req.method} {req.full_path.rstrip('?')} -> {resp.status_code}"
                               for req, resp in server.log[-50:])
            report.sections.append(("httpserver", f"pid {os.getpid()}, {server.host}:{server.port}, "
                                    f"running {server.is_running()}\n{_ss(server.port)}\nall listeners:\n{every}"
                                    f"\nwhat it served (the last 50):\n{served}"))
    return report


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
    with own_server(threaded=True) as server:
        yield server

