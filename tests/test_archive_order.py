"""The order of the members of every tar we write, read back with Python's tarfile and checked
against the rules README and SPEC state, and against listings written out here by hand:

- an oci-archive: the directories `blobs/` and `blobs/sha256/`, then every file in bytewise
  path order (the blobs by digest, then index.json, oci-layout);
- a docker-archive: the layers in the manifest's order (each once), then the config, then
  manifest.json, then repositories;
- a layer tar a build packs: every entry in bytewise path order, each directory before
  what it holds (SPEC: "Layer tars are deterministic: entries sorted").

A guard independent of the golden hashes in tests/test_pull_registry.py and of the code's own
sorting: the expected orders are computed here, or written down.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from .helpers import IMAGES, run
from .support import imagegen

MULTI = IMAGES / "multi"

# `copy oci:fixtures/images/multi:v1 oci-archive:… --platform linux/amd64`, member by member.
AMD64_OCI_ARCHIVE = [
    ("blobs", "dir"),
    ("blobs/sha256", "dir"),
    ("blobs/sha256/1583c09efb5c25406208d1cf8546eef94650afa0d64c6f4ef344b4ad918a69a7", "file"),  # a layer
    ("blobs/sha256/8580aa3cc04619358e650a62439209342ad720efe84118a90292fb2c563d01c4", "file"),  # the config
    ("blobs/sha256/8e99b4c3bb766dbb005d706d3d6d9be44b1e8e7928a27c51d6b19f7e255ab309", "file"),  # the manifest
    ("blobs/sha256/b694a1588e0bfedcc56fcbd8434ae0dc284094fe717542a2d9fa3716e7e51feb", "file"),  # a layer
    ("index.json", "file"),
    ("oci-layout", "file"),
]
# The same image as a docker-archive: the layers by diff_id in the manifest's order (not sorted).
AMD64_DOCKER_ARCHIVE = [
    "84eacba573ce30cc17f0567a5dcdf4f39229a88a01376fc37d44d7913807c046.tar",
    "496cc5835abcffd97c562ee6a17a9907ea5caf3c2bc8e4a83cd8cc886ccf6ddf.tar",
    "8580aa3cc04619358e650a62439209342ad720efe84118a90292fb2c563d01c4.json",
    "manifest.json",
    "repositories",
]
# Names whose bytewise order differs from per-directory order ("a/b" after "a-b" and "a.b"), from
# code-point order (b"\xef\xbd\x86" before b"\xff", which is not UTF-8) and from case-folded order.
TRICKY = [b"B/x", b"Z", b"a-b", b"a.b", b"a/b", b"a/c/d", b"a0", b"ab", "é".encode(), "ｆ".encode(), b"\xff"]
TRICKY_LAYER = [b"B", b"B/x", b"Z", b"a", b"a-b", b"a.b", b"a/b", b"a/c", b"a/c/d", b"a0", b"ab", b"\xc3\xa9",
                b"\xef\xbd\x86", b"\xff"]


def members(path: Path | bytes) -> list[tarfile.TarInfo]:
    fileobj = io.BytesIO(path) if isinstance(path, bytes) else None
    with tarfile.open(None if fileobj else path, fileobj=fileobj, encoding="utf-8", errors="surrogateescape") as tf:
        return tf.getmembers()


def raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def assert_oci_archive_order(path: Path) -> list[str]:
    """The oci-archive rule, from the names alone; returns the names."""
    got = members(path)
    names = [m.name for m in got]
    assert [(m.name, m.isdir()) for m in got[:2]] == [("blobs", True), ("blobs/sha256", True)]
    files = names[2:]
    assert all(m.isfile() for m in got[2:])
    assert files == sorted(files, key=raw) and len(set(files)) == len(files)
    assert files[-2:] == ["index.json", "oci-layout"]
    assert all(n.startswith("blobs/sha256/") and len(n) == len("blobs/sha256/") + 64 for n in files[:-2])
    return names


def assert_docker_archive_order(path: Path) -> list[str]:
    got = members(path)
    names = [m.name for m in got]
    with tarfile.open(path) as tf:
        (entry,) = json.load(tf.extractfile("manifest.json"))
    layers = list(dict.fromkeys(entry["Layers"]))  # each layer once, where it first appears
    assert names == layers + [entry["Config"], "manifest.json", "repositories"]
    return names


def assert_layer_order(data: bytes) -> list[bytes]:
    """The layer tar rule: bytewise path order, every directory before what it holds."""
    names = [raw(m.name).rstrip(b"/") for m in members(data)]
    assert names == sorted(names) and len(set(names)) == len(names)
    for i, n in enumerate(names):
        parents = [n[:k] for k in range(len(n)) if n[k:k + 1] == b"/"]
        assert all(p in names[:i] for p in parents), (n, parents)
    return names


def test_an_oci_archive_of_one_image_lists_its_members_as_written_down(tmp_path, cache_dir, capsys):
    out = tmp_path / "amd64.tar"
    code, _, err = run(capsys, "copy", f"oci:{MULTI}:v1", f"oci-archive:{out}", "--platform", "linux/amd64", "-q")
    assert code == 0, err
    assert [(m.name, "dir" if m.isdir() else "file") for m in members(out)] == AMD64_OCI_ARCHIVE
    assert_oci_archive_order(out)


def test_an_oci_archive_of_a_whole_index_is_in_bytewise_path_order(tmp_path, cache_dir, capsys):
    out = tmp_path / "all.tar"
    code, _, err = run(capsys, "copy", f"oci:{MULTI}:v1", f"oci-archive:{out}", "-q")
    assert code == 0, err
    names = assert_oci_archive_order(out)
    assert {n.rsplit("/", 1)[1] for n in names[2:-2]} == set(os.listdir(MULTI / "blobs" / "sha256"))


def test_a_pulled_oci_archive_keeps_the_order(registry, facts, tmp_path, cache_dir, capsys):
    """The same rule through a pull from a registry (the layers land in any order)."""
    for plat in ("linux/amd64", "linux/arm/v6"):
        out = tmp_path / f"{plat.replace('/', '-')}.tar"
        code, _, err = run(capsys, "pull", f"{registry.host}/test/multi@{facts['multi']['index']}",
                           "--platform", plat, "--format", "oci-archive", "-o", str(out), "-q", "--jobs", "4")
        assert code == 0, err
        assert_oci_archive_order(out)
    code, _, err = run(capsys, "pull", f"{registry.host}/test/multi@{facts['multi']['index']}", "--all",
                       "--format", "oci-archive", "-o", str(tmp_path / "all.tar"), "-q")
    assert code == 0, err
    assert_oci_archive_order(tmp_path / "all.tar")


def test_a_docker_archive_lists_layers_then_config_then_manifest_then_repositories(tmp_path, cache_dir, capsys):
    out = tmp_path / "amd64.tar"
    code, _, err = run(capsys, "copy", f"oci:{MULTI}:v1", f"docker-archive:{out}", "--platform", "linux/amd64",
                       "-q")
    assert code == 0, err
    assert assert_docker_archive_order(out) == AMD64_DOCKER_ARCHIVE


def test_a_docker_archive_of_layers_out_of_order_and_repeated(tmp_path, cache_dir, capsys):
    """Layers whose diff_ids sort otherwise than the manifest lists them, one of them twice."""
    lay = imagegen.Layout()
    layers = [lay.layer({f"etc/{i}": f"layer {i}\n".encode() * 50}, "gzip") for i in range(3)]
    order = sorted(layers, key=lambda ld: ld[1], reverse=True)
    lay.tag(lay.image(order + [order[0]]), "v1")
    root = lay.write(tmp_path / "layout")
    out = tmp_path / "img.tar"
    code, _, err = run(capsys, "copy", f"oci:{root}:v1", f"docker-archive:{out}", "-q")
    assert code == 0, err
    names = assert_docker_archive_order(out)
    assert names[:3] == [d.split(":")[1] + ".tar" for _, d in order]


@pytest.fixture
def tricky_spec(tmp_path) -> Path:
    root = tmp_path / "root"
    for name in TRICKY:
        p = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b"x")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "example/order", "tag": "1", "contents": [str(root)],
                                "architecture": "amd64"}))
    return spec


def layer_tars(archive: Path) -> list[bytes]:
    with tarfile.open(archive) as tf:
        (entry,) = json.load(tf.extractfile("manifest.json"))
        return [tf.extractfile(n).read() for n in entry["Layers"]]


def test_a_built_layer_lists_its_entries_in_bytewise_path_order(tricky_spec, tmp_path, cache_dir, capsys):
    out = tmp_path / "img.tar"
    code, _, err = run(capsys, "build", str(tricky_spec), "-o", str(out), "-q")
    assert code == 0, err
    assert_docker_archive_order(out)
    (layer,) = layer_tars(out)
    assert assert_layer_order(layer) == TRICKY_LAYER


def test_a_streamed_build_writes_the_same_order(tricky_spec, tmp_path, cache_dir):
    """--stream writes the archive front to back (the file is written at offsets): the same members."""
    import subprocess
    import sys

    streamed = tmp_path / "streamed.tar"
    with open(streamed, "wb") as f:
        subprocess.run([sys.executable, "-m", "registry_tools", "build", str(tricky_spec), "--stream", "-q"],
                       stdout=f, check=True, env=dict(os.environ, REGISTRY_TOOLS_CACHE=str(cache_dir)))
    assert_docker_archive_order(streamed)
    (layer,) = layer_tars(streamed)
    assert assert_layer_order(layer) == TRICKY_LAYER


def test_a_built_oci_archive_keeps_both_orders(tricky_spec, tmp_path, cache_dir, capsys):
    out = tmp_path / "img.oci.tar"
    code, _, err = run(capsys, "build", str(tricky_spec), "--format", "oci-archive", "-o", str(out), "-q")
    assert code == 0, err
    assert_oci_archive_order(out)
    with tarfile.open(out) as tf:
        index = json.load(tf.extractfile("index.json"))
        manifest = json.load(tf.extractfile("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
        (desc,) = manifest["layers"]
        blob = tf.extractfile("blobs/sha256/" + desc["digest"].split(":")[1]).read()
    import gzip

    assert assert_layer_order(gzip.decompress(blob)) == TRICKY_LAYER
