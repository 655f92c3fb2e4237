"""Faults during pull: the result is a verified output or a clear error, never a partial file."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from registry_tools import cli
from registry_tools.api.pull import PullOptions, pull_image
from registry_tools.errors import DigestMismatch, ManifestError, SizeMismatch

from .support import imagegen
from .support.fakeregistry import serve_layout


def stored_blob(reg, digest: str) -> Path:
    hexd = digest.split(":", 1)[1]
    return reg.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in ("cache", "own-registry"))


def assert_untouched(out: Path) -> None:
    assert out.read_bytes() == b"previous contents"
    assert leftovers(out.parent) == [out.name]  # no temporary file left behind


def cached(cache: Path, digest: str) -> bool:
    return (cache / "blobs/sha256" / digest.split(":", 1)[1]).exists()


@pytest.fixture
def dest(tmp_path) -> Path:
    out = tmp_path / "img.tar"
    out.write_bytes(b"previous contents")
    return out


def test_corrupted_blob(own_registry, facts, cache_dir, dest, capsys):
    layer = facts["single-gzip"]["layers"][0]
    path = stored_blob(own_registry, layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    ref = f"{own_registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    code = cli.main(["pull", ref, "-o", str(dest), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "digest mismatch" in err and layer in err
    assert_untouched(dest)
    assert not cached(cache_dir, layer)  # a bad blob never enters the cache
    with pytest.raises(DigestMismatch):
        pull_image(PullOptions(ref, dest))


def test_truncated_blob(own_registry, facts, cache_dir, dest, capsys):
    layer = facts["single-zstd"]["layers"][1]
    path = stored_blob(own_registry, layer)
    path.write_bytes(path.read_bytes()[:-20])
    ref = f"{own_registry.host}/test/single-zstd@{facts['single-zstd']['manifest']}"
    code = cli.main(["pull", ref, "-o", str(dest), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "size mismatch" in err
    assert_untouched(dest)
    assert not cached(cache_dir, layer)
    with pytest.raises(SizeMismatch):
        pull_image(PullOptions(ref, dest))


def test_manifest_bytes_differ_from_digest(own_registry, facts, cache_dir, dest, capsys):
    index = facts["multi"]["index"]
    path = stored_blob(own_registry, index)
    raw = path.read_bytes()
    assert b'"linux"' in raw
    path.write_bytes(raw.replace(b'"linux"', b'"LINUX"', 1))  # still valid JSON, different bytes
    code = cli.main(["pull", f"{own_registry.host}/test/multi@{index}", "-o", str(dest), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "manifest" in err and "digest mismatch" in err and index in err
    assert_untouched(dest)


def test_child_manifest_bytes_differ(own_registry, facts, cache_dir, dest):
    child = facts["multi"]["platforms"]["linux/arm/v6"]
    path = stored_blob(own_registry, child)
    raw = path.read_bytes()
    m = re.search(rb'"size": (\d+)', raw)  # same length, still valid: only the digest can tell
    bumped = str(int(m.group(1)) + 1).encode()
    assert len(bumped) == len(m.group(1))
    path.write_bytes(raw[:m.start(1)] + bumped + raw[m.end(1):])
    with pytest.raises(DigestMismatch):
        pull_image(PullOptions(f"{own_registry.host}/test/multi@{facts['multi']['index']}", dest, platform="linux/arm/v6"))
    assert_untouched(dest)


def test_config_with_wrong_diff_id_is_caught(httpserver, tmp_path, cache_dir, dest):
    """A config whose diff_ids do not match the layers' content: refused before anything is written."""
    lay = imagegen.Layout()
    layer, _ = lay.layer({"a": b"content"}, "gzip")
    img = lay.image([(layer, "sha256:" + "0" * 64)])
    serve_layout(httpserver, lay)
    with pytest.raises(DigestMismatch, match="diff_id"):
        pull_image(PullOptions(f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}", dest))
    assert_untouched(dest)


def test_oversized_manifest_is_refused(httpserver, cache_dir, dest):
    big = b'{"schemaVersion":2,"manifests":[],"x":"' + b"y" * (4 * 1024 * 1024) + b'"}'
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    httpserver.expect_request("/v2/").respond_with_data("{}")
    httpserver.expect_request(f"/v2/x/y/manifests/{digest}").respond_with_data(
        big, content_type="application/vnd.oci.image.index.v1+json")
    with pytest.raises(ManifestError, match="limit"):
        pull_image(PullOptions(f"{httpserver.host}:{httpserver.port}/x/y@{digest}", dest))
    assert_untouched(dest)


def test_ctrl_c_leaves_destination_untouched(httpserver, tmp_path, dest):
    lay = imagegen.Layout()
    big, big_diff = lay.layer({"big": os.urandom(2 * 1024 * 1024)}, "none")
    img = lay.image([(big, big_diff)])
    serve_layout(httpserver, lay, slow={big.digest}, delay=0.02)  # ~10 s for the layer
    env = dict(os.environ, REGISTRY_TOOLS_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "registry_tools", "pull",
                             f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}", "-o", str(dest), "-v"],
                            stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    while not any(x.startswith("moving ") for x in seen):
        line = proc.stderr.readline()
        assert line, f"pull ended early: {seen}"
        seen.append(line)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        rest = proc.stderr.read()
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    assert code == 130
    assert "interrupted" in rest and "untouched" in rest and "Traceback" not in rest
    assert_untouched(dest)
    assert not cached(tmp_path / "cache", big.digest)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []  # the partial cache file is gone too


def test_unreachable_registry_is_one_clear_line(cache_dir, tmp_path, capsys):
    from .support.registry import free_port
    port = free_port()
    code = cli.main(["pull", f"127.0.0.1:{port}/x/y@sha256:" + "0" * 64, "-o", str(tmp_path / "x.tar")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "cannot reach registry" in err and len(err.splitlines()) == 1


def test_not_found_is_clear(registry, cache_dir, tmp_path, capsys):
    code = cli.main(["pull", f"{registry.host}/test/nothing-here@sha256:" + "0" * 64, "-o", str(tmp_path / "x"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "not found" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("kind", ["gzip-two-members", "zstd-no-size"])
def test_layers_whose_size_record_misleads(httpserver, tmp_path, cache_dir, kind):
    """A multi-member gzip records only its last member's size; a streamed zstd records none.
    The archive must still come out exact (the sizes are measured, the output written again)."""
    import gzip as gz
    import zstandard

    raw = imagegen.tar_of({"a.txt": b"first " * 5000, "b.txt": b"second " * 7000})
    if kind == "gzip-two-members":
        half = len(raw) // 2
        blob = gz.compress(raw[:half], mtime=0) + gz.compress(raw[half:], mtime=0)
        media = imagegen.LAYER_TYPES["gzip"]
    else:
        out = io.BytesIO()
        with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
            w.write(raw)
        blob = out.getvalue()
        assert zstandard.frame_content_size(blob) == -1
        media = imagegen.LAYER_TYPES["zstd"]
    lay = imagegen.Layout()
    layer = lay.add(imagegen.Blob(media, blob))
    img = lay.image([(layer, imagegen.sha(raw))])
    serve_layout(httpserver, lay)
    out_path = tmp_path / "img.tar"
    r = pull_image(PullOptions(f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}", out_path))
    with tarfile.open(out_path) as tf:
        (name,) = json.load(tf.extractfile("manifest.json"))[0]["Layers"]
        assert tf.extractfile(name).read() == raw
    assert r.hash_hex == hashlib.sha256(out_path.read_bytes()).hexdigest()


@pytest.fixture
def full_disk(tmp_path):
    """A directory on an 8 KiB tmpfs (root only: mounting needs CAP_SYS_ADMIN)."""
    where = tmp_path / "full"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(where)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode(errors='replace').strip()[:100]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_a_full_disk_is_one_line_naming_the_output_and_leaves_nothing(own_registry, facts, cache_dir, full_disk,
                                                                        fmt, capsys):
    ref = f"{own_registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    out = full_disk / ("img.tar" if fmt == "docker-archive" else "layout")
    code = cli.main(["pull", ref, "--format", fmt, "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err == (f"registry-tools: no space left on the device writing {out}; nothing was written there: "
                   "free some space or write somewhere else")
    assert list(full_disk.iterdir()) == []
