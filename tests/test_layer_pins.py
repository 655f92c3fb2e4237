"""Layer pins against real registries: what prefetch --layers reads, what assemble writes (the
bytes pull writes, from the cache, the registry or a directory of blobs), locks of both kinds,
and updates that read no layer."""
from __future__ import annotations

import base64
import difflib
import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from registry_tools.errors import UsageError
from registry_tools.formats.nar import nar_sha256
from registry_tools.model.pin import layer_pin, nix_value

from .helpers import IMAGES, ROOT, run
from .support import imagegen
from .support.registry import free_port, skopeo_push_layout

SCHEMA = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())


def check_schema(kind: str, doc) -> None:
    jsonschema.validate(doc, {**SCHEMA, "$ref": f"#/$defs/{kind}"})


def sri_of(path: Path) -> str:
    if path.is_dir():
        return "sha256-" + base64.b64encode(nar_sha256(str(path))).decode()
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def not_ping(requests):
    return [(m, u) for m, u in requests if u != "/v2/"]


def pins(capsys, ref: str, *args: str) -> tuple[dict, dict]:
    """(the full pin, the layer pin) of the same image and options."""
    code, out, err = run(capsys, "prefetch", ref, *args, "--json", "-q")
    assert code == 0, err
    code, out2, err = run(capsys, "prefetch", ref, *args, "--layers", "--json", "-q")
    assert code == 0, err
    return json.loads(out), json.loads(out2)


def write(tmp_path: Path, name: str, doc: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_a_layer_pin_reads_the_tag_the_index_the_manifest_and_the_config_only(registry, facts, cache_dir, capsys):
    mark = registry.log_offset()
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", "linux/arm64",
                         "--layers", "--json", "-q")
    assert code == 0, err
    pin = json.loads(out)
    check_schema("prefetch", pin)
    check_schema("layerPin", pin)
    arm64 = facts["multi"]["platforms"]["linux/arm64/v8"]
    (manifest,) = pin["manifests"]
    config = manifest["config"]["digest"]
    assert not_ping(registry.requests_since(mark)) == [
        ("HEAD", "/v2/test/multi/manifests/v1"), ("GET", "/v2/test/multi/manifests/v1"),
        ("GET", f"/v2/test/multi/manifests/{arm64}"), ("GET", f"/v2/test/multi/blobs/{config}")]
    assert "hash" not in pin
    assert (pin["imageDigest"], pin["manifestDigest"], manifest["digest"]) == (facts["multi"]["index"], arm64, arm64)
    assert (pin["os"], pin["arch"], pin["variant"]) == ("linux", "arm64", "v8")
    assert len(manifest["layers"]) == 2 and all(set(b) == {"digest", "size", "mediaType"} for b in manifest["layers"])
    # a single-platform image: its layers as the registry names them, in order
    _, single = pins(capsys, f"{registry.host}/test/single-gzip:v1")
    assert [b["digest"] for b in single["manifests"][0]["layers"]] == facts["single-gzip"]["layers"]
    assert single["manifestDigest"] == facts["single-gzip"]["manifest"]


def test_a_layer_pin_of_a_whole_index_reads_the_tag_and_each_manifest_once(registry, facts, cache_dir, capsys):
    """--all: the tag's HEAD and GET, then each manifest the index names (attestations too) once; no
    config (the index says each platform) and no layer."""
    mark = registry.log_offset()
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--all", "--layers", "--format", "oci",
                         "--json", "-q")
    assert code == 0, err
    pin = json.loads(out)
    check_schema("prefetch", pin)
    sent = not_ping(registry.requests_since(mark))
    children = {*facts["multi"]["platforms"].values(), facts["multi"]["attestation"]}
    assert sent[:2] == [("HEAD", "/v2/test/multi/manifests/v1"), ("GET", "/v2/test/multi/manifests/v1")]
    assert sorted(sent[2:]) == sorted(("GET", f"/v2/test/multi/manifests/{d}") for d in children)
    assert {m["digest"] for m in pin["manifests"]} >= set(facts["multi"]["platforms"].values())


def test_the_request_count_does_not_grow_with_the_image(target, tmp_path, cache_dir, capsys):
    """Twenty layers, or one: the same requests (the tag, the config); no layer is read."""
    counts = []
    for n in (1, 20):
        lay = imagegen.Layout()
        img = lay.image([lay.layer({f"f{i}": bytes([i]) * 5000}, "gzip") for i in range(n)])
        lay.tag(img, "v1")
        skopeo_push_layout(lay.write(tmp_path / f"l{n}"), "v1", f"{target.host}/grow/n{n}:v1", all_images=False)
        mark = target.log_offset()
        code, out, err = run(capsys, "prefetch", f"{target.host}/grow/n{n}:v1", "--layers", "--json", "-q")
        assert code == 0, err
        assert len(json.loads(out)["manifests"][0]["layers"]) == n
        reqs = not_ping(target.requests_since(mark))
        assert not [u for m, u in reqs if "/blobs/" in u and json.loads(out)["manifests"][0]["config"]["digest"]
                    not in u]
        counts.append(len(reqs))
    assert counts == [3, 3]  # HEAD and GET of the tag (a single-platform image), GET of the config


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci"])
def test_assemble_writes_the_bytes_pull_writes(registry, cache_dir, tmp_path, capsys, fmt):
    full, layers = pins(capsys, f"{registry.host}/test/multi:v1", "--platform", "linux/arm/v7", "--format", fmt,
                        "--final-image-name", "app", "--final-image-tag", "stable")
    assert layers["format" if fmt != "docker-archive" else "os"] == (fmt if fmt != "docker-archive" else "linux")
    pin = write(tmp_path, "pin.json", layers)
    out = tmp_path / "out"
    code, printed, err = run(capsys, "assemble", str(pin), "-o", str(out))
    assert code == 0, err
    assert printed.strip() == full["hash"] == sri_of(out)  # the two kinds of pin agree
    code, printed, err = run(capsys, "pull", "--pin", str(pin), "-o", str(tmp_path / "again"), "--json")
    assert code == 0, err
    doc = json.loads(printed)
    check_schema("assemble", doc)
    assert doc["hash"] == full["hash"] and doc["manifestDigest"] == full["manifestDigest"]


def test_assemble_of_a_whole_index_is_pull_all(registry, cache_dir, tmp_path, capsys):
    full, layers = pins(capsys, f"{registry.host}/test/multi:v1", "--all", "--format", "oci-archive")
    check_schema("layerPin", layers)
    assert layers["platform"] == "all" and layers["manifests"][0]["digest"] == layers["imageDigest"]
    assert len(layers["manifests"]) == 6  # the index, four platforms and the attestation
    assert "config" not in layers["manifests"][0]
    assert [m.get("platform") for m in layers["manifests"][1:]] == \
        ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6", "unknown/unknown"]
    code, printed, err = run(capsys, "assemble", str(write(tmp_path, "all.json", layers)), "-o",
                             str(tmp_path / "all.tar"))
    assert code == 0, err
    assert printed.strip() == full["hash"] == sri_of(tmp_path / "all.tar")
    code, _, err = run(capsys, "assemble", str(tmp_path / "all.json"), "-o", str(tmp_path / "x.tar"), "--format",
                       "docker-archive")
    assert code == 2 and "one platform" in err


def test_assembly_from_the_cache_sends_nothing(registry, cache_dir, tmp_path, capsys):
    full, layers = pins(capsys, f"{registry.host}/test/multi:v1", "--platform", "linux/amd64")
    pin = write(tmp_path, "pin.json", layers)
    assert run(capsys, "assemble", str(pin), "-o", str(tmp_path / "a.tar"))[0] == 0
    mark = registry.log_offset()
    code, printed, err = run(capsys, "assemble", str(pin), "-o", str(tmp_path / "b.tar"))
    assert code == 0, err
    assert registry.requests_since(mark) == [] and printed.strip() == full["hash"]


def test_blobs_from_a_directory_need_no_registry(registry, facts, cache_dir, tmp_path, capsys):
    """What Nix does: every blob from files named by their digests; the registry is unreachable."""
    full, layers = pins(capsys, f"{registry.host}/test/multi:v1", "--platform", "linux/arm64")
    shutil.rmtree(cache_dir)
    gone = dict(layers, imageName=f"127.0.0.1:{free_port()}/test/multi")
    pin = write(tmp_path, "pin.json", gone)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for f in (IMAGES / "multi" / "blobs" / "sha256").iterdir():  # links, as Nix's store paths are
        (blobs / f.name).symlink_to(f)
    code, printed, err = run(capsys, "assemble", str(pin), "--blobs", str(blobs), "-o", str(tmp_path / "a.tar"))
    assert code == 0, err
    assert printed.strip() == full["hash"]
    # one file missing: named, and nothing written
    layer = layers["manifests"][0]["layers"][1]["digest"]
    (blobs / layer.split(":")[1]).unlink()
    shutil.rmtree(cache_dir)
    code, _, err = run(capsys, "assemble", str(pin), "--blobs", str(blobs), "-o", str(tmp_path / "b.tar"))
    assert code == 2 and layer in err and not (tmp_path / "b.tar").exists()


def test_a_damaged_blob_among_the_blobs_fails_naming_it(registry, cache_dir, tmp_path, capsys):
    _, layers = pins(capsys, f"{registry.host}/test/single-gzip:v1")
    shutil.rmtree(cache_dir)
    blobs = tmp_path / "blobs"
    shutil.copytree(IMAGES / "single-gzip" / "blobs" / "sha256", blobs)
    layer = layers["manifests"][0]["layers"][0]["digest"]
    path = blobs / layer.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    code, out, err = run(capsys, "assemble", str(write(tmp_path, "pin.json", layers)), "--blobs", str(blobs), "-o",
                         str(tmp_path / "a.tar"))
    assert code == 1 and out == "" and layer in err and "digest mismatch" in err
    assert not (tmp_path / "a.tar").exists()


@pytest.mark.parametrize("edit,code_,words", [
    ("layer", 2, "the pin lists others"), ("size", 1, "size mismatch"), ("manifest", 2, "manifestDigest"),
])
def test_a_pin_that_does_not_match_its_image_is_refused(registry, cache_dir, tmp_path, capsys, edit, code_, words):
    _, layers = pins(capsys, f"{registry.host}/test/multi:v1", "--platform", "linux/amd64")
    m = layers["manifests"][0]
    if edit == "layer":
        m["layers"] = m["layers"][::-1]
    elif edit == "size":
        m["size"] += 1
    else:
        m["digest"] = "sha256:" + "0" * 64
    code, out, err = run(capsys, "assemble", str(write(tmp_path, "pin.json", layers)), "-o", str(tmp_path / "a.tar"))
    assert code == code_ and words in err and out == "", err
    assert not (tmp_path / "a.tar").exists()


def test_pull_pin_takes_a_full_pin_too(registry, cache_dir, tmp_path, capsys):
    full, _ = pins(capsys, f"{registry.host}/test/multi:v1", "--platform", "linux/arm/v6")
    pin = write(tmp_path, "full.json", full)
    code, printed, err = run(capsys, "pull", "--pin", str(pin), "-o", str(tmp_path / "a.tar"))
    assert code == 0, err
    assert printed.strip() == full["hash"]
    code, _, err = run(capsys, "assemble", str(pin), "-o", str(tmp_path / "b.tar"), "--format", "oci")
    assert code == 2 and "hash is of a docker-archive" in err
    code, _, err = run(capsys, "pull", "--pin", str(pin), f"{registry.host}/test/multi", "-o", str(tmp_path / "c"))
    assert code == 2 and "--pin gives" in err
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"version": 1, "images": [full]}))
    code, _, err = run(capsys, "assemble", str(lock), "-o", str(tmp_path / "d.tar"))
    assert code == 2 and "a lock file" in err


def test_a_lock_of_layer_pins_and_of_both_kinds(registry, target, facts, cache_dir, tmp_path, capsys):
    listing = tmp_path / "images.txt"
    listing.write_text(f"{registry.host}/test/multi:v1 linux/arm/v7\n{registry.host}/test/single-zstd:v1\n"
                       f"{registry.host}/test/multi:v1 all\n")
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--layers", "--format", "oci-archive", "--json")
    assert code == 0, err
    lock = json.loads(out)
    check_schema("lock", lock)
    assert [e.get("platform") for e in lock["images"]] == ["linux/arm/v7", None, "all"]
    assert all("manifests" in e and "hash" not in e for e in lock["images"])
    code, nix, err = run(capsys, "prefetch", "--from", str(listing), "--layers", "--format", "oci-archive")
    assert code == 0 and nix.startswith("[\n  {\n") and "manifests = [" in nix
    code, full_out, _ = run(capsys, "prefetch", "--from", str(listing), "--format", "oci-archive", "--json")
    mixed = {"version": 1, "images": [lock["images"][0], json.loads(full_out)["images"][1], lock["images"][2]]}
    check_schema("lock", mixed)
    (tmp_path / "mixed.json").write_text(json.dumps(mixed, indent=2))
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--check", str(tmp_path / "mixed.json"))
    assert code == 0, err
    code, out, err = run(capsys, "sync", str(tmp_path / "mixed.json"), "--to", f"{target.host}/m")
    assert code == 0, err
    mirrored = json.loads(out)["images"]  # the same pins, imageName the mirror's
    shutil.rmtree(cache_dir)
    for i, entry in enumerate(mirrored):  # each entry of either kind writes its image, from the mirror
        assert entry["imageName"].startswith(target.host)
        code, printed, err = run(capsys, "pull", "--pin", str(write(tmp_path, f"{i}.json", entry)), "-o",
                                 str(tmp_path / f"{i}.tar"))
        assert code == 0, err
        assert printed.strip() == json.loads(full_out)["images"][i]["hash"]


def moved_lock(capsys, registry, target, tmp_path, layers: bool, n: int = 4) -> tuple[Path, Path, str]:
    """A lock of `n` images of `target`, then the tag of the second moved (another image copied over)."""
    for i in range(n):
        assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{target.host}/lk/img{i}:v1")[0] == 0
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{target.host}/lk/img{i}:v1\n" for i in range(n)))
    lock = tmp_path / "images.lock.json"
    code, out, err = run(capsys, "prefetch", "--from", str(listing), *(["--layers"] if layers else []), "--json")
    assert code == 0, err
    lock.write_text(out)
    assert run(capsys, "copy", f"{registry.host}/test/multi:v1", f"{target.host}/lk/img1:v1")[0] == 0
    return listing, lock, out


def test_update_of_layer_pins_reads_no_layer_and_rewrites_only_what_moved(registry, target, facts, tmp_path,
                                                                          cache_dir, capsys):
    listing, lock, before = moved_lock(capsys, registry, target, tmp_path, layers=True)
    mark = target.log_offset()
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--check", str(lock))
    assert code == 1 and "img1" in out
    assert len(not_ping(target.requests_since(mark))) == 4  # one HEAD an image
    shutil.rmtree(cache_dir)  # nothing known before: every request the update needs is counted
    mark = target.log_offset()
    code, _, err = run(capsys, "prefetch", "--from", str(listing), "--update", str(lock))
    assert code == 0, err
    assert "no layer downloaded" in err and "had to be pulled" not in err
    reqs = not_ping(target.requests_since(mark))
    per_image = {i: [r for r in reqs if f"/lk/img{i}/" in r[1]] for i in range(4)}
    assert [len(per_image[i]) for i in range(4)] == [1, 4, 1, 1]
    assert not [u for m, u in reqs if "/blobs/" in u and u.endswith(tuple(facts["single-gzip"]["layers"]))]
    after = lock.read_text()
    doc = json.loads(after)["images"]
    assert doc[1]["imageDigest"] == facts["multi"]["index"] and "manifests" in doc[1]
    # byte for byte, only the moved entry's lines differ
    old, new = before.splitlines(), after.splitlines()
    changed = [op for op in difflib.SequenceMatcher(a=old, b=new).get_opcodes() if op[0] != "equal"]
    old_span = _entry_span(old, f"{target.host}/lk/img1:v1")
    new_span = _entry_span(new, f"{target.host}/lk/img1:v1")
    assert changed
    for _, i1, i2, j1, j2 in changed:
        assert old_span[0] <= i1 and i2 <= old_span[1] and new_span[0] <= j1 and j2 <= new_span[1]
    assert run(capsys, "prefetch", "--from", str(listing), "--check", str(lock))[0] == 0


def _entry_span(lines: list[str], reference: str) -> tuple[int, int]:
    """The lines [first, last) of the lock entry whose reference is `reference`."""
    at = lines.index(f'      "reference": "{reference}",')
    first = at - 1
    last = at
    while lines[last] not in ("    },", "    }"):
        last += 1
    return first, last + 1


def test_update_of_full_pins_says_which_it_had_to_pull(registry, target, tmp_path, cache_dir, capsys):
    listing, lock, _ = moved_lock(capsys, registry, target, tmp_path, layers=False, n=2)
    code, _, err = run(capsys, "prefetch", "--from", str(listing), "--update", str(lock))
    assert code == 0, err
    assert f"1 full pin had to be pulled: {target.host}/lk/img1:v1" in err
    assert "the image was pulled to hash it" in err


def test_update_keeps_each_entrys_kind_and_format(registry, target, tmp_path, cache_dir, capsys):
    """A moved entry is pinned again as the kind it was, in its format; a new line as the options say."""
    listing, lock, _ = moved_lock(capsys, registry, target, tmp_path, layers=False, n=2)
    doc = json.loads(lock.read_text())
    code, out, _ = run(capsys, "prefetch", f"{target.host}/lk/img0:v1", "--layers", "--format", "oci", "--json")
    doc["images"][0] = {"reference": f"{target.host}/lk/img0:v1", **json.loads(out)}
    code, out, _ = run(capsys, "prefetch", f"{target.host}/lk/img1:v1", "--format", "oci-archive", "--json")
    doc["images"][1] = {"reference": f"{target.host}/lk/img1:v1", **json.loads(out)}
    lock.write_text(json.dumps(doc, indent=2) + "\n")
    assert run(capsys, "copy", f"{registry.host}/test/single-zstd:v1", f"{target.host}/lk/img0:v1")[0] == 0
    assert run(capsys, "copy", f"{registry.host}/test/single-none:v1", f"{target.host}/lk/img1:v1")[0] == 0
    listing.write_text(listing.read_text() + f"{registry.host}/test/multi:v1 linux/amd64\n")
    code, _, err = run(capsys, "prefetch", "--from", str(listing), "--update", str(lock), "--layers")
    assert code == 0, err
    new = json.loads(lock.read_text())["images"]
    assert "manifests" in new[0] and new[0]["format"] == "oci"
    assert "hash" in new[1] and new[1]["format"] == "oci-archive"
    assert "manifests" in new[2]


def stored_blob(reg, digest: str) -> Path:
    """Where the registry keeps a blob's bytes."""
    hexd = digest.split(":", 1)[1]
    return reg.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def test_fetch_blob_verified_or_left_to_the_caller(own_registry, facts, cache_dir, tmp_path, capsys):
    layer = facts["single-gzip"]["layers"][0]
    ref = f"{own_registry.host}/test/single-gzip@{layer}"
    code, out, err = run(capsys, "fetch-blob", ref, "-o", str(tmp_path / "ok"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    check_schema("fetch-blob", doc)
    assert doc["verified"] and "sha256:" + hashlib.sha256((tmp_path / "ok").read_bytes()).hexdigest() == layer
    manifest = facts["single-gzip"]["manifest"]
    code, out, _ = run(capsys, "fetch-blob", f"{own_registry.host}/test/single-gzip@{manifest}", "--manifest",
                       "-o", str(tmp_path / "m"), "-q")
    assert code == 0 and out.strip() == manifest
    path = stored_blob(own_registry, layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, out, err = run(capsys, "fetch-blob", ref, "-o", str(tmp_path / "bad"), "--size", str(len(data)))
    assert code == 1 and "digest mismatch" in err and not (tmp_path / "bad").exists()
    code, out, err = run(capsys, "fetch-blob", ref, "-o", str(tmp_path / "kept"), "--unchecked", "--json")
    assert code == 0 and "kept for the caller" in err
    assert json.loads(out)["verified"] is False and (tmp_path / "kept").read_bytes() == bytes(data)
    code, _, err = run(capsys, "fetch-blob", f"{own_registry.host}/test/single-gzip:v1", "-o", str(tmp_path / "t"))
    assert code == 2 and "by digest" in err


LAYER_PIN = {
    "imageName": "reg.example/app", "imageDigest": "sha256:" + "1" * 64, "finalImageName": "app",
    "finalImageTag": "1", "os": "linux", "arch": "amd64", "manifestDigest": "sha256:" + "2" * 64,
    "manifests": [{"digest": "sha256:" + "2" * 64, "size": 10, "mediaType": "m",
                   "config": {"digest": "sha256:" + "3" * 64, "size": 5, "mediaType": "c"},
                   "layers": [{"digest": "sha256:" + "4" * 64, "size": 7, "mediaType": "l"}]}],
}


@pytest.mark.parametrize("change,words", [
    ({"hash": "sha256-x"}, "not both"),
    ({"manifestDigest": "sha256:" + "5" * 64}, "manifestDigest"),
    ({"manifests": []}, "manifests is missing"),
    ({"imageName": "reg.example/app:1"}, "repository only"),
    ({"platform": "all"}, "manifests\\[0\\] is what imageDigest names"),
    ({"platform": "all", "imageDigest": "sha256:" + "2" * 64}, "format oci or oci-archive"),
    ({"manifests": [{"digest": "sha256:" + "2" * 64, "size": True, "mediaType": "m"}]}, "whole number"),
    ({"manifests": [{"digest": "sha256:" + "2" * 64, "size": 1, "mediaType": "m"}]}, "with its config"),
])
def test_a_layer_pin_of_the_wrong_shape_is_named(change, words):
    with pytest.raises(UsageError, match=words):
        layer_pin({**LAYER_PIN, **change}, "pin.json")


def test_the_nix_form_of_a_layer_pin():
    text = nix_value(layer_pin(LAYER_PIN, "pin").to_dict())
    assert text.splitlines()[:2] == ["{", '  imageName = "reg.example/app";']
    assert '      layers = [\n        {\n          digest = "sha256:' + "4" * 64 + '";\n          size = 7;' in text
    assert nix_value({"a": [], "b": {}}) == "{\n  a = [ ];\n  b = { };\n}"
