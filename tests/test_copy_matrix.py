"""One copy engine: every source into every destination, and a peer reads each result.

Sources: a registry, an OCI layout directory, an oci-archive, a docker-archive written
by skopeo (plain and gzipped), and the builder. Destinations: a registry, an OCI
layout, an oci-archive, a docker-archive, a stream and a hash. Fixture images have
gzip, zstd and uncompressed layers. skopeo reads every archive, layout and pushed
image back; a hash equals the sha256 of the same archive written to a file, and a
stream's bytes equal that file's.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from registry_tools import endpoint
from registry_tools.builder.image import BuiltImage
from registry_tools.builder.spec import parse_spec
from registry_tools.engine import copy
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.formats.docker_archive import DockerArchiveImage
from registry_tools.formats.oci_layout import LayoutImage
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Choice, host_platform
from registry_tools.registry.remote import RegistryImage
from registry_tools.session import Session

from .helpers import IMAGES

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

IMAGE_NAMES = ["single-gzip", "single-zstd", "single-none"]
SOURCES = ["registry", "layout", "oci-archive", "docker-archive", "docker-archive.gz", "builder"]
DESTINATIONS = ["registry", "oci", "oci-archive", "docker-archive", "stream", "hash"]


def skopeo_json(*args: str) -> dict:
    res = subprocess.run(["skopeo", "inspect", "--raw", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, registry):
    """For each fixture image: its layout, an oci-archive of it, and skopeo's docker-archive (plain, gzipped)."""
    root = tmp_path_factory.mktemp("inputs")
    out = {}
    for name in IMAGE_NAMES:
        layout = IMAGES / name
        oci_archive = root / f"{name}.oci.tar"
        with tarfile.open(oci_archive, "w") as tf:
            for path in sorted(layout.rglob("*")):
                tf.add(path, arcname=str(path.relative_to(layout)), recursive=False)
        out[name] = {"layout": layout, "oci-archive": oci_archive}
        if name == "single-zstd":
            continue  # no peer here writes a docker-archive of a zstd image (see the skip below)
        docker = root / f"{name}.docker.tar"
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:v1", f"docker-archive:{docker}:test/{name}:v1"],
                       check=True)
        gz = root / f"{name}.docker.tar.gz"
        gz.write_bytes(gzip.compress(docker.read_bytes(), mtime=0))
        out[name].update({"docker-archive": docker, "docker-archive.gz": gz})
    tree = root / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("built\n")
    out["spec"] = parse_spec({"name": "test/built", "tag": "1", "contents": [str(tree)], "architecture": "amd64"})
    return out


def make_source(kind: str, name: str, inputs: dict, registry, facts: dict, session: Session):
    store = session.store
    if kind == "registry":
        ref = refs.parse_normalized(f"{registry.host}/test/{name}")
        return RegistryImage(session.source(ref), Digest.parse(facts[name]["manifest"]), Choice(host_platform()))
    if kind == "builder":
        return BuiltImage(inputs["spec"], session)
    path = inputs[name][kind]
    if kind.startswith("docker-archive"):
        return DockerArchiveImage(path, store)
    return LayoutImage(path, store, "v1")


def check(dest: str, out: Path, pushed: str, result) -> None:
    if dest == "registry":
        manifest = skopeo_json("--tls-verify=false", f"docker://{pushed}")
        assert manifest["layers"] and str(result.digest).startswith("sha256:")
    elif dest == "oci":
        assert skopeo_json(f"oci:{out}")["layers"]
    elif dest == "oci-archive":
        assert skopeo_json(f"oci-archive:{out}")["layers"]
    elif dest == "docker-archive":
        assert skopeo_json(f"docker-archive:{out}")["layers"]


@pytest.mark.parametrize("dest", DESTINATIONS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_every_source_into_every_destination(name, source, dest, inputs, registry, facts, tmp_path):
    if source == "builder" and name != IMAGE_NAMES[0]:
        pytest.skip("the builder has one input, not one per fixture image")
    if source.startswith("docker-archive") and name == "single-zstd":
        pytest.skip("skopeo 1.x and podman 4 refuse to write a docker-archive of a zstd image, and a "
                    "docker-archive's layers are uncompressed whatever the image had")
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        src = make_source(source, name, inputs, registry, facts, session)
        out = tmp_path / "out"
        pushed = f"{registry.host}/matrix/{name}-{source.replace('.', '-')}:{dest}"
        if dest == "registry":
            target = endpoint.parse(pushed, "destination").destination(session, endpoint.Writing())
        else:
            fmt = {"stream": "docker-archive", "hash": "docker-archive"}.get(dest, dest)
            output = {"stream": io.BytesIO(), "hash": None}.get(dest, out)
            target = ArchiveDestination(session.store, ArchiveOptions(fmt, f"test/{name}", "v1"), output)
        image, result = copy(src, target, session.cache)
        assert image.layers
        check(dest, out, pushed, result)
        if dest in ("stream", "hash"):  # the same archive as a file, byte for byte
            again = ArchiveDestination(session.store, ArchiveOptions("docker-archive", f"test/{name}", "v1"),
                                       tmp_path / "file.tar")
            _, file_hash = copy(make_source(source, name, inputs, registry, facts, session), again, session.cache)
            data = (tmp_path / "file.tar").read_bytes()
            assert file_hash == result if dest == "hash" else target.stream.getvalue() == data
            assert hashlib.sha256(data).digest() == file_hash


def test_podman_loads_a_docker_archive_copied_from_an_oci_archive(inputs, tmp_path):
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        src = LayoutImage(inputs["single-zstd"]["oci-archive"], session.store, "v1")
        target = ArchiveDestination(session.store, ArchiveOptions("docker-archive", "test/zstd", "v1"),
                                    tmp_path / "img.tar")
        copy(src, target, session.cache)
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:  # podman: runroot under 50 chars
        res = subprocess.run(["podman", "--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs",
                              "load", "-i", str(tmp_path / "img.tar")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "test/zstd:v1" in res.stdout + res.stderr


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive.gz", "layout"])
def test_archives_and_layouts_work_as_from_image(inputs, tmp_path, kind, facts):
    """fromImage reads through the same readers as every other copy: the base's layers come first."""
    base = inputs["single-gzip"][kind]
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "motd").write_text("on top\n")
    spec = parse_spec({"name": "test/derived", "tag": "1", "fromImage": str(base), "fromImageName": "v1"
                       if kind != "docker-archive.gz" else "test/single-gzip:v1", "contents": [str(tree)]})
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        target = ArchiveDestination(session.store, ArchiveOptions("oci", "test/derived", "1"), tmp_path / "out")
        image, _ = copy(BuiltImage(spec, session), target, session.cache)
    base_ids = facts["single-gzip"]["diff_ids"]
    assert [str(layer.diff_id) for layer in image.layers[:len(base_ids)]] == base_ids
    assert len(image.layers) == len(base_ids) + 1
    assert skopeo_json(f"oci:{tmp_path / 'out'}")["layers"]
