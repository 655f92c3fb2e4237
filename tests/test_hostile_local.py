"""Damaged caches, hostile local inputs, hostile error text and Ctrl-C, through the CLI.

Regression tests for the review's D1-D3, S7, H2 and the one-line errors of bad input.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from .support import imagegen
from .support.fakeregistry import serve_layout


def cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "registry_tools", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), input=stdin, timeout=120)


def one_line_error(res: subprocess.CompletedProcess, code: int = 1) -> str:
    assert res.returncode == code, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def cached_blob(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest.split(":", 1)[1]


def damage(path: Path) -> None:
    """Flip bytes in place, keeping the size (what a bad disk or a stray write does)."""
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), max(1, len(data) // 8)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def pulled(registry, facts, tmp_path):
    """A pull of single-gzip into a fresh cache: (reference, cache, first output's hash)."""
    cache = tmp_path / "cache"
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    res = cli("pull", ref, "-o", str(tmp_path / "first.tar"), "--cache-dir", str(cache), "-q")
    assert res.returncode == 0, res.stderr
    return ref, cache, res.stdout.strip()


def config_digest(cache: Path, manifest: str) -> str:
    return json.loads(cached_blob(cache, manifest).read_bytes())["config"]["digest"]


@pytest.mark.registry
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci"])
def test_d1_a_damaged_cached_config_is_never_used(pulled, facts, tmp_path, fmt):
    ref, cache, _ = pulled
    good = cli("pull", ref, "-o", str(tmp_path / "good"), "--format", fmt, "--cache-dir", str(cache), "-q")
    damage(cached_blob(cache, config_digest(cache, facts["single-gzip"]["manifest"])))
    res = cli("pull", ref, "-o", str(tmp_path / "again"), "--format", fmt, "--cache-dir", str(cache), "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout == good.stdout  # the same output, so the same hash: the config was fetched again


@pytest.mark.registry
def test_d1_prefetch_never_pins_from_a_damaged_cache(pulled, facts, registry):
    ref, cache, first = pulled
    damage(cached_blob(cache, config_digest(cache, facts["single-gzip"]["manifest"])))
    res = cli("prefetch", f"{registry.host}/test/single-gzip:v1", "--json", "--cache-dir", str(cache),
              "--final-image-name", f"{registry.host}/test/single-gzip", "--final-image-tag", "latest")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["hash"] == first


@pytest.mark.registry
@pytest.mark.parametrize("what", ["layer", "meta", "meta-size", "manifest"])
def test_d3_damage_in_the_cache_is_evicted_and_fetched_again_once(pulled, facts, tmp_path, what):
    ref, cache, first = pulled
    layer = facts["single-gzip"]["layers"][0]
    if what == "layer":
        damage(cached_blob(cache, layer))
    elif what == "manifest":
        damage(cached_blob(cache, facts["single-gzip"]["manifest"]))
    else:
        meta = cache / "meta" / "sha256" / (layer.split(":", 1)[1] + ".json")
        facts_ = json.loads(meta.read_text())
        if what == "meta":
            meta.write_text('{"diff_id": 7, "size": "big"')
        else:
            facts_["size"] += 100
            meta.write_text(json.dumps(facts_))
    for n in range(2):  # the first pull repairs; the second finds a healthy cache
        res = cli("pull", ref, "-o", str(tmp_path / f"out{n}.tar"), "--cache-dir", str(cache), "-q")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == first
        assert "Traceback" not in res.stderr
        if n == 0 and what in ("layer", "meta-size"):
            assert "cache" in res.stderr and "damaged" in res.stderr
        if n == 1:
            assert "damaged" not in res.stderr


@pytest.mark.registry
@pytest.mark.parametrize("command", ["pull", "build"])
def test_d2_an_existing_directory_that_is_not_a_layout_is_never_replaced(registry, facts, tmp_path, command):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (project / "README").write_text("mine\n")
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    if command == "pull":
        ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
        res = cli("pull", ref, "--format", "oci", "-o", str(project), "--cache-dir", str(tmp_path / "c"))
    else:
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "f").write_text("x")
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps({"name": "x", "tag": "1", "contents": [str(tmp_path / "in")]}))
        res = cli("build", str(spec), "--oci", str(project), "--cache-dir", str(tmp_path / "c"))
    assert "not an OCI layout" in one_line_error(res, 2)
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before
    assert (project / "README").read_text() == "mine\n"


@pytest.mark.registry
def test_d2_an_existing_layout_is_replaced(registry, facts, tmp_path):
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    out = tmp_path / "layout"
    for _ in range(2):
        res = cli("pull", ref, "--format", "oci", "-o", str(out), "--cache-dir", str(tmp_path / "c"), "-q")
        assert res.returncode == 0, res.stderr
    assert (out / "oci-layout").is_file()


def test_s7_registry_error_text_cannot_forge_terminal_output(httpserver, tmp_path):
    evil = "nope\x1b[2J\x1b[1;1H\nregistry-tools: wrote out.tar (all good)\r\u202eevil"
    httpserver.expect_request("/v2/").respond_with_data("{}")
    httpserver.expect_request("/v2/x/y/manifests/" + "sha256:" + "a" * 64).respond_with_data(
        json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": evil}]}), status=404)
    res = cli("pull", f"{httpserver.host}:{httpserver.port}/x/y@sha256:{'a' * 64}", "-o", str(tmp_path / "o"),
              "--cache-dir", str(tmp_path / "c"))
    line = one_line_error(res)
    assert "\x1b" not in res.stderr and "\r" not in res.stderr and "\u202e" not in res.stderr
    assert "\\x1b[2J" in line and "\\n" in line


def interrupt_after(proc: subprocess.Popen, delay: float) -> float:
    """SIGINT after `delay` seconds; how long the process took to exit after it."""
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    proc.wait(timeout=30)
    return time.monotonic() - sent


@pytest.mark.parametrize("fault", ["retry-after", "stall"])
def test_h2_ctrl_c_stops_within_a_second_during_sleeps_and_blocked_reads(httpserver, tmp_path, fault):
    lay = imagegen.Layout()
    blob, diff = lay.layer({"f": b"x" * 100000}, "none")
    img = lay.image([(blob, diff)])
    serve_layout(httpserver, lay, skip={blob.digest})
    seen: list[float] = []

    def slow(request: Request) -> Response:
        seen.append(time.monotonic())
        if fault == "retry-after":
            return Response("busy", status=429, headers={"Retry-After": "60"})
        time.sleep(20)  # a read that blocks far longer than the test waits
        return Response(b"", status=500)

    httpserver.expect_request(f"/v2/x/y/blobs/{blob.digest}").respond_with_handler(slow)
    dest = tmp_path / "img.tar"
    dest.write_bytes(b"previous")
    proc = subprocess.Popen([sys.executable, "-m", "registry_tools", "pull",
                             f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}", "-o", str(dest),
                             "--cache-dir", str(tmp_path / "c")], stderr=subprocess.PIPE, text=True)
    took = interrupt_after(proc, 2.0)
    assert proc.returncode == 130
    assert took < 1.5, f"exit took {took:.1f}s after Ctrl-C"
    assert dest.read_bytes() == b"previous"
    ended = time.monotonic()
    time.sleep(1.0)
    assert not [t for t in seen if t > ended], "requests went on after the process exited"
    assert not list((tmp_path / "c" / "tmp").iterdir())


def test_hash_must_be_a_real_hash(tmp_path):
    for bad in ("", "sha256-\u00e9\u00e9", "\u0661" * 64, "sha256:zz"):
        res = cli("pull", "localhost:1/x@sha256:" + "a" * 64, "-o", str(tmp_path / "o"), "--hash", bad)
        assert "hash" in one_line_error(res, 2)


@pytest.mark.parametrize("size", ["nan", "inf", "-1G", "1e400"])
def test_cache_prune_sizes_must_be_finite(tmp_path, size):
    res = cli("cache", "prune", "--max-size", size, "--cache-dir", str(tmp_path / "c"))
    one_line_error(res, 2)


@pytest.mark.parametrize("days", ["nan", "inf", "-3"])
def test_cache_prune_ages_must_be_finite(tmp_path, days):
    res = cli("cache", "prune", "--older-than", days, "--cache-dir", str(tmp_path / "c"))
    one_line_error(res, 2)


@pytest.mark.parametrize("content", [
    {"auths": []}, {"auths": "x"}, {"credHelpers": ["a"]}, {"credHelpers": {"r": 5}},
    {"auths": {"HOST": {"auth": 5}}}, {"credsStore": ["x"]}, "[" * 5000 + "]" * 5000,
])
def test_auth_files_of_the_wrong_shape_are_one_clear_error(httpserver, tmp_path, content):
    httpserver.expect_request("/v2/").respond_with_data("", status=401,
                                                        headers={"WWW-Authenticate": 'Basic realm="r"'})
    auth = tmp_path / "auth.json"
    host = f"{httpserver.host}:{httpserver.port}"
    auth.write_text((content if isinstance(content, str) else json.dumps(content)).replace("HOST", host))
    res = cli("prefetch", f"{host}/x", "1", "--authfile", str(auth),
              "--cache-dir", str(tmp_path / "c"))
    assert "auth.json" in one_line_error(res, 1)


def test_push_of_a_file_that_is_not_a_tar_is_one_line(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("just some text\n" * 100)
    res = cli("push", str(src), "localhost:1/x:1", "--cache-dir", str(tmp_path / "c"))
    assert "not a tar archive" in one_line_error(res, 2)


def test_repair_runs_once_around_the_engine_and_damage_found_twice_is_reported(registry, facts, tmp_path,
                                                                              monkeypatch, capsys):
    """One repair for a whole operation (no caller wraps the engine's in another), and an operation
    that finds damage again after the repair fails instead of looping."""
    from registry_tools import engine
    from registry_tools.errors import CacheDamaged

    from .helpers import run

    calls = []
    real = engine.repairing

    def counted(cache, fn):
        calls.append(fn)
        return real(cache, fn)

    monkeypatch.setattr(engine, "repairing", counted)
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "pull", f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}",
                       "-o", str(tmp_path / "o.tar"), "-q")
    assert code == 0, err
    assert len(calls) == 1  # engine.copy's, and no other around it

    class Cache:
        evicted: list = []

        def evict(self, digest):
            self.evicted.append(digest)

    runs = []

    def always_damaged():
        runs.append(1)
        raise CacheDamaged("sha256:" + "a" * 64, "test")

    cache = Cache()
    with pytest.raises(CacheDamaged):
        real(cache, always_damaged)
    assert len(runs) == 2 and cache.evicted == ["sha256:" + "a" * 64]
