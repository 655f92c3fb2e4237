"""diff A B: config keys, layers and the files in them, from layouts, archives and real registries;
the exit status says whether the images differ; --files=false reads no layer."""
from __future__ import annotations

import json

import jsonschema
import pytest

from registry_tools.model.digest import Digest
from registry_tools.store.cache import BlobCache

from .helpers import IMAGES, ROOT, run
from .support import imagegen
from .support.buildinputs import make_store, spec_file

SCHEMA = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())


def diff_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, "diff", *argv, "--json")
    assert code in (0, 1), err
    doc = json.loads(out)
    jsonschema.validate(doc, {**SCHEMA, "$ref": "#/$defs/diff"})
    assert doc["same"] == (code == 0)
    return code, doc


def file_changes(doc: dict) -> dict[str, list[str]]:
    """Every file change of every layer, by kind: the paths."""
    out: dict[str, list[str]] = {"added": [], "removed": [], "changed": []}
    for layer in doc["layers"]:
        for kind in out:
            out[kind] += [f["path"] for f in layer.get("files", {}).get(kind, [])]
    return out


@pytest.fixture
def builds(tmp_path, cache_dir, capsys):
    """Two builds of one spec: the second with another /etc/motd and A=2 instead of A=1."""
    make_store(tmp_path)
    (tmp_path / "app" / "bin").mkdir(parents=True)
    (tmp_path / "app" / "bin" / "tool").write_bytes(b"tool" * 1000)
    (tmp_path / "root1" / "etc").mkdir(parents=True)
    (tmp_path / "root1" / "etc" / "motd").write_text("hello\n")
    (tmp_path / "root1" / "etc" / "hostname").write_text("same\n")
    spec = spec_file(tmp_path)
    assert run(capsys, "build", str(spec), "--oci", str(tmp_path / "a"), "-q")[0] == 0
    spec_file(tmp_path, config={"Cmd": ["/opt/app/bin/busybox", "echo", "hello from the image"], "Env": ["A=2"]})
    (tmp_path / "root1" / "etc" / "motd").write_text("bye\n")
    assert run(capsys, "build", str(spec), "--oci", str(tmp_path / "b"), "-q")[0] == 0
    return tmp_path / "a", tmp_path / "b"


def check_the_rebuild(doc: dict) -> None:
    """What the two builds differ in, and nothing else: one key, one layer, one file."""
    assert doc["manifest"] == []
    assert doc["config"] == [{"key": "config.Env.A", "path": ["config", "Env", "A"], "change": "changed",
                              "old": "1", "new": "2"}]
    [layer] = doc["layers"]
    assert layer["change"] == "changed" and layer["a"]["position"] == layer["b"]["position"] == doc["a"]["layers"]
    assert layer["a"]["digest"] != layer["b"]["digest"] and layer["a"]["size"] > 0
    assert file_changes(doc) == {"added": [], "removed": [], "changed": ["etc/motd"]}
    [motd] = layer["files"]["changed"]
    assert motd["fields"] == ["size", "sha256"] and (motd["a"]["size"], motd["b"]["size"]) == (6, 4)
    assert layer["files"]["counts"] == {"added": 0, "removed": 0, "changed": 1}


def test_two_builds_differ_in_exactly_the_file_and_the_key(builds, capsys):
    a, b = builds
    code, doc = diff_json(capsys, f"oci:{a}", f"oci:{b}")
    assert code == 1 and doc["files"]
    check_the_rebuild(doc)
    code, out, err = run(capsys, "diff", str(a), str(b))
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"A  oci:{a}  manifest sha256:") and lines[1].startswith(f"B  oci:{b}  manifest ")
    assert lines[2:4] == ["config", '  ~ config.Env.A  "1" -> "2"']
    assert lines[4] == "layers" and lines[5].startswith(f"  ~ layer {doc['a']['layers']}  sha256:")
    assert lines[6].startswith("      ~ etc/motd  size 6 -> 4, sha256 ")
    assert lines[7:] == ["the images differ: 1 config key, 1 layer, 1 file"]


def test_identical_images_exit_0_wherever_they_are(builds, target, tmp_path, capsys):
    a, _ = builds
    assert run(capsys, "copy", f"oci:{a}", f"{target.host}/same/app:1")[0] == 0
    code, doc = diff_json(capsys, f"oci:{a}", f"{target.host}/same/app:1", "--cache-dir", str(tmp_path / "cold"))
    assert code == 0 and doc["a"]["manifestDigest"] == doc["b"]["manifestDigest"]
    assert (doc["manifest"], doc["config"], doc["layers"]) == ([], [], [])
    code, out, err = run(capsys, "diff", f"oci:{a}", f"docker://{target.host}/same/app:1")
    assert code == 0 and out.splitlines()[-1] == "the images are the same"
    assert run(capsys, "diff", str(a), str(a), "-q")[:2] == (0, "")


def test_registries_read_only_the_layers_that_differ_and_none_without_files(builds, target, tmp_path, capsys):
    a, b = builds
    for layout, tag in ((a, "1"), (b, "2")):
        assert run(capsys, "copy", f"oci:{layout}", f"{target.host}/rebuilt/app:{tag}")[0] == 0
    old, new = f"{target.host}/rebuilt/app:1", f"{target.host}/rebuilt/app:2"
    cold = ["--cache-dir", str(tmp_path / "cold")]  # nothing of either image in the cache

    mark = target.log_offset()
    code, doc = diff_json(capsys, old, new, "--files=false", *cold)
    assert code == 1 and not doc["files"] and "files" not in doc["layers"][0]
    assert doc["config"][0]["key"] == "config.Env.A" and len(doc["layers"]) == 1
    blobs = [uri.rsplit("/", 1)[1] for method, uri in target.requests_since(mark) if "/blobs/" in uri]
    assert sorted(blobs) == sorted([doc["a"]["configDigest"], doc["b"]["configDigest"]])  # no layer at all
    cache = BlobCache(str(tmp_path / "cold"))
    assert not any(cache.has(Digest.parse(doc["layers"][0][side]["digest"])) for side in "ab")

    mark = target.log_offset()
    code, doc = diff_json(capsys, old, new, *cold)
    assert code == 1
    check_the_rebuild(doc)
    layer = doc["layers"][0]
    fetched = [uri.rsplit("/", 1)[1] for method, uri in target.requests_since(mark)
               if method == "GET" and "/blobs/" in uri]
    assert sorted(fetched) == sorted([layer["a"]["digest"], layer["b"]["digest"]])  # those two alone


def test_layers_are_matched_by_diff_id_then_by_position(tmp_path, cache_dir, capsys):
    """B has a layer more in the middle, stores A's last layer as zstd, and replaces A's second;
    the added layer's files are listed as added, at most --max-files of them."""
    lay = imagegen.Layout()
    base, kept = lay.layer({"bin/sh": b"sh"}), lay.layer({"etc/os-release": b"ID=test\n"})
    old_app = lay.layer({"app/main": b"v1", "app/gone": b"x"})
    new_app = lay.layer({"app/main": b"v2", "app/new": b"y"})
    extra = lay.layer({f"extra/{i}": bytes([i]) for i in range(5)})
    kept_zstd = lay.layer({"etc/os-release": b"ID=test\n"}, compression="zstd")
    lay.tag(lay.image([base, old_app, kept]), "a")
    lay.tag(lay.image([base, new_app, extra, kept_zstd]), "b")
    lay.write(tmp_path / "lay")
    code, doc = diff_json(capsys, f"oci:{tmp_path / 'lay'}:a", f"oci:{tmp_path / 'lay'}:b", "--max-files", "2")
    assert code == 1
    shape = [(x["change"], x["a"] and x["a"]["position"], x["b"] and x["b"]["position"]) for x in doc["layers"]]
    assert shape == [("changed", 2, 2), ("added", None, 3), ("recompressed", 3, 4)]
    changed, added, recompressed = doc["layers"]
    assert [f["path"] for f in changed["files"]["changed"]] == ["app/main"]
    assert [f["path"] for f in changed["files"]["added"]] == ["app/new"]
    assert [f["path"] for f in changed["files"]["removed"]] == ["app/gone"]
    assert [f["path"] for f in added["files"]["added"]] == ["extra/0", "extra/1"]
    assert added["files"]["counts"] == {"added": 5, "removed": 0, "changed": 0}
    assert "files" not in recompressed and recompressed["a"]["diffId"] == recompressed["b"]["diffId"]
    code, out, _ = run(capsys, "diff", f"oci:{tmp_path / 'lay'}:a", f"oci:{tmp_path / 'lay'}:b", "--max-files", "2")
    assert "      … and 3 more added" in out.splitlines()
    assert any(line.startswith("  = layer 3 -> 4  ") and "recompressed" in line for line in out.splitlines())
    # the other way round: the layer is removed, its files with it
    code, doc = diff_json(capsys, f"oci:{tmp_path / 'lay'}:b", f"oci:{tmp_path / 'lay'}:a")
    assert [x["change"] for x in doc["layers"]] == ["changed", "removed", "recompressed"]
    assert len(doc["layers"][1]["files"]["removed"]) == 5


def test_a_platform_of_an_index_against_an_archive(registry, facts, tmp_path, cache_dir, capsys):
    """--platform picks from an index; a docker-archive holds the same config and tars, stored
    uncompressed under a manifest of its own: every layer recompressed, no key changed."""
    src = f"{registry.host}/test/multi:v1"
    archive = tmp_path / "arm.tar"
    assert run(capsys, "copy", src, f"docker-archive:{archive}", "--platform", "linux/arm64")[0] == 0
    code, doc = diff_json(capsys, src, f"docker-archive:{archive}", "--platform", "linux/arm64")
    assert code == 1 and doc["a"]["manifestDigest"] == facts["multi"]["platforms"]["linux/arm64/v8"]
    assert doc["a"]["configDigest"] == doc["b"]["configDigest"] and doc["config"] == []
    assert {x["change"] for x in doc["layers"]} == {"recompressed"} and file_changes(doc) == {
        "added": [], "removed": [], "changed": []}
    code, doc = diff_json(capsys, f"oci:{IMAGES / 'multi'}:v1", src, "--platform", "linux/arm/v7")
    assert code == 0 and doc["a"]["platform"] == "linux/arm/v7"
    amd, arm = (f"{registry.host}/test/multi@{facts['multi']['platforms'][p]}" for p in ("linux/amd64",
                                                                                        "linux/arm64/v8"))
    code, doc = diff_json(capsys, amd, arm, "--files=false")
    assert code == 1 and {"key": "architecture", "path": ["architecture"], "change": "changed", "old": "amd64",
                          "new": "arm64"} in doc["config"]


def test_names_from_a_layer_are_printed_harmless(tmp_path, cache_dir, capsys):
    lay = imagegen.Layout()
    lay.tag(lay.image([lay.layer({"etc/a": b"1"})]), "a")
    lay.tag(lay.image([lay.layer({"etc/a": b"1", "etc/\x1b[2Jevil": b"2"})], config_extra={"config": {
        "Labels": {"org.example.note": "\x1b]0;title\x07"}}}), "b")
    lay.write(tmp_path / "lay")
    code, out, _ = run(capsys, "diff", f"oci:{tmp_path / 'lay'}:a", f"oci:{tmp_path / 'lay'}:b")
    assert code == 1 and "\x1b" not in out and "\x07" not in out
    assert "      + etc/\\x1b[2Jevil  file 1 B " in out
    assert '  + config.Labels["org.example.note"]  "\\u001b]0;title\\u0007"' in out.splitlines()


@pytest.mark.parametrize("argv, message", [
    (["--platform", "all"], "diff compares one platform's images"),
    (["--max-files", "-1"], "--max-files must be 0 or more"),
])
def test_bad_usage_is_one_line_exit_2(argv, message, cache_dir, capsys):
    layout = f"oci:{IMAGES / 'single-gzip'}:v1"
    code, out, err = run(capsys, "diff", layout, layout, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and message in err


def test_a_missing_image_is_one_line_exit_1_and_nothing_on_stdout(registry, cache_dir, capsys):
    code, out, err = run(capsys, "diff", f"{registry.host}/test/single-gzip:v1", f"{registry.host}/test/nope:v1")
    assert code == 1 and out == "" and len(err.splitlines()) == 1 and "nope" in err


def _tar_layer(lay: imagegen.Layout, members: list[dict]) -> tuple[imagegen.Blob, str]:
    """A gzip layer of tar members given as {name, type, mode, uid, gid, link, data}."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type, info.linkname = m.get("type", tarfile.REGTYPE), m.get("link", "")
            info.mode, info.uid, info.gid, info.mtime = m.get("mode", 0o644), m.get("uid", 0), m.get("gid", 0), 1000
            data = m.get("data", b"")
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    raw = buf.getvalue()
    return lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], imagegen.compress(raw, "gzip"))), imagegen.sha(raw)


def test_a_file_whose_mode_owner_or_link_target_changed_is_changed(tmp_path, cache_dir, capsys):
    """Same paths, same contents: what differs is a file's mode, another's owner and a link's target."""
    import tarfile

    lay = imagegen.Layout()
    same = {"name": "etc/same", "data": b"s"}
    old = [same, {"name": "bin/tool", "data": b"t"}, {"name": "srv/data", "data": b"d"},
           {"name": "lib/current", "type": tarfile.SYMTYPE, "link": "v1"}]
    new = [same, {"name": "bin/tool", "data": b"t", "mode": 0o755}, {"name": "srv/data", "data": b"d", "uid": 1000},
           {"name": "lib/current", "type": tarfile.SYMTYPE, "link": "v2"}]
    lay.tag(lay.image([_tar_layer(lay, old)]), "a")
    lay.tag(lay.image([_tar_layer(lay, new)]), "b")
    lay.write(tmp_path / "lay")
    code, doc = diff_json(capsys, f"oci:{tmp_path / 'lay'}:a", f"oci:{tmp_path / 'lay'}:b")
    assert code == 1
    (layer,) = doc["layers"]
    files = layer["files"]
    assert files["counts"] == {"added": 0, "removed": 0, "changed": 3}
    pairs = {pair["path"] if "path" in pair else pair["old"]["path"]: pair for pair in files["changed"]}
    assert set(pairs) == {"bin/tool", "lib/current", "srv/data"}
    text = json.dumps(files["changed"])
    assert '"0755"' in text and '"0644"' in text and '"uid": 1000' in text
    assert '"linkTarget": "v1"' in text and '"linkTarget": "v2"' in text
