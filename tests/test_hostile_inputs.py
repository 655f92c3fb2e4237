"""Hostile build inputs and hostile image documents: refused in one line, never a traceback,
and never a write outside the roots the user named.

Regression tests for the review's S5, S6, H3, L1 and the input tracebacks (T*, U1).
"""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from registry_tools.builder.closure import Graph, popularity, popularity_layers
from registry_tools.builder.spec import parse_spec
from registry_tools.errors import ManifestError, UsageError
from registry_tools.model import manifest as mf

from .support import imagegen
from .support.fakeregistry import serve_layout


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "registry_tools", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=120)


def one_line_error(res: subprocess.CompletedProcess, code: int) -> str:
    assert res.returncode == code, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def write_spec(tmp_path: Path, **keys) -> Path:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "example/app", "tag": "1", **keys}))
    return spec


def layer_names(archive: Path) -> list[str]:
    """Every member name of every layer of a docker-archive."""
    names = []
    with tarfile.open(archive) as outer:
        for m in outer.getmembers():
            if m.name.endswith("layer.tar"):
                with tarfile.open(fileobj=outer.extractfile(m)) as inner:
                    names += inner.getnames()
    return names


def test_s5_contents_cannot_write_outside_the_root_through_a_chain_of_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    # a -> b -> c -> ../../../../<outside>: each hop looks harmless on its own.
    os.symlink("b", first / "a")
    os.symlink("c", first / "b")
    os.symlink("../../../../../../../../.." + str(outside), first / "c")
    os.symlink(str(outside), first / "abs")
    for name in ("a", "abs"):
        (second / name).mkdir(parents=True)
        (second / name / "pwned").write_text("written by the image\n")
    spec = write_spec(tmp_path, contents=[str(first), str(second)], keepContentsDirlinks=True)
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"))
    assert list(outside.iterdir()) == [], "a file was written outside the build root"
    assert res.returncode == 0, res.stderr
    names = layer_names(tmp_path / "img.tar")
    # Inside the image the links resolve as in a chroot: to /outside's path under the root.
    assert any(n.endswith("pwned") for n in names)


def test_s5_dirlinks_inside_the_root_still_merge(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", first / "lib")
    (second / "lib").mkdir(parents=True)
    (second / "lib" / "libx.so").write_text("x")
    spec = write_spec(tmp_path, contents=[str(first), str(second)], keepContentsDirlinks=True)
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    names = layer_names(tmp_path / "img.tar")
    assert "usr/lib/libx.so" in names and "lib" in names


@pytest.mark.parametrize("path", ["/nix/store/..", "/nix/store/.", "/nix/store/.hidden", "/nix/store/a/b"])
def test_s6_closure_paths_must_be_store_paths(tmp_path, path):
    store = tmp_path / "store"
    store.mkdir()
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps([{"path": path, "references": []}]))
    spec = write_spec(tmp_path, closure={"graph": str(graph), "realStoreDir": str(store)})
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"))
    assert "not a path directly in /nix/store" in one_line_error(res, 2)


@pytest.mark.parametrize("kind", ["char-device", "fifo"])
def test_h3_special_files_in_contents_are_refused(tmp_path, kind):
    tree = tmp_path / "tree"
    (tree / "dev").mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(tree / "dev" / "pipe")
    else:
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root (CI runs as root)")
        os.mknod(tree / "dev" / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    spec = write_spec(tmp_path, contents=[str(tree)])
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"))
    assert "device, socket or FIFO" in one_line_error(res, 1)
    assert not (tmp_path / "img.tar").exists()


@pytest.mark.parametrize("keys", [
    {"extraCommands": "echo doomed >&2; exit 3"},
    {"fakeRootCommands": "exit 4"},
])
def test_l1_a_failed_final_layer_leaves_no_temporary_root(tmp_path, keys):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("x")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    spec = write_spec(tmp_path, contents=[str(tree)], **keys)
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"),
              env={"TMPDIR": str(tmpdir)})
    assert "failed" in one_line_error(res, 1)
    assert list(tmpdir.iterdir()) == []


def test_non_utf8_file_names_build_as_tar_allows(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    name = b"caf\xe9-latin1.txt"
    with open(os.path.join(os.fsencode(tree), name), "wb") as f:
        f.write(b"bytes\n")
    spec = write_spec(tmp_path, paths=[{"source": str(tree), "target": "/data"}])
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    names = layer_names(tmp_path / "img.tar")
    assert "data/caf\udce9-latin1.txt" in names or "data/café-latin1.txt" in names


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00-01:00", "9999-12-31T23:59:59-14:00",
                                   "1969-12-31T23:59:59Z", "+275760-09-13T00:00:00Z"])
@pytest.mark.parametrize("key", ["created", "mtime"])
def test_dates_out_of_range_are_refused(key, value):
    with pytest.raises(UsageError, match=key):
        parse_spec({"name": "x", key: value})


@pytest.mark.parametrize("paths", [5, "dir", {"source": "x"}, [5], [{"source": 5}]])
def test_paths_of_the_wrong_type_are_refused(paths):
    with pytest.raises(UsageError, match="paths"):
        parse_spec({"name": "x", "paths": paths})


def test_popularity_refuses_a_cycle_and_unknown_roots_and_survives_a_deep_graph():
    g = Graph()
    g.add("/s/a", ["/s/b"])
    g.add("/s/b", ["/s/a"])
    with pytest.raises(UsageError, match="cycle"):
        popularity(g, ["/s/a"])
    with pytest.raises(UsageError, match="not in the graph"):
        popularity(g, ["/s/nope"])
    deep = Graph()
    n = 3000  # the recursive version stopped near 1000 levels
    for i in range(n):
        deep.add(f"/s/{i:05d}-p", [f"/s/{i + 1:05d}-p"] if i + 1 < n else [])
    layers = popularity_layers(deep, 10)
    assert sum(len(layer) for layer in layers) == n


def docker_archive(tmp_path: Path, manifest: object) -> Path:
    path = tmp_path / "base.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("c.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("manifest", [
    [{"Layers": []}], [{"Config": 5, "Layers": []}], [{"Config": "c.json", "Layers": "x"}],
    [{"Config": "c.json", "Layers": [5]}], {"Config": "c.json"}, [], ["x"],
])
def test_docker_archive_from_image_of_the_wrong_shape_is_one_line(tmp_path, manifest):
    base = docker_archive(tmp_path, manifest)
    spec = write_spec(tmp_path, fromImage=str(base))
    res = cli("build", str(spec), "-o", str(tmp_path / "img.tar"), "--cache-dir", str(tmp_path / "c"))
    one_line_error(res, res.returncode if res.returncode in (1, 2) else 1)


@pytest.mark.parametrize("entry", [
    {"platform": "linux/amd64"}, {"platform": {"os": 5, "architecture": "amd64"}},
    {"annotations": ["a"]}, {"annotations": {"k": 1}}, {"urls": "https://x"},
    {"platform": {"os": "linux", "architecture": "amd64", "os.features": "sse4"}},
    {"mediaType": 7}, {"artifactType": {}},
])
def test_index_entries_with_fields_of_the_wrong_type_are_refused(entry):
    d = {"mediaType": mf.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1, **entry}
    raw = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [d]}).encode()
    with pytest.raises(ManifestError):
        mf.parse(raw)


@pytest.mark.parametrize("doc", ["manifest", "config", "index.json"])
def test_deep_json_in_documents_is_refused(tmp_path, doc):
    deep = b'{"a":' * 20000 + b"1" + b"}" * 20000
    if doc == "manifest":
        with pytest.raises(ManifestError, match="nested"):
            mf.parse(deep)
    elif doc == "config":
        with pytest.raises(ManifestError, match="nested"):
            mf.parse_config(deep)
    else:
        layout = tmp_path / "layout"
        layout.mkdir()
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (layout / "index.json").write_bytes(deep)
        res = cli("push", str(layout), "localhost:1/x:1", "--cache-dir", str(tmp_path / "c"))
        assert "nested" in one_line_error(res, 1)


def test_a_layer_that_matches_its_digest_but_is_not_gzip_is_one_line(httpserver, tmp_path):
    lay = imagegen.Layout()
    bogus = lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], b"\x1f\x8b\x08\x00" + b"not deflate at all" * 50))
    img = lay.image([(bogus, "sha256:" + "b" * 64)])
    serve_layout(httpserver, lay)
    res = cli("pull", f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}", "-o", str(tmp_path / "o.tar"),
              "--cache-dir", str(tmp_path / "c"), "-q")
    assert "not a layer we can read" in one_line_error(res, 1)
    assert not (tmp_path / "o.tar").exists()
