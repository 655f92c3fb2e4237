"""pull against a real registry: platforms, formats, interop with skopeo and podman, pinning."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from registry_tools import cli
from registry_tools.model.digest import nix32_encode, sri
from registry_tools.api.pull import PullOptions, pull_image
from registry_tools.session import Session

from .helpers import CORPUS, GOLDEN

PLATFORMS = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"]

# sha256 of pull's output for the committed fixture images. These pin the archive
# layout: a change here is a breaking change for every user's pinned hash.


FINAL = ["--final-image-name", "example.com/golden", "--final-image-tag", "pinned"]


def image_ref(registry, facts, name: str) -> str:
    digest = facts[name]["index"] if name == "multi" else facts[name]["manifest"]
    return f"{registry.host}/test/{name}@{digest}"


def golden_pull(registry, facts, name, out, plat="linux/amd64", fmt="docker-archive", **kw):
    """A pull whose output does not depend on the test registry's port: the final name is fixed."""
    return pull_image(PullOptions(image_ref(registry, facts, name), out, platform=plat, format=fmt, final_image_name="example.com/golden", final_image_tag="pinned", **kw))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, umask: int | None = None):
    """The installed command in a child process, as a user runs it."""
    def pre():
        if umask is not None:
            os.umask(umask)
    return subprocess.run([sys.executable, "-m", "registry_tools", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, preexec_fn=pre, timeout=300)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return sri(h.digest())


@pytest.mark.parametrize("plat", PLATFORMS)
def test_each_platform_of_an_index(registry, facts, cache_dir, tmp_path, plat):
    out = tmp_path / "img.tar"
    r = golden_pull(registry, facts, "multi", out, plat)
    assert str(r.manifest_digest) == facts["multi"]["platforms"][plat]
    assert str(r.image_digest) == facts["multi"]["index"]
    assert sha256_file(out) == r.hash_sri
    golden = GOLDEN[("multi", plat, "docker-archive")]
    assert r.hash_sri == golden, f"output layout changed: {r.hash_sri}"


def test_os_arch_variant_flags_match_platform_flag(registry, facts, cache_dir, tmp_path):
    a = pull_image(PullOptions(image_ref(registry, facts, "multi"), tmp_path / "a.tar", os="linux", arch="arm", variant="v6"))
    b = pull_image(PullOptions(image_ref(registry, facts, "multi"), tmp_path / "b.tar", platform="linux/arm/v6"))
    assert a.sha256 == b.sha256
    assert str(a.manifest_digest) == facts["multi"]["platforms"]["linux/arm/v6"]
    c = pull_image(PullOptions(image_ref(registry, facts, "multi"), tmp_path / "c.tar", arch="aarch64"))
    assert str(c.manifest_digest) == facts["multi"]["platforms"]["linux/arm64/v8"]


def test_no_matching_platform_lists_offers(registry, facts, cache_dir, tmp_path, capsys):
    out = tmp_path / "x.tar"
    code = cli.main(["pull", image_ref(registry, facts, "multi"), "--platform", "linux/s390x", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6" in err
    assert "unknown" not in err  # the attestation entry is not offered
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_attestation_entry_never_chosen(registry, facts, cache_dir, tmp_path):
    with pytest.raises(Exception) as e:
        pull_image(PullOptions(image_ref(registry, facts, "multi"), tmp_path / "x.tar", platform="unknown/unknown"))
    assert "no image for platform" in str(e.value)


def test_arm_v8_falls_back_to_v7(registry, facts, cache_dir, tmp_path):
    r = pull_image(PullOptions(image_ref(registry, facts, "multi"), tmp_path / "x.tar", platform="linux/arm/v8"))
    assert str(r.manifest_digest) == facts["multi"]["platforms"]["linux/arm/v7"]


@pytest.mark.parametrize("name", ["single-gzip", "single-zstd", "single-none", "docker-types"])
def test_layer_compressions(registry, facts, cache_dir, tmp_path, name):
    out = tmp_path / "img.tar"
    r = golden_pull(registry, facts, name, out)
    assert r.hash_sri == GOLDEN[(name, "linux/amd64", "docker-archive")], r.hash_sri
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        assert len(manifest) == 1
        layers = manifest[0]["Layers"]
        assert [f"sha256:{n[:-4]}" for n in layers] == facts[name]["diff_ids"]
        for n in layers:  # each layer is stored uncompressed and hashes to its diff_id
            data = tf.extractfile(n).read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == f"sha256:{n[:-4]}"
            tarfile.open(fileobj=io.BytesIO(data)).getnames()  # and is a tar
        config = tf.extractfile(manifest[0]["Config"]).read()
        assert hashlib.sha256(config).hexdigest() + ".json" == manifest[0]["Config"]
        assert manifest[0]["RepoTags"] == ["example.com/golden:pinned"]
    plain = pull_image(PullOptions(image_ref(registry, facts, name), tmp_path / "plain.tar"))
    with tarfile.open(tmp_path / "plain.tar") as tf:  # by default: the name as typed, tag latest
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == [f"{registry.host}/test/{name}:latest"]
    assert plain.final_image_name == f"{registry.host}/test/{name}"


def test_docker_archive_entries_are_fixed(registry, facts, cache_dir, tmp_path):
    out = tmp_path / "img.tar"
    pull_image(PullOptions(image_ref(registry, facts, "multi"), out, platform="linux/amd64", final_image_name="example/app", final_image_tag="1.0"))
    with tarfile.open(out) as tf:
        members = tf.getmembers()
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime, m.mode) == (0, 0, "", "", 0, 0o444)
        names = [m.name for m in members]
        assert names[-2:] == ["manifest.json", "repositories"]
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == ["example/app:1.0"]
        repos = json.load(tf.extractfile("repositories"))
        assert list(repos) == ["example/app"] and list(repos["example/app"]) == ["1.0"]


def _validator():
    spec = importlib.util.spec_from_file_location("oci_validate", CORPUS / "oci-image-spec/oci_validate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_oci_layout_validates_and_reads_with_skopeo(registry, facts, cache_dir, tmp_path):
    out = tmp_path / "layout"
    pull_image(PullOptions(image_ref(registry, facts, "multi"), out, format="oci", platform="linux/arm64/v8"))
    v = _validator()
    index = json.loads((out / "index.json").read_text())
    v.validator_for("application/vnd.oci.image.index.v1+json").validate(index)
    v.validator_for("application/vnd.oci.layout.header.v1+json").validate(json.loads((out / "oci-layout").read_text()))
    (entry,) = index["manifests"]
    assert entry["digest"] == facts["multi"]["platforms"]["linux/arm64/v8"]
    man_raw = (out / "blobs/sha256" / entry["digest"].split(":")[1]).read_bytes()
    manifest = json.loads(man_raw)
    v.validator_for("application/vnd.oci.image.manifest.v1+json").validate(manifest)
    cfg = json.loads((out / "blobs/sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes())
    v.validator_for("application/vnd.oci.image.config.v1+json").validate(cfg)
    for blob in (out / "blobs/sha256").iterdir():  # every blob is named by its own digest
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    # The manifest is byte for byte what the registry serves.
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/test/multi@{entry['digest']}"],
                         capture_output=True, check=True).stdout
    assert raw == man_raw
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{out}"], capture_output=True, check=True).stdout)
    assert info["Architecture"] == "arm64" and info["Digest"] == entry["digest"]


def test_oci_hash_is_the_nar_hash(registry, facts, cache_dir, tmp_path):
    """A layout directory is pinned as Nix pins a directory: the sha256 of its NAR."""
    out = tmp_path / "layout"
    r = golden_pull(registry, facts, "multi", out, fmt="oci")
    assert r.hash_sri == GOLDEN[("multi", "linux/amd64", "oci")], r.hash_sri
    nix = subprocess.run(["sh", "-c", "command -v nix-hash"], capture_output=True, text=True)
    if nix.returncode == 0:  # cross-check with Nix itself where it is installed
        got = subprocess.run(["nix-hash", "--type", "sha256", "--base32", str(out)], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert got == r.hash_nix32


def test_oci_archive_reads_with_skopeo(registry, facts, cache_dir, tmp_path):
    out = tmp_path / "img.oci.tar"
    r = golden_pull(registry, facts, "multi", out, fmt="oci-archive")
    assert r.hash_sri == GOLDEN[("multi", "linux/amd64", "oci-archive")], r.hash_sri
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True,
                                     check=True).stdout)
    assert info["Digest"] == facts["multi"]["platforms"]["linux/amd64"]


def test_docker_archive_reads_with_skopeo(registry, facts, cache_dir, tmp_path):
    out = tmp_path / "img.tar"
    pull_image(PullOptions(image_ref(registry, facts, "multi"), out, platform="linux/arm/v7"))
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{out}"], capture_output=True,
                                     check=True).stdout)
    assert info["Architecture"] == "arm"
    assert len(info["Layers"]) == 2


@pytest.mark.parametrize("fmt,name", [("docker-archive", "img.tar"), ("oci-archive", "img.oci.tar")])
def test_podman_loads(registry, facts, cache_dir, tmp_path, fmt, name, request):
    if not any(os.access(os.path.join(p, "podman"), os.X_OK) for p in os.environ["PATH"].split(":")):
        pytest.fail("podman is missing: run `bash .ci/run` or install Debian's podman", pytrace=False)
    out = tmp_path / name
    pull_image(PullOptions(image_ref(registry, facts, "multi"), out, format=fmt, platform="linux/amd64", final_image_name="example.com/app", final_image_tag="pinned"))
    store = Path(tempfile.mkdtemp(prefix="rt-podman-", dir="/tmp"))  # podman wants a short runroot
    request.addfinalizer(lambda: shutil.rmtree(store, ignore_errors=True))
    base = ["podman", "--storage-driver", "vfs", "--root", str(store / "root"), "--runroot", str(store / "run")]
    res = subprocess.run(base + ["load", "-i", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "example.com/app:pinned" in res.stdout
    images = subprocess.run(base + ["images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True,
                            text=True, check=True).stdout
    assert "example.com/app:pinned" in images


def test_reproducible_under_other_umask_tz_locale_tmpdir(registry, facts, tmp_path):
    """The same arguments give the same bytes, whatever the environment (cold cache each time)."""
    ref = image_ref(registry, facts, "multi")
    results = []
    for i, (umask, tz, lang) in enumerate([(0o022, "UTC", "C.UTF-8"), (0o077, "Pacific/Chatham", "POSIX")]):
        work = tmp_path / f"run{i}"
        (work / "tmp").mkdir(parents=True)
        env = dict(os.environ, TZ=tz, LC_ALL=lang, LANG=lang, TMPDIR=str(work / "tmp"),
                   REGISTRY_TOOLS_CACHE=str(work / "cache"))
        for fmt, out in (("docker-archive", "a.tar"), ("oci-archive", "b.tar"), ("oci", "layout")):
            res = run_cli("pull", ref, "--platform", "linux/amd64", "--format", fmt, "-o", out, "-q", *FINAL,
                          env=env, cwd=work, umask=umask)
            assert res.returncode == 0, res.stderr
            results.append((fmt, res.stdout.strip()))
    first, second = results[:3], results[3:]
    assert first == second
    assert dict(first)["docker-archive"] == GOLDEN[("multi", "linux/amd64", "docker-archive")]
    assert dict(first)["oci-archive"] == GOLDEN[("multi", "linux/amd64", "oci-archive")]
    assert dict(first)["oci"] == GOLDEN[("multi", "linux/amd64", "oci")]


def test_hash_forms_accepted(registry, facts, cache_dir, tmp_path):
    golden = GOLDEN[("multi", "linux/amd64", "docker-archive")]
    raw = __import__("base64").b64decode(golden.split("-", 1)[1])
    for i, form in enumerate([golden, raw.hex(), nix32_encode(raw), "sha256:" + raw.hex()]):
        out = tmp_path / f"ok{i}.tar"
        r = golden_pull(registry, facts, "multi", out, hash=form)
        assert out.exists() and r.hash_sri == golden


def test_hash_mismatch_writes_nothing(registry, facts, cache_dir, tmp_path, capsys):
    ref = image_ref(registry, facts, "multi")
    out = tmp_path / "img.tar"
    out.write_bytes(b"what was here before")
    wrong = "sha256-" + __import__("base64").b64encode(b"\0" * 32).decode()
    code = cli.main(["pull", ref, "--platform", "linux/amd64", "--hash", wrong, "-o", str(out), "-q", *FINAL])
    err = capsys.readouterr().err
    assert code == 1
    assert wrong in err and GOLDEN[("multi", "linux/amd64", "docker-archive")] in err
    assert out.read_bytes() == b"what was here before"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["img.tar"]


def test_sha256_flag_is_an_alias(registry, facts, cache_dir, tmp_path, capsys):
    golden = GOLDEN[("multi", "linux/amd64", "docker-archive")]
    code = cli.main(["pull", image_ref(registry, facts, "multi"), "--platform", "linux/amd64", "--sha256", golden,
                     "-o", str(tmp_path / "x.tar"), "-q", *FINAL])
    assert code == 0 and capsys.readouterr().out.strip() == golden


def test_tag_alone_is_refused_with_a_hint(registry, cache_dir, tmp_path, capsys):
    code = cli.main(["pull", f"{registry.host}/test/multi:v1", "-o", str(tmp_path / "x.tar")])
    err = capsys.readouterr().err
    assert code == 2
    assert "prefetch" in err and "not pinned" in err


def test_digest_flag_and_at_form_agree(registry, facts, cache_dir, tmp_path, capsys):
    ref = f"{registry.host}/test/multi"
    code = cli.main(["pull", ref, "--digest", facts["multi"]["index"], "--platform", "linux/amd64",
                     "-o", str(tmp_path / "x.tar"), "-q", *FINAL])
    assert code == 0
    assert capsys.readouterr().out.strip() == GOLDEN[("multi", "linux/amd64", "docker-archive")]
    code = cli.main(["pull", image_ref(registry, facts, "multi"), "--digest", facts["single-gzip"]["manifest"],
                     "-o", str(tmp_path / "y.tar"), "-q"])
    assert code == 2


@pytest.mark.parametrize("args", [
    ["pull", "bad//name@sha256:" + "0" * 64, "-o", "x"],
    ["pull", "x@sha256:" + "0" * 64],
    ["pull", "x@sha256:123", "-o", "x"],
    ["pull", "x@sha256:" + "0" * 64, "--platform", "linux/arm/v7/extra", "-o", "x"],
    ["pull", "x@sha256:" + "0" * 64, "--hash", "sha256-nope", "-o", "x"],
    ["pull", "x@sha256:" + "0" * 64, "--final-image-tag", "bad tag", "-o", "x"],
    ["pull", "x@sha256:" + "0" * 64, "--format", "zip", "-o", "x"],
])
def test_bad_input_is_a_usage_error(args, capsys, cache_dir):
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.strip()


def test_second_pull_downloads_nothing(registry, facts, cache_dir, tmp_path):
    ref = image_ref(registry, facts, "multi")
    before = registry.log_offset()
    first = pull_image(PullOptions(ref, tmp_path / "a.tar", platform="linux/arm/v7"))
    requests = registry.requests_since(before)
    assert sum(1 for m, u in requests if "/blobs/" in u) == 3  # config and two layers
    mark = registry.log_offset()
    second = pull_image(PullOptions(ref, tmp_path / "b.tar", platform="linux/arm/v7"))
    assert registry.requests_since(mark) == []  # not one request: manifests and blobs are cached
    assert first.sha256 == second.sha256
    # Another platform shares one layer with it: only the others are fetched.
    mark = registry.log_offset()
    pull_image(PullOptions(ref, tmp_path / "c.tar", platform="linux/arm/v6"))
    blob_gets = [u for m, u in registry.requests_since(mark) if "/blobs/" in u and m == "GET"]
    assert len(blob_gets) == 2  # config and the platform's own layer; the shared layer came from the cache


def test_same_output_with_a_warm_and_a_cold_cache(registry, facts, tmp_path):
    ref = image_ref(registry, facts, "multi")
    a = pull_image(PullOptions(ref, tmp_path / "a.tar", platform="linux/amd64"), Session(cache_dir=str(tmp_path / "c1")))
    b = pull_image(PullOptions(ref, tmp_path / "b.tar", platform="linux/amd64"), Session(cache_dir=str(tmp_path / "c1")))
    c = pull_image(PullOptions(ref, tmp_path / "c.tar", platform="linux/amd64"), Session(cache_dir=str(tmp_path / "c2")))
    assert a.sha256 == b.sha256 == c.sha256


def test_missing_output_directory_fails_before_any_download(registry, facts, cache_dir, tmp_path, capsys):
    mark = registry.log_offset()
    code = cli.main(["pull", image_ref(registry, facts, "multi"), "-o", str(tmp_path / "missing" / "x.tar"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err
    assert registry.requests_since(mark) == []  # nothing was fetched
