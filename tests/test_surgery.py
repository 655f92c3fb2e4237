"""mutate, append, flatten, rebase and check-base against real registries; every output read
back by skopeo, podman and umoci; the registry's log shows what a transform sends."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import jsonschema
import pytest

from .helpers import IMAGES, ROOT, run, touch_and_chown, umoci_tree

SCHEMA = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
BLOB_WRITES = ("POST", "PATCH", "PUT")


def json_of(capsys, kind: str, *argv: str) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    doc = json.loads(out)
    jsonschema.validate(doc, {**SCHEMA, "$ref": f"#/$defs/{kind}"})
    return doc


def raw_of(ref: str, *flags: str) -> dict:
    res = subprocess.run(["skopeo", "inspect", *flags, ref], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def reg(ref: str, what: str = "--raw") -> dict:
    return raw_of(f"docker://{ref}", what, "--tls-verify=false")


def layout_manifest(layout: Path) -> tuple[dict, dict]:
    """The manifest and config of a layout's one image."""
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / entry["digest"].split(":")[1]).read_bytes())
    return manifest, json.loads((blob / manifest["config"]["digest"].split(":")[1]).read_bytes())


def layer_tar(layout: Path, desc: dict) -> tarfile.TarFile:
    data = (layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_bytes()
    assert data[4:8] == b"\0\0\0\0"  # gzip's mtime: none
    return tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)))


def podman_load(archives: list[Path]) -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    out = ""
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:  # podman: runroot under 50 chars
        base = ["podman", "--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]
        for archive in archives:
            res = subprocess.run([*base, "load", "-i", str(archive)], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
            out += res.stdout
        res = subprocess.run([*base, "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                             text=True)
        return out + res.stdout


@pytest.fixture
def overlay(tmp_path) -> Path:
    """A directory to append: a file, a subdirectory, a symbolic link."""
    d = tmp_path / "overlay"
    (d / "etc" / "app").mkdir(parents=True)
    (d / "etc" / "app" / "app.conf").write_text("port = 8080\n")
    (d / "etc" / "motd").write_text("appended\n")
    os.symlink("app/app.conf", d / "etc" / "conf")
    return d


def whiteout_tar(path: Path) -> Path:
    """A layer as a tar: deletes one file of single-gzip's first layer (a whiteout), hides the rest of
    its second layer's directory (an opaque marker) and adds a file there, owned by 1234."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (("data/single-gzip-0/.wh.file1.txt", b""), ("data/single-gzip-1/.wh..wh..opq", b""),
                           ("data/single-gzip-1/new.txt", b"new\n")):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mtime = len(data), 1234, 1234, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


# --- mutate ----------------------------------------------------------------------------------------

def test_mutate_between_registries_sends_one_config_blob_and_one_manifest(registry, target, facts, cache_dir,
                                                                          capsys):
    assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{target.host}/app/img:v1")[0] == 0
    before = reg(f"{target.host}/app/img:v1", "--config")
    mark = target.log_offset()
    doc = json_of(capsys, "mutate", "mutate", f"{target.host}/app/img:v1", f"{target.host}/app/img:v2",
                  "--env", "A=2", "--env", "PATH=/opt/bin", "--entrypoint", '["/bin/sh", "-c"]', "--cmd", "echo hi",
                  "--user", "1000:1000", "--workdir", "/srv", "--label", "org.example.team=web", "--expose", "8080",
                  "--expose", "53/udp", "--annotation", "org.example.note=edited", "--created",
                  "2024-01-02T03:04:05+01:00")
    layers = facts["single-gzip"]["layers"]
    manifest = reg(f"{target.host}/app/img:v2")
    config_digest = manifest["config"]["digest"]
    assert [d["digest"] for d in manifest["layers"]] == layers
    assert manifest["annotations"] == {"org.example.note": "edited"}
    sent = [r for r in target.requests_since(mark) if r != ("GET", "/v2/")]
    blob_requests = [(m, u) for m, u in sent if "/blobs/" in u]
    # each layer: a HEAD that finds it there, nothing else (never downloaded, never uploaded)
    for layer in layers:
        assert [m for m, u in blob_requests if layer in u] == ["HEAD"]
    writes = [(m, u.split("?")[0]) for m, u in blob_requests if m in BLOB_WRITES]
    assert [m for m, _ in writes if m != "PATCH"] == ["POST", "PUT"]  # one upload: the config
    assert [u for m, u in blob_requests if m == "PUT"][0].endswith(f"digest={config_digest}")
    puts = {u.rsplit("/", 1)[1] for m, u in sent if m == "PUT" and "/manifests/" in u}
    assert puts == {doc["digest"], "v2"}  # one manifest, by its digest and its tag
    assert (doc["blobsUploaded"], doc["blobsSkipped"], doc["manifestsPut"]) == (1, 2, 2)
    assert doc["bytesSent"] == manifest["config"]["size"]
    config = reg(f"{target.host}/app/img:v2", "--config")
    run_config = config["config"]
    assert "A=2" in run_config["Env"] and "PATH=/opt/bin" in run_config["Env"]
    assert (run_config["Entrypoint"], run_config["Cmd"]) == (["/bin/sh", "-c"], ["echo", "hi"])
    assert (run_config["User"], run_config["WorkingDir"]) == ("1000:1000", "/srv")
    assert run_config["Labels"] == {"org.example.team": "web"}
    assert run_config["ExposedPorts"] == {"53/udp": {}, "8080/tcp": {}}
    assert config["created"] == "2024-01-02T02:04:05Z"
    assert config["rootfs"] == before["rootfs"] and config.get("history") == before.get("history")


def test_mutate_into_another_repository_of_the_registry_mounts_the_layers(registry, facts, cache_dir, capsys):
    mark = registry.log_offset()
    doc = json_of(capsys, "mutate", "mutate", f"{registry.host}/test/single-gzip:v1",
                  f"{registry.host}/surgery/mutated:v1", "--env-unset", "PATH", "--label", "a=b")
    assert (doc["blobsMounted"], doc["blobsUploaded"]) == (2, 1)
    sent = registry.requests_since(mark)
    for layer in facts["single-gzip"]["layers"]:
        assert {m for m, u in sent if layer in u} == {"HEAD", "POST"}  # HEAD, then a mount
        assert all("mount=" in u for m, u in sent if layer in u and m == "POST")


def test_mutate_converts_media_types_and_refuses_what_cannot_be_converted(registry, target, tmp_path, facts,
                                                                          cache_dir, capsys):
    src = f"{registry.host}/test/single-gzip:v1"
    doc = json_of(capsys, "mutate", "mutate", src, f"oci:{tmp_path / 'docker'}:v1", "--format", "docker")
    manifest, _ = layout_manifest(tmp_path / "docker")
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {d["mediaType"] for d in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert [d["digest"] for d in manifest["layers"]] == facts["single-gzip"]["layers"]  # the same bytes
    # and back: the same config, OCI names again
    back = json_of(capsys, "mutate", "mutate", f"oci:{tmp_path / 'docker'}:v1", f"{target.host}/back/img:v1",
                   "--format", "oci")
    raw = reg(f"{target.host}/back/img:v1")
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json" and back["digest"] != doc["digest"]
    assert {d["mediaType"] for d in raw["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert reg(f"{target.host}/back/img:v1", "--config") == reg(src, "--config")
    code, out, err = run(capsys, "mutate", f"{registry.host}/test/single-zstd:v1", f"oci:{tmp_path / 'z'}:v1",
                         "--format", "docker")
    assert code == 2 and out == "" and "zstd" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "mutate", src, f"oci:{tmp_path / 'y'}:v1", "--format", "docker", "--annotation", "a=b")
    assert code == 2 and "annotation" in err
    for bad in (["--env", "NOEQUALS"], ["--expose", "99999"], ["--created", "yesterday"], ["--cmd", "[1, 2]"]):
        code, _, err = run(capsys, "mutate", src, f"oci:{tmp_path / 'x'}:v1", *bad)
        assert code == 2 and len(err.strip().splitlines()) == 1, bad
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


def test_mutate_created_now_is_the_time_of_the_run_in_utc(registry, tmp_path, cache_dir, capsys, monkeypatch):
    from datetime import datetime, timezone

    monkeypatch.setenv("TZ", "America/St_Johns")  # -03:30: the written time is UTC whatever the zone
    before = datetime.now(timezone.utc).replace(microsecond=0)
    code, _, err = run(capsys, "mutate", f"{registry.host}/test/single-gzip:v1", f"oci:{tmp_path / 'now'}:v1",
                       "--created", "now")
    after = datetime.now(timezone.utc)
    assert code == 0, err
    _, config = layout_manifest(tmp_path / "now")
    got = datetime.strptime(config["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= got <= after, (before, config["created"], after)


# --- every command: registry -> layout -> docker-archive, read by skopeo, umoci and podman ------------

EDITS = {"mutate": ["--env", "EDITED=1", "--cmd", "/bin/true"], "append": ["--layer", "OVERLAY"], "flatten": []}


def test_every_edit_reads_the_same_from_any_endpoint_to_any(registry, target, tmp_path, overlay, cache_dir,
                                                           capsys):
    """Each command from a registry to a registry, to an OCI layout (umoci unpacks the tree expected)
    and from a layout to a docker-archive (podman loads it): the same digest each way."""
    src = f"{registry.host}/test/single-gzip:v1"
    shutil.copytree(IMAGES / "single-gzip", tmp_path / "single-gzip")
    original, _ = umoci_tree(tmp_path / "single-gzip", "v1", tmp_path)
    archives = []
    for command, flags in EDITS.items():
        flags = [str(overlay) if f == "OVERLAY" else f for f in flags]
        pushed = json_of(capsys, command, command, src, f"{target.host}/every/{command}:v1", *flags)
        layout = tmp_path / f"{command}-layout"
        written = json_of(capsys, command, command, src, f"oci:{layout}:v1", *flags)
        archive = tmp_path / f"{command}.tar"
        archived = json_of(capsys, command, command, f"oci:{IMAGES / 'single-gzip'}:v1",
                           f"docker-archive:{archive}:surgery/{command}:v1", *flags)
        assert pushed["digest"] == written["digest"] == archived["digest"], command
        assert reg(f"{target.host}/every/{command}:v1")["layers"] == \
            raw_of(f"oci:{layout}:v1", "--raw")["layers"]
        assert raw_of(f"docker-archive:{archive}")["Layers"]
        # and on from the docker-archive to an oci-archive
        assert run(capsys, command, f"docker-archive:{archive}", f"oci-archive:{tmp_path / command}.oci.tar:v1",
                   *flags)[0] == 0
        assert raw_of(f"oci-archive:{tmp_path / command}.oci.tar:v1", "--raw")["layers"]
        tree, runtime = umoci_tree(layout, "v1", tmp_path)
        manifest, config = layout_manifest(layout)
        if command == "mutate":
            assert tree == original and "EDITED=1" in runtime["process"]["env"]
            assert runtime["process"]["args"] == ["/bin/true"]
        elif command == "append":
            assert tree == {**original, "etc/app": "/", "etc/app/app.conf": "port = 8080\n", "etc/motd": "appended\n",
                            "etc/conf": "-> app/app.conf"}
            assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 3
        else:
            assert tree == original and len(manifest["layers"]) == 1 and len(config["history"]) == 1
        archives.append(archive)
    loaded = podman_load(archives)
    for command in EDITS:
        assert f"surgery/{command}:v1" in loaded


def test_mutate_into_podman_takes_podmans_own_options(tmp_path, facts, cache_dir, capsys):
    """--podman-arg reaches `podman load`: podman holds the edited image under the name given, its ID
    the config the same edit writes to a layout."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    src, edits = f"oci:{IMAGES / 'single-gzip'}:v1", ["--env", "EDITED=1", "--label", "org.example.team=web"]
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:  # podman: runroot under 50 chars
        storage = ["--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]
        doc = json_of(capsys, "mutate", "mutate", src, "podman:localhost/surgery/mutated:1", *edits,
                      *(f"--podman-arg={a}" for a in storage))
        res = subprocess.run(["podman", *storage, "image", "inspect", "localhost/surgery/mutated:1"],
                             capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    [inspected] = json.loads(res.stdout)
    assert doc["loaded"] == "localhost/surgery/mutated:1"
    assert run(capsys, "mutate", src, f"oci:{tmp_path / 'lay'}:v1", *edits)[0] == 0
    manifest, _ = layout_manifest(tmp_path / "lay")
    assert manifest["config"]["digest"] == f"sha256:{inspected['Id']}"
    assert inspected["RootFS"]["Layers"] == facts["single-gzip"]["diff_ids"]
    assert "EDITED=1" in inspected["Config"]["Env"] and inspected["Config"]["Labels"] == {"org.example.team": "web"}


# --- append ----------------------------------------------------------------------------------------

def test_append_uploads_only_the_new_layers_packed_by_the_builders_rules(registry, target, tmp_path, overlay, facts,
                                                                        cache_dir, capsys):
    assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{target.host}/app/img:v1")[0] == 0
    layer_tarball = whiteout_tar(tmp_path / "layer.tar.gz")
    mark = target.log_offset()
    doc = json_of(capsys, "append", "append", f"{target.host}/app/img:v1", f"{target.host}/app/img:v2",
                  "--layer", str(overlay), "--layer", str(layer_tarball))
    sent = target.requests_since(mark)
    manifest = reg(f"{target.host}/app/img:v2")
    new = [d["digest"] for d in manifest["layers"][2:]]
    for layer in facts["single-gzip"]["layers"]:
        assert [m for m, u in sent if layer in u] == ["HEAD"]
    uploaded = sorted(u.rsplit("digest=", 1)[1] for m, u in sent if m == "PUT" and "/blobs/" in u)
    assert uploaded == sorted([*new, manifest["config"]["digest"]])
    assert (doc["blobsUploaded"], doc["blobsSkipped"]) == (3, 2)
    config = reg(f"{target.host}/app/img:v2", "--config")
    assert config["rootfs"]["diff_ids"][:2] == facts["single-gzip"]["diff_ids"] and len(config["rootfs"]["diff_ids"]) == 4
    assert config["history"][-2:] == [{"created_by": "registry-tools append"}] * 2
    # the directory: sorted, root's, mtime 1; the tar: as it was
    assert run(capsys, "append", f"{target.host}/app/img:v1", f"oci:{tmp_path / 'lay'}:v1", "--layer", str(overlay),
               "--layer", str(layer_tarball))[0] == 0
    manifest, _ = layout_manifest(tmp_path / "lay")
    packed = layer_tar(tmp_path / "lay", manifest["layers"][2]).getmembers()
    assert [m.name for m in packed] == ["etc", "etc/app", "etc/app/app.conf", "etc/conf", "etc/motd"]
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in packed} == {(1, 0, 0, "root")}
    taken = layer_tar(tmp_path / "lay", manifest["layers"][3]).getmembers()
    assert [(m.name, m.uid, m.mtime) for m in taken] == [
        ("data/single-gzip-0/.wh.file1.txt", 1234, 1_600_000_000), ("data/single-gzip-1/.wh..wh..opq", 1234,
                                                                   1_600_000_000),
        ("data/single-gzip-1/new.txt", 1234, 1_600_000_000)]


def test_append_refuses_a_tar_that_leaves_the_root_and_a_missing_layer(registry, tmp_path, cache_dir, capsys):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        info = tarfile.TarInfo("../../etc/passwd")
        tf.addfile(info, io.BytesIO(b""))
    for layer, words in ((bad, "leave the root"), (tmp_path / "nothing", "no such")):
        code, out, err = run(capsys, "append", f"{registry.host}/test/single-gzip:v1", f"oci:{tmp_path / 'o'}:v1",
                             "--layer", str(layer))
        assert code != 0 and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# --- flatten ---------------------------------------------------------------------------------------

def test_flatten_holds_exactly_what_export_writes(registry, tmp_path, cache_dir, capsys):
    """Whiteouts and opaque directories resolved: the one layer's tar is export's tar, byte for byte."""
    layered = tmp_path / "layered"
    assert run(capsys, "append", f"{registry.host}/test/single-gzip:v1", f"oci:{layered}:v1", "--layer",
               str(whiteout_tar(tmp_path / "wh.tar.gz")))[0] == 0
    doc = json_of(capsys, "flatten", "flatten", f"oci:{layered}:v1", f"oci:{tmp_path / 'flat'}:v1")
    exported = json_of(capsys, "export", "export", f"oci:{layered}:v1", "-o", str(tmp_path / "rootfs.tar"))
    manifest, config = layout_manifest(tmp_path / "flat")
    _, layered_config = layout_manifest(layered)
    rootfs = (tmp_path / "rootfs.tar").read_bytes()
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(rootfs).hexdigest()}"]
    flat = layer_tar(tmp_path / "flat", manifest["layers"][0])
    with tarfile.open(tmp_path / "rootfs.tar") as export:
        assert flat.getnames() == export.getnames()
    assert config["config"] == layered_config["config"] and config.get("created") == layered_config.get("created")
    assert [h["created_by"] for h in config["history"]] == ["registry-tools flatten"]
    tree, _ = umoci_tree(tmp_path / "flat", "v1", tmp_path)
    assert "data/single-gzip-0/file1.txt" not in tree and "data/single-gzip-0/file0.txt" in tree
    assert [p for p in tree if p.startswith("data/single-gzip-1/")] == ["data/single-gzip-1/new.txt"]
    assert doc["digest"] != exported["manifestDigest"]


# --- rebase and check-base -------------------------------------------------------------------------

def _built_on(registry, target, tmp_path, capsys) -> tuple[str, str]:
    """base:v1 (single-gzip) in the target, and app:v1 built on it with fromImage, pushed there."""
    assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{target.host}/base:v1")[0] == 0
    base_digest = json_of(capsys, "digest", "digest", f"{target.host}/base:v1")["digest"]
    (tmp_path / "root" / "srv").mkdir(parents=True)
    (tmp_path / "root" / "srv" / "app").write_text("the app\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "example/app", "tag": "1", "architecture": "amd64",
                                "fromImage": f"{target.host}/base:v1@{base_digest}", "inheritConfig": True,
                                "contents": [str(tmp_path / "root")], "config": {"Env": ["APP=1"]}}))
    assert run(capsys, "build", str(spec), "--push", f"{target.host}/app:v1")[0] == 0
    return base_digest, f"{target.host}/app:v1"


def test_rebase_onto_the_moved_base_and_check_base(registry, target, tmp_path, overlay, facts, cache_dir, capsys):
    base_digest, app = _built_on(registry, target, tmp_path, capsys)
    notes = reg(app)["annotations"]
    assert notes["org.opencontainers.image.base.name"] == f"{target.host}/base:v1"
    assert notes["org.opencontainers.image.base.digest"] == base_digest
    code, out, _ = run(capsys, "check-base", app)
    assert (code, out.strip()) == (0, f"base {target.host}/base:v1 unchanged: {base_digest}")
    # the base's tag moves on: one more layer
    moved = json_of(capsys, "append", "append", f"{target.host}/base:v1", f"{target.host}/base:v1", "--layer",
                    str(overlay))["digest"]
    code, out, err = run(capsys, "check-base", app)
    assert code == 1 and base_digest in out and moved in out and len(out.strip().splitlines()) == 1
    code, out, _ = run(capsys, "check-base", app, "--json")
    doc = json.loads(out)
    jsonschema.validate(doc, {**SCHEMA, "$ref": "#/$defs/check-base"})
    assert code == 1 and doc["moved"] and (doc["baseDigest"], doc["currentDigest"]) == (base_digest, moved)
    # rebase with nothing named: from the recorded base onto what its name names now
    old = reg(app)
    old_config = reg(app, "--config")
    mark = target.log_offset()
    rebased = json_of(capsys, "rebase", "rebase", app, f"{target.host}/app:v2")
    sent = target.requests_since(mark)
    new = reg(f"{target.host}/app:v2")
    new_base = reg(f"{target.host}/base:v1")
    assert [d["digest"] for d in new["layers"]] == [d["digest"] for d in new_base["layers"] + old["layers"][2:]]
    assert not [u for m, u in sent if m == "GET" and "/blobs/" in u and "config" not in u
                and any(d["digest"] in u for d in new["layers"])]  # no layer downloaded
    assert sorted(u.rsplit("digest=", 1)[1] for m, u in sent if m == "PUT" and "/blobs/" in u) == \
        [new["config"]["digest"]]  # the one upload: the config; the new base's layer is mounted
    assert (rebased["blobsUploaded"], rebased["blobsMounted"], rebased["blobsSkipped"]) == (1, 1, 3)
    config = reg(f"{target.host}/app:v2", "--config")
    assert config["rootfs"]["diff_ids"] == reg(f"{target.host}/base:v1", "--config")["rootfs"]["diff_ids"] + \
        old_config["rootfs"]["diff_ids"][2:]
    assert config["config"] == old_config["config"]
    assert config["history"][-1] == old_config["history"][-1] and len(config["history"]) == len(
        old_config["history"]) + 1
    assert new["annotations"]["org.opencontainers.image.base.digest"] == moved
    assert run(capsys, "check-base", f"{target.host}/app:v2")[0] == 0
    # to a layout, umoci's tree: the new base's files under the app's; to a docker-archive, podman loads it
    assert json_of(capsys, "rebase", "rebase", app, f"oci:{tmp_path / 'rebased'}:v1")["digest"] == rebased["digest"]
    tree, runtime = umoci_tree(tmp_path / "rebased", "v1", tmp_path)
    assert tree["srv/app"] == "the app\n" and tree["etc/motd"] == "appended\n" and "APP=1" in runtime["process"]["env"]
    assert run(capsys, "rebase", f"oci:{tmp_path / 'rebased'}:v1", f"docker-archive:{tmp_path / 'r.tar'}:rebased:v1",
               "--old-base", f"{target.host}/base:v1", "--new-base", f"{registry.host}/test/single-gzip:v1")[0] == 0
    assert "rebased:v1" in podman_load([tmp_path / "r.tar"])
    code, out, err = run(capsys, "rebase", app, f"oci:{tmp_path / 'no'}:v1", "--old-base",
                         f"{registry.host}/test/single-zstd:v1")
    assert code == 2 and out == "" and "not the base" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()


def test_check_base_of_an_image_with_no_base_is_one_line(registry, cache_dir, capsys):
    code, out, err = run(capsys, "check-base", f"{registry.host}/test/single-gzip:v1")
    assert code == 2 and out == "" and "records no base" in err and len(err.strip().splitlines()) == 1


def test_a_base_path_is_followed_for_a_local_image_only(registry, target, tmp_path, facts, cache_dir, capsys):
    """A path a build recorded names a file on the machine that built it: an image from a registry
    does not make check-base or rebase read this machine's files."""
    base = tmp_path / "base"
    shutil.copytree(IMAGES / "single-gzip", base)
    notes = ["--annotation", f"org.opencontainers.image.base.name=oci:{base}:v1", "--annotation",
             f"org.opencontainers.image.base.digest={facts['single-gzip']['manifest']}"]
    src = f"{registry.host}/test/single-gzip:v1"
    assert run(capsys, "mutate", src, f"oci:{tmp_path / 'local'}:v1", *notes)[0] == 0
    assert run(capsys, "check-base", f"oci:{tmp_path / 'local'}:v1") == \
        (0, f"base oci:{base}:v1 unchanged: {facts['single-gzip']['manifest']}\n", "")
    assert run(capsys, "mutate", src, f"{target.host}/remote/img:v1", *notes)[0] == 0
    for argv in (["check-base", f"{target.host}/remote/img:v1"],
                 ["rebase", f"{target.host}/remote/img:v1", f"oci:{tmp_path / 'out'}:v1"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and "as a path" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- a whole index ---------------------------------------------------------------------------------

def test_all_edits_every_platform_and_drops_the_attestation(registry, target, tmp_path, facts, cache_dir, capsys,
                                                            caplog):
    with caplog.at_level(logging.WARNING, logger="registry_tools.transforms"):
        code, out, err = run(capsys, "mutate", "--all", f"{registry.host}/test/multi:v1",
                             f"{target.host}/m/multi:v1", "--label", "edited=yes", "--json")
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if "dropped the attestation" in r.getMessage()]
    assert said == [f"dropped the attestation {facts['multi']['attestation']}: it describes the image before the "
                    "edit"]
    doc = json.loads(out)
    assert sorted(doc["platforms"]) == sorted(facts["multi"]["platforms"])
    index = reg(f"{target.host}/m/multi:v1")
    assert len(index["manifests"]) == 4 and doc["digest"] != facts["multi"]["index"]
    for entry in index["manifests"]:
        image = reg(f"{target.host}/m/multi@{entry['digest']}")
        before = reg(f"{registry.host}/test/multi@{facts['multi']['platforms'][platform_text(entry)]}")
        assert image["layers"] == before["layers"]
        assert reg(f"{target.host}/m/multi@{entry['digest']}", "--config")["config"]["Labels"] == {"edited": "yes"}
    layout = tmp_path / "flat"
    assert run(capsys, "flatten", "--all", f"{registry.host}/test/multi:v1", f"oci:{layout}:v1")[0] == 0
    with tempfile.TemporaryDirectory() as d:  # skopeo reads every platform, every blob verified
        subprocess.run(["skopeo", "copy", "--all", "--quiet", f"oci:{layout}:v1", f"oci:{d}:x"], check=True,
                       capture_output=True)
    # Docker media types: the index becomes a Docker manifest list (skopeo's oci: refuses one: to a registry)
    assert run(capsys, "mutate", "--all", f"{registry.host}/test/multi:v1", f"{target.host}/m/docker:v1",
               "--format", "docker")[0] == 0
    index = reg(f"{target.host}/m/docker:v1")
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    with tempfile.TemporaryDirectory() as d:
        res = subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false",
                              f"docker://{target.host}/m/docker:v1", f"dir:{d}"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    for entry in index["manifests"]:
        assert entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert reg(f"{target.host}/m/docker@{entry['digest']}")["config"]["mediaType"] == \
            "application/vnd.docker.container.image.v1+json"


def platform_text(entry: dict) -> str:
    p = entry["platform"]
    return "/".join([p["os"], p["architecture"]] + ([p["variant"]] if p.get("variant") else []))


# --- determinism -----------------------------------------------------------------------------------

def test_same_inputs_same_digest_under_another_umask_and_tz(tmp_path):
    """Each command from a layout, in a process of its own with a cold cache, under two umasks, time
    zones and locales, the appended directory touched and chowned differently: the same digests."""
    results = []
    for i, (umask, tz, lang) in enumerate([(0o022, "UTC", "C.UTF-8"), (0o077, "Pacific/Chatham", "POSIX")]):
        work = tmp_path / f"w{i}"
        (work / "tmp").mkdir(parents=True)
        (work / "dir" / "etc").mkdir(parents=True)
        (work / "dir" / "etc" / "motd").write_text("hi\n")
        os.chmod(work / "dir" / "etc" / "motd", 0o644)
        os.chmod(work / "dir" / "etc", 0o755)
        touch_and_chown(work / "dir", i)
        env = dict(os.environ, TZ=tz, LC_ALL=lang, LANG=lang, TMPDIR=str(work / "tmp"),
                   REGISTRY_TOOLS_CACHE=str(work / "cache"))
        digests = []
        src = f"oci:{IMAGES / 'single-gzip'}:v1"
        for n, argv in enumerate([["mutate", src, "--env", "A=1", "--created", "2020-01-01T00:00:00Z"],
                                  ["append", src, "--layer", str(work / "dir")], ["flatten", src],
                                  ["rebase", src, "--old-base", src, "--new-base", f"oci:{IMAGES / 'single-none'}:v1"]]):
            dest = f"oci:{work / f'out{n}'}:v1"
            res = subprocess.run([sys.executable, "-m", "registry_tools", *argv[:2], dest, *argv[2:], "-q"],
                                 capture_output=True, text=True, env=env, cwd=work,
                                 preexec_fn=lambda u=umask: os.umask(u))
            assert res.returncode == 0, res.stderr
            digests.append(res.stdout.strip())
        results.append(digests)
    assert results[0] == results[1] and len(set(results[0])) == 4
