"""Multi-arch images: whole indexes pulled, pinned, built, assembled and edited; read back by
skopeo, podman and umoci, and validated against the image spec's JSON schemas."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest


from .helpers import check_schema, run, touch_and_chown, validator


def blob(layout, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def validate_layout(layout) -> dict:
    """Every document of the layout against its schema, every blob against its name; the index."""
    v = validator()
    index = json.loads((layout / "index.json").read_text())
    v.validator_for("application/vnd.oci.image.index.v1+json").validate(index)
    v.validator_for("application/vnd.oci.layout.header.v1+json").validate(json.loads((layout / "oci-layout").read_text()))
    for f in (layout / "blobs/sha256").iterdir():
        assert hashlib.sha256(f.read_bytes()).hexdigest() == f.name

    def walk(desc):
        doc = json.loads(blob(layout, desc["digest"]))
        if desc["mediaType"] == "application/vnd.oci.image.index.v1+json":
            v.validator_for(desc["mediaType"]).validate(doc)
            for child in doc["manifests"]:
                walk(child)
        elif desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json":
            v.validator_for(desc["mediaType"]).validate(doc)
            if doc["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json":
                v.validator_for(doc["config"]["mediaType"]).validate(json.loads(blob(layout, doc["config"]["digest"])))
    for entry in index["manifests"]:
        walk(entry)
    return index


def skopeo_raw(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True,
                          check=True).stdout


# --- pull --all and prefetch --all ------------------------------------------------------------

def test_pull_all_writes_the_index_and_every_image_as_a_layout(registry, facts, cache_dir, tmp_path, capsys):
    ref = f"{registry.host}/test/multi@{facts['multi']['index']}"
    out = tmp_path / "layout"
    code, stdout, err = run(capsys, "pull", ref, "--all", "--format", "oci", "-o", str(out), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["platform"] == "all" and doc["manifestDigest"] == facts["multi"]["index"]
    assert sorted(doc["platforms"]) == sorted(facts["multi"]["platforms"])
    index = validate_layout(out)
    (entry,) = index["manifests"]
    assert entry["digest"] == facts["multi"]["index"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "latest"
    # every manifest byte for byte as the registry serves it (the attestation's too)
    assert blob(out, facts["multi"]["index"]) == skopeo_raw(f"docker://{ref}")
    for digest in [*facts["multi"]["platforms"].values(), facts["multi"]["attestation"]]:
        assert blob(out, digest) == skopeo_raw(f"docker://{registry.host}/test/multi@{digest}")
    # skopeo reads the whole layout (every image, every blob) and keeps the index's digest
    copy = tmp_path / "skopeo-copy"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", f"oci:{out}:latest", f"oci:{copy}:x"], check=True,
                   capture_output=True)
    (again,) = json.loads((copy / "index.json").read_text())["manifests"]
    assert again["digest"] == facts["multi"]["index"]


def test_pull_all_hash_is_stable_and_prefetch_all_pins_it(registry, facts, cache_dir, tmp_path, capsys):
    ref = f"{registry.host}/test/multi@{facts['multi']['index']}"
    hashes = {}
    for fmt in ("oci", "oci-archive"):
        outs = []
        for i, umask in enumerate((0o022, 0o077)):
            old = os.umask(umask)
            try:
                code, stdout, err = run(capsys, "pull", ref, "--platform", "all", "--format", fmt,
                                        "-o", str(tmp_path / f"{fmt}-{i}"))
            finally:
                os.umask(old)
            assert code == 0, err
            outs.append(stdout.strip())
            shutil.rmtree(cache_dir)  # the second pull starts from an empty cache
        assert outs[0] == outs[1]
        hashes[fmt] = outs[0]
        code, stdout, err = run(capsys, "prefetch", ref, "--all", "--format", fmt, "--json")
        assert code == 0, err
        pin = json.loads(stdout)
        assert pin["hash"] == outs[0] and pin["platform"] == "all" and pin["format"] == fmt
        assert pin["imageDigest"] == facts["multi"]["index"]
        assert not {"os", "arch", "manifestDigest"} & set(pin)
        # pulling with the pin's values reproduces the hash (checked before anything is written)
        code, _, err = run(capsys, "pull", f"{pin['imageName']}@{pin['imageDigest']}", "--all",
                           "--format", fmt, "--final-image-name", pin["finalImageName"],
                           "--final-image-tag", pin["finalImageTag"], "--hash", pin["hash"],
                           "-o", str(tmp_path / f"{fmt}-pinned"))
        assert code == 0, err
    assert hashes["oci"] != hashes["oci-archive"]
    tar = subprocess.run(["tar", "-tf", str(tmp_path / "oci-archive-0")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert f"blobs/sha256/{facts['multi']['index'].split(':')[1]}" in tar


def test_pull_all_refuses_a_docker_archive_in_one_line(registry, facts, cache_dir, tmp_path, capsys):
    ref = f"{registry.host}/test/multi@{facts['multi']['index']}"
    code, _, err = run(capsys, "pull", ref, "--all", "-o", str(tmp_path / "x.tar"))
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "docker-archive holds one platform" in err and "--format oci" in err
    assert not (tmp_path / "x.tar").exists()
    code, _, err = run(capsys, "pull", ref, "--all", "--platform", "linux/amd64", "--format", "oci",
                       "-o", str(tmp_path / "y"))
    assert code != 0 and "drop --platform" in err


def test_a_lock_can_pin_a_whole_index(registry, facts, cache_dir, tmp_path, capsys):
    listing = tmp_path / "images.txt"
    listing.write_text(f"{registry.host}/test/multi:v1 all\n{registry.host}/test/single-gzip:v1\n")
    code, stdout, err = run(capsys, "prefetch", "--from", str(listing), "--format", "oci-archive", "--json")
    assert code == 0, err
    lock = tmp_path / "lock.json"
    lock.write_text(stdout)
    whole, single = json.loads(stdout)["images"]
    assert whole["platform"] == "all" and "os" not in whole and single["os"] == "linux"
    from registry_tools.api.lock import read_lock

    entries = read_lock(lock)
    assert entries[0].platform == "all"


# --- multi-platform builds ----------------------------------------------------------------------

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
SHARED = {"aaaa-base": {"lib/libbase.so": b"base" * 3000}, "cccc-data": {"share/data.bin": bytes(range(256)) * 100}}
OWN = {
    "linux/amd64": {"dddd-app-amd64": {"bin/app": b"#!/bin/sh\necho amd64\n"},
                    "bbbb-lib-amd64": {"lib/libfoo.so": b"foo-amd64" * 2000}},
    "linux/arm64/v8": {"dddd-app-arm64": {"bin/app": b"#!/bin/sh\necho arm64\n"},
                       "bbbb-lib-arm64": {"lib/libfoo.so": b"foo-arm64" * 2000}},
}


def multi_workdir(root, **overrides):
    """A store with two shared paths and two paths of each platform's own; a graph per platform;
    a spec naming both platforms, with annotations."""
    store = root / "store"
    for name, files in {**SHARED, **OWN["linux/amd64"], **OWN["linux/arm64/v8"]}.items():
        for rel, data in files.items():
            p = store / name / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    (root / "root1" / "etc").mkdir(parents=True, exist_ok=True)
    (root / "root1" / "etc" / "motd").write_text("hello\n")
    (root / "app").mkdir(exist_ok=True)
    shutil.copy(BUSYBOX, root / "app" / "busybox")
    platforms = {}
    for plat, own in OWN.items():
        app, lib = sorted(own, key=lambda n: not n.startswith("dddd"))
        graph = [{"path": f"/nix/store/{app}", "references": [f"/nix/store/{lib}", "/nix/store/cccc-data"]},
                 {"path": f"/nix/store/{lib}", "references": ["/nix/store/aaaa-base"]},
                 {"path": "/nix/store/cccc-data", "references": []},
                 {"path": "/nix/store/aaaa-base", "references": []}]
        gname = f"graph-{plat.split('/')[1]}.json"
        (root / gname).write_text(json.dumps(graph))
        platforms[plat] = {"closure": {"graph": gname, "realStoreDir": "store"},
                           "annotations": {"org.example.arch": plat}}
    platforms["linux/arm64/v8"]["config"] = {"Env": ["ARCH=arm64"]}
    spec = {"name": "example/multi", "tag": "1.0", "contents": ["root1"],
            "paths": [{"source": "app", "target": "/opt/app"}],
            "config": {"Cmd": ["/opt/app/busybox", "echo", "hi"], "Env": ["A=1"]},
            "annotations": {"org.opencontainers.image.source": "https://example.org/multi"},
            "indexAnnotations": {"org.opencontainers.image.description": "two platforms"},
            "platforms": platforms}
    spec.update(overrides)
    path = root / "multi.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def multi(tmp_path, cache_dir):
    return multi_workdir(tmp_path)


def manifests_of(layout, index_digest):
    index = json.loads(blob(layout, index_digest))
    return index, {f"{m['platform']['os']}/{m['platform']['architecture']}" +
                   (f"/{m['platform']['variant']}" if m['platform'].get('variant') else ""):
                   json.loads(blob(layout, m["digest"])) for m in index["manifests"]}


def test_a_spec_naming_two_platforms_builds_one_index_and_packs_shared_layers_once(multi, tmp_path, capsys):
    layout = tmp_path / "layout"
    code, out, err = run(capsys, "build", str(multi), "--oci", str(layout), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc["images"]) == ["linux/amd64", "linux/arm64/v8"]
    index_file = validate_layout(layout)
    (entry,) = index_file["manifests"]
    assert entry["digest"] == doc["indexDigest"] and entry["annotations"]["org.opencontainers.image.ref.name"] == "1.0"
    index, images = manifests_of(layout, doc["indexDigest"])
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    assert index["annotations"] == {"org.opencontainers.image.description": "two platforms"}
    for plat, manifest in images.items():
        assert manifest["annotations"] == {"org.example.arch": plat,
                                           "org.opencontainers.image.source": "https://example.org/multi"}
        config = json.loads(blob(layout, manifest["config"]["digest"]))
        assert config["architecture"] == plat.split("/")[1] and config["os"] == "linux"
    assert json.loads(blob(layout, images["linux/arm64/v8"]["config"]["digest"]))["config"]["Env"] == ["ARCH=arm64"]
    # the shared store paths are the same layers (same digests) in both images, packed once
    amd = {layer["digest"] for layer in images["linux/amd64"]["layers"]}
    arm = {layer["digest"] for layer in images["linux/arm64/v8"]["layers"]}
    shared = amd & arm
    assert len(shared) >= 2 and amd - arm and arm - amd
    assert doc["layersPacked"] == len(amd | arm)
    # nothing from the clock: no created annotation anywhere
    assert "org.opencontainers.image.created" not in json.dumps([index, images])
    # built again: the same index, nothing packed
    code, out, err = run(capsys, "build", str(multi), "--oci", str(tmp_path / "again"), "--json")
    again = json.loads(out)
    assert again["indexDigest"] == doc["indexDigest"] and again["layersPacked"] == 0
    # skopeo reads the whole layout and keeps every digest
    copy = tmp_path / "skopeo-copy"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", f"oci:{layout}:1.0", f"oci:{copy}:1.0"], check=True,
                   capture_output=True)
    (kept,) = json.loads((copy / "index.json").read_text())["manifests"]
    assert kept["digest"] == doc["indexDigest"]


def test_umoci_unpacks_each_platform_of_the_layout(multi, tmp_path, capsys):
    layout = tmp_path / "layout"
    code, out, err = run(capsys, "build", str(multi), "--oci", str(layout), "--json")
    assert code == 0, err
    index, _ = manifests_of(layout, json.loads(out)["indexDigest"])
    for entry in index["manifests"]:
        # umoci 0.4 takes one manifest per tag: a view of the same blobs naming one platform's manifest
        view = tmp_path / f"view-{entry['platform']['architecture']}"
        view.mkdir()
        os.symlink(layout / "blobs", view / "blobs")
        shutil.copy(layout / "oci-layout", view / "oci-layout")
        named = dict(entry, annotations={"org.opencontainers.image.ref.name": "one"})
        (view / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [named]}))
        bundle = tmp_path / f"bundle-{entry['platform']['architecture']}"
        res = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{view}:one", str(bundle)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        rootfs = bundle / "rootfs"
        app = "dddd-app-" + entry["platform"]["architecture"]
        assert (rootfs / "nix/store" / app / "bin/app").read_text().endswith(entry["platform"]["architecture"] + "\n")
        assert (rootfs / "nix/store/aaaa-base/lib/libbase.so").exists()
        assert (rootfs / "etc/motd").read_text() == "hello\n"


def test_oci_archive_output_and_docker_archive_refusal(multi, tmp_path, capsys):
    code, _, err = run(capsys, "build", str(multi), "-o", str(tmp_path / "x.tar"))
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert "docker-archive holds one platform" in err and "--format oci-archive" in err
    assert not (tmp_path / "x.tar").exists()
    code, _, err = run(capsys, "build", str(multi), "--stream")
    assert code != 0 and "holds one platform" in err
    hashes = []
    for i in range(2):
        out = tmp_path / f"multi-{i}.tar"
        code, stdout, err = run(capsys, "build", str(multi), "-o", str(out), "--format", "oci-archive", "--json")
        assert code == 0, err
        hashes.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert hashes[0] == hashes[1]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "multi-0.tar"), "-C", str(unpacked)], check=True)
    validate_layout(unpacked)
    # one platform of the spec, as a docker-archive
    code, _, err = run(capsys, "build", str(multi), "--platform", "linux/arm64/v8", "-o", str(tmp_path / "arm.tar"))
    assert code == 0, err
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{tmp_path / 'arm.tar'}"],
                                     capture_output=True, check=True).stdout)
    assert info["Architecture"] == "arm64"
    code, _, err = run(capsys, "build", str(multi), "--platform", "linux/s390x", "-o", str(tmp_path / "s.tar"))
    assert code != 0 and "linux/amd64, linux/arm64/v8" in err


@pytest.mark.parametrize("change, message", [
    ({"platforms": {"linux/amd64": {"name": "x"}}}, "platforms.linux/amd64.name: not allowed here"),
    ({"platforms": {"linux/amd64": {"closure": 3}}}, "platforms.linux/amd64: closure"),
    ({"platforms": {"nonsense/": {}}}, "platforms.nonsense/"),
    ({"platforms": []}, "platforms: must be an object"),
    ({"architecture": "amd64"}, "architecture: is given by each entry"),
    ({"indexAnnotations": {"a": 1}}, "indexAnnotations: must be an object of strings"),
    ({"annotations": "x"}, "annotations: must be an object of strings"),
])
def test_bad_multi_platform_specs_name_the_key(tmp_path, cache_dir, capsys, change, message):
    spec = multi_workdir(tmp_path)
    doc = json.loads(spec.read_text())
    doc.update(change)
    spec.write_text(json.dumps(doc))
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "out"))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_created_annotation_only_when_asked(tmp_path, cache_dir, capsys):
    spec = multi_workdir(tmp_path, indexAnnotations={"org.opencontainers.image.created": "now"})
    code, out, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "l"), "--json")
    assert code == 0, err
    index = json.loads(blob(tmp_path / "l", json.loads(out)["indexDigest"]))
    created = index["annotations"]["org.opencontainers.image.created"]
    assert created.startswith("20") and created.endswith("Z")


def test_the_same_multi_platform_spec_gives_the_same_index_anywhere(tmp_path):
    """Two copies of the inputs, with other mtimes and owners, built under another umask, TZ,
    locale and temp dir with a cold cache: the same index digest and oci-archive bytes."""
    import sys

    results = []
    for i, (umask, tz, lang) in enumerate([(0o022, "UTC", "C.UTF-8"), (0o077, "Asia/Kathmandu", "POSIX")]):
        work = tmp_path / f"w{i}"
        work.mkdir()
        spec = multi_workdir(work)
        touch_and_chown(work, i)
        (work / "tmp").mkdir()
        env = dict(os.environ, TZ=tz, LC_ALL=lang, LANG=lang, TMPDIR=str(work / "tmp"),
                   REGISTRY_TOOLS_CACHE=str(work / "cache"))
        res = subprocess.run([sys.executable, "-m", "registry_tools", "build", str(spec), "-o", str(work / "o.tar"),
                              "--format", "oci-archive", "--json"], capture_output=True, text=True, env=env,
                             cwd=work, preexec_fn=lambda u=umask: os.umask(u))
        assert res.returncode == 0, res.stderr
        results.append((json.loads(res.stdout)["indexDigest"], hashlib.sha256((work / "o.tar").read_bytes()).digest()))
    assert results[0] == results[1]


def uploads(reg, mark) -> list[str]:
    """The blob digests whose upload was committed (PUT …/blobs/uploads/…?digest=…) since `mark`."""
    return [path.split("digest=")[1].split("&")[0].replace("%3A", ":") for method, path in reg.requests_since(mark)
            if method == "PUT" and "/blobs/uploads/" in path]


def manifest_puts(reg, mark) -> list[str]:
    return [path.rsplit("/", 1)[1] for method, path in reg.requests_since(mark)
            if method == "PUT" and "/manifests/" in path]


def test_build_push_of_two_platforms_uploads_shared_layers_once(multi, tmp_path, target, capsys):
    ref = f"{target.host}/multi/app:1.0"
    mark = target.log_offset()
    code, out, err = run(capsys, "build", str(multi), "--push", ref, "--json")
    assert code == 0, err
    pushed = json.loads(out)
    sent = uploads(target, mark)
    assert len(sent) == len(set(sent)) == pushed["blobsUploaded"]  # each blob once: the shared ones too
    index = json.loads(skopeo_raw(f"docker://{ref}"))
    assert pushed["digest"] == "sha256:" + hashlib.sha256(skopeo_raw(f"docker://{ref}")).hexdigest()
    layers = {}
    for entry in index["manifests"]:
        manifest = json.loads(skopeo_raw(f"docker://{target.host}/multi/app@{entry['digest']}"))
        layers[entry["platform"]["architecture"]] = {m["digest"] for m in manifest["layers"]}
        assert manifest["config"]["digest"] in sent
    assert set(sent) == layers["amd64"] | layers["arm64"] | {
        json.loads(skopeo_raw(f"docker://{target.host}/multi/app@{e['digest']}"))["config"]["digest"]
        for e in index["manifests"]}
    # skopeo copies the whole index back with every digest kept
    copy = tmp_path / "back"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    f"oci:{copy}:x"], check=True, capture_output=True)
    (kept,) = json.loads((copy / "index.json").read_text())["manifests"]
    assert kept["digest"] == pushed["digest"]
    # podman pulls the arm64 image of it
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:
        base = ["podman", "--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]
        res = subprocess.run(base + ["pull", "--tls-verify=false", "--platform", "linux/arm64", ref],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        info = json.loads(subprocess.run(base + ["image", "inspect", ref], capture_output=True, text=True,
                                         check=True).stdout)[0]
    assert info["Architecture"] == "arm64"
    assert {"ARCH=arm64"} <= set(info["Config"]["Env"])


def test_a_warm_re_push_after_one_change_sends_that_layer_config_manifest_and_index(multi, tmp_path, target,
                                                                                    capsys):
    ref = f"{target.host}/warm/app:1.0"
    assert run(capsys, "build", str(multi), "--push", ref)[0] == 0
    before = json.loads(skopeo_raw(f"docker://{ref}"))
    (tmp_path / "store" / "dddd-app-arm64" / "bin" / "app").write_bytes(b"#!/bin/sh\necho arm64 v2\n")
    mark = target.log_offset()
    code, out, err = run(capsys, "build", str(multi), "--push", ref, "--json")
    assert code == 0, err
    after = json.loads(skopeo_raw(f"docker://{ref}"))
    sent = uploads(target, mark)
    old = {e["platform"]["architecture"]: e["digest"] for e in before["manifests"]}
    new = {e["platform"]["architecture"]: e["digest"] for e in after["manifests"]}
    assert old["amd64"] == new["amd64"] and old["arm64"] != new["arm64"]
    arm_old = json.loads(skopeo_raw(f"docker://{target.host}/warm/app@{old['arm64']}"))
    arm_new = json.loads(skopeo_raw(f"docker://{target.host}/warm/app@{new['arm64']}"))
    changed = {m["digest"] for m in arm_new["layers"]} - {m["digest"] for m in arm_old["layers"]}
    assert len(changed) == 1
    assert sorted(sent) == sorted([*changed, arm_new["config"]["digest"]])  # that layer and that config only
    digest = json.loads(out)["digest"]
    assert manifest_puts(target, mark) == [new["arm64"], digest, "1.0"]  # that manifest, the index, its tag


# --- index create, add and remove -------------------------------------------------------------

def test_index_create_reads_platforms_from_configs_and_copies_images_in(registry, target, facts, cache_dir,
                                                                        tmp_path, capsys):
    plats = facts["multi"]["platforms"]
    src = f"{registry.host}/test/multi"
    dest = f"{target.host}/made/app:1"
    code, out, err = run(capsys, "index", "create", dest, f"{src}@{plats['linux/arm64/v8']}",
                         f"{src}@{plats['linux/amd64']}", "--annotation", "org.example.team=core", "--json")
    assert code == 0, err
    doc = json.loads(out)
    check_schema(doc, "index")
    assert doc["platforms"] == ["linux/amd64", "linux/arm64/v8"] and doc["copied"] == 2
    raw = skopeo_raw(f"docker://{dest}")
    assert doc["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    index = json.loads(raw)
    validator().validator_for("application/vnd.oci.image.index.v1+json").validate(index)
    assert [e["digest"] for e in index["manifests"]] == [plats["linux/amd64"], plats["linux/arm64/v8"]]
    assert index["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert index["annotations"] == {"org.example.team": "core"}
    # the images were copied into the repository, byte for byte
    for p in ("linux/amd64", "linux/arm64/v8"):
        assert skopeo_raw(f"docker://{target.host}/made/app@{plats[p]}") == skopeo_raw(f"docker://{src}@{plats[p]}")
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false", f"docker://{dest}",
                    f"oci:{tmp_path / 'back'}:x"], check=True, capture_output=True)
    # the same images in another order: the same index
    code, out, err = run(capsys, "index", "create", f"{target.host}/made/app:2", f"{src}@{plats['linux/amd64']}",
                         f"{src}@{plats['linux/arm64/v8']}", "--annotation", "org.example.team=core")
    assert code == 0 and out.strip() == doc["digest"]


def hostile_image(tmp_path, host: str, repo: str, **config_fields: str) -> str:
    """An image whose config says what a broken or hostile builder wrote there, pushed with skopeo
    (which copies it as it is); its reference by digest."""
    import gzip
    import io
    import tarfile

    layout = tmp_path / f"hostile-{len(list(tmp_path.glob('hostile-*')))}"
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tf.addfile(info, io.BytesIO(b"hello\n"))
    layer = put(gzip.compress(tar.getvalue(), mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {"architecture": "amd64", "os": "linux", **config_fields,
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": put(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
                "layers": [layer]}
    entry = put(json.dumps(manifest).encode(), manifest["mediaType"])
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {**entry, "annotations": {"org.opencontainers.image.ref.name": "x"}}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:x",
                    f"docker://{host}/{repo}"], check=True, capture_output=True)
    return f"{host}/{repo.split(':')[0]}@{entry['digest']}"


@pytest.mark.parametrize("field,value", [("architecture", "amd64/../../x"), ("os", "linux\nregistry-tools: ok"),
                                         ("variant", "v8\x1b[2J\x1b]0;owned\x07"), ("os.version", "10.0\r1"),
                                         ("architecture", "a" * 65)])
def test_index_create_refuses_a_member_whose_config_names_no_valid_platform(registry, target, facts, cache_dir,
                                                                           tmp_path, capsys, field, value):
    """The platform is copied from the config into the pushed index and the summary line: it must
    be a platform value (one rule, model.platform's), else one line naming the image, nothing pushed."""
    bad = hostile_image(tmp_path, target.host, "src/bad:1", **{field: value})
    good = f"{registry.host}/test/multi@{facts['multi']['platforms']['linux/arm64/v8']}"
    mark = target.log_offset()
    code, out, err = run(capsys, "index", "create", f"{target.host}/made/app:1", good, bad)
    assert code == 1 and out == "", err
    assert len(err.strip().splitlines()) == 1 and bad in err and field in err
    assert "\x1b" not in err and "\r" not in err and "\x07" not in err  # quoted, escaped
    assert not [p for m, p in target.requests_since(mark) if m in ("PUT", "POST", "PATCH")]  # nothing pushed
    # the same image read any other way: the same rule
    code, _, err = run(capsys, "inspect", bad)
    assert code == 1 and len(err.strip().splitlines()) == 1 and field in err


def test_index_add_and_remove_in_a_registry_keep_the_other_entries(registry, target, facts, cache_dir, capsys):
    plats = facts["multi"]["platforms"]
    dest = f"{target.host}/edit/app:1"
    assert run(capsys, "copy", f"{registry.host}/test/multi:v1", dest)[0] == 0
    before = json.loads(skopeo_raw(f"docker://{dest}"))
    # take arm/v6 out: its entry goes, the others (the attestation too) stay as they were
    code, out, err = run(capsys, "index", "remove", dest, "--platform", "linux/arm/v6", "--json")
    assert code == 0, err
    after = json.loads(skopeo_raw(f"docker://{dest}"))
    assert plats["linux/arm/v6"] not in [e["digest"] for e in after["manifests"]]
    assert sorted(map(json.dumps, after["manifests"])) == sorted(
        json.dumps(e) for e in before["manifests"] if e["digest"] != plats["linux/arm/v6"])
    assert [e.get("platform", {}).get("architecture") for e in after["manifests"]] == \
        ["amd64", "arm", "arm64", "unknown"]  # sorted by platform, the attestation last
    # add an amd64 image from elsewhere: it takes the amd64 entry's place, with its attestation
    single = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    code, out, err = run(capsys, "index", "add", dest, single, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["replaced"] == ["linux/amd64"] and doc["copied"] == 1
    final = json.loads(skopeo_raw(f"docker://{dest}"))
    digests = [e["digest"] for e in final["manifests"]]
    assert facts["single-gzip"]["manifest"] in digests and plats["linux/amd64"] not in digests
    assert facts["multi"]["attestation"] not in digests
    assert plats["linux/arm/v7"] in digests and plats["linux/arm64/v8"] in digests
    code, _, err = run(capsys, "index", "remove", dest, "--platform", "linux/s390x")
    assert code != 0 and "linux/s390x" in err and len(err.strip().splitlines()) == 1


def test_index_edits_in_a_layout_and_nested_indexes_carried(registry, facts, cache_dir, tmp_path, capsys):
    plats = facts["multi"]["platforms"]
    layout = tmp_path / "layout"
    ref = f"{registry.host}/test/multi@{facts['multi']['index']}"
    assert run(capsys, "pull", ref, "--all", "--format", "oci", "-o", str(layout), "--final-image-tag", "v1")[0] == 0
    code, out, err = run(capsys, "index", "remove", f"oci:{layout}:v1", "--platform", "linux/arm/v6,linux/arm/v7")
    assert code == 0, err
    index = validate_layout(layout)
    (entry,) = index["manifests"]
    assert entry["digest"] == out.strip()
    doc = json.loads(blob(layout, entry["digest"]))
    assert [e["digest"] for e in doc["manifests"]] == [plats["linux/amd64"], plats["linux/arm64/v8"],
                                                       facts["multi"]["attestation"]]
    # a new image from a registry goes into the layout, its blobs with it
    single = f"{registry.host}/test/single-zstd@{facts['single-zstd']['manifest']}"
    code, out, err = run(capsys, "index", "add", f"oci:{layout}:v1", single, "--json")
    assert code == 0, err
    validate_layout(layout)
    subprocess.run(["skopeo", "copy", "--all", "--quiet", f"oci:{layout}:v1", f"oci:{tmp_path / 'copy'}:x"],
                   check=True, capture_output=True)
    # a new index in a new layout, one of whose entries is an index itself (carried as it is)
    nested = tmp_path / "nested"
    code, out, err = run(capsys, "index", "create", f"oci:{nested}:n", ref,
                         f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}", "--json")
    assert code == 0, err
    index = validate_layout(nested)
    top = json.loads(blob(nested, index["manifests"][0]["digest"]))
    assert [e["digest"] for e in top["manifests"]] == [facts["single-gzip"]["manifest"], facts["multi"]["index"]]
    assert "platform" not in top["manifests"][1]
    assert blob(nested, facts["multi"]["index"]) == skopeo_raw(f"docker://{ref}")
    code, out, err = run(capsys, "index", "remove", f"oci:{nested}:n", "--platform", "linux/amd64")
    assert code == 0, err
    index = validate_layout(nested)
    (left,) = json.loads(blob(nested, index["manifests"][0]["digest"]))["manifests"]
    assert left == top["manifests"][1]  # the nested index, unchanged


def test_push_annotation_makes_a_new_manifest_with_them(registry, target, facts, cache_dir, tmp_path, capsys):
    layout = tmp_path / "one"
    assert run(capsys, "pull", f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}",
               "--format", "oci", "-o", str(layout))[0] == 0
    dest = f"{target.host}/annotated/app:1"
    code, out, err = run(capsys, "push", str(layout), dest, "--annotation", "org.opencontainers.image.source=x",
                         "--annotation", "a=b=c", "--json")
    assert code == 0, err
    manifest = json.loads(skopeo_raw(f"docker://{dest}"))
    assert manifest["annotations"] == {"a": "b=c", "org.opencontainers.image.source": "x"}
    assert json.loads(out)["digest"] != facts["single-gzip"]["manifest"]
    code, _, err = run(capsys, "push", str(layout), dest, "--annotation", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_copy_moves_whole_indexes_between_registries_layouts_and_archives(registry, target, facts, cache_dir,
                                                                         tmp_path, capsys):
    src = f"{registry.host}/test/multi:v1"
    layout, archive = tmp_path / "layout", tmp_path / "multi.oci.tar"
    for a, b in ((src, f"oci:{layout}:v1"), (f"oci:{layout}:v1", f"oci-archive:{archive}:v1"),
                 (f"oci-archive:{archive}:v1", f"docker://{target.host}/back/multi:v1")):
        code, out, err = run(capsys, "copy", a, b, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["digest"] == facts["multi"]["index"], (a, b)
        assert sorted(doc["platforms"]) == sorted(facts["multi"]["platforms"])
    validate_layout(layout)
    # every manifest came through byte for byte, the attestation's too
    for digest in [facts["multi"]["index"], *facts["multi"]["platforms"].values(), facts["multi"]["attestation"]]:
        assert skopeo_raw(f"docker://{target.host}/back/multi@{digest}") == \
            skopeo_raw(f"docker://{registry.host}/test/multi@{digest}")
    # one platform to a layout still writes that image alone
    code, out, err = run(capsys, "copy", "--platform", "linux/arm64", src, f"oci:{tmp_path / 'one'}:v1", "--json")
    assert code == 0 and json.loads(out)["digest"] == facts["multi"]["platforms"]["linux/arm64/v8"]
