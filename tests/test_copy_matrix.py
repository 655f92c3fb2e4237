"""One copy engine: every source into every destination, through every transform, and a peer
reads each result.

Sources: a registry, an OCI layout directory, an oci-archive, a docker-archive written by
skopeo (plain and gzipped), and the builder. Destinations: a registry, an OCI layout, an
oci-archive, a docker-archive, podman's storage, a stream and a hash. Fixture images have
gzip, zstd and uncompressed layers. skopeo reads every archive, layout and pushed image back
and podman every image loaded into it; a hash equals the sha256 of the same archive written
to a file, and a stream's bytes equal that file's.

Every transform (none, mutate, append, flatten, rebase) runs on an image built on
single-gzip (its two layers, then one of the builder's) from every source into every
destination, as a user names them: endpoints, through the API (the builder, a stream and a
hash have no endpoint: they go through the engine with the same transforms). umoci unpacks
each layout written and finds the tree the transform makes; podman loads a docker-archive
of each.
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
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry_tools import endpoint
from registry_tools.api import surgery
from registry_tools.api.copy import CopyOptions, copy as copy_endpoints
from registry_tools.builder.image import BuiltImage
from registry_tools.builder.spec import parse_spec
from registry_tools.engine import copy
from registry_tools.errors import UsageError
from registry_tools.formats.destination import ArchiveDestination, ArchiveOptions
from registry_tools.formats.docker_archive import DockerArchiveImage
from registry_tools.formats.oci_layout import LayoutImage
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Choice, host_platform
from registry_tools.registry.remote import RegistryImage
from registry_tools.session import Session
from registry_tools.surgery import Append, Edits, Flatten, Mutate, Rebase

from .helpers import IMAGES, umoci_tree
from .support import imagegen
from .support.registry import skopeo_push_layout

pytestmark = [pytest.mark.registry, pytest.mark.skopeo]

IMAGE_NAMES = ["single-gzip", "single-zstd", "single-none"]
SOURCES = ["registry", "layout", "oci-archive", "docker-archive", "docker-archive.gz", "builder"]
DESTINATIONS = ["registry", "oci", "oci-archive", "docker-archive", "podman", "stream", "hash"]
TRANSFORMS = ["none", "mutate", "append", "flatten", "rebase"]
EDITS = Edits(env=("EDITED=1",), labels={"matrix": "mutated"})


def skopeo_json(*args: str) -> dict:
    res = subprocess.run(["skopeo", "inspect", "--raw", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def skopeo_raw(*args: str) -> bytes:
    res = subprocess.run(["skopeo", "inspect", "--raw", *args], capture_output=True)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


@pytest.fixture(scope="module")
def podman():
    """podman's options for a storage of this module's own: vfs, paths short enough for its runroot."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:
        yield ["--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]


def podman_inspect(args: list[str], name: str) -> dict:
    res = subprocess.run(["podman", *args, "image", "inspect", name], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    [inspected] = json.loads(res.stdout)
    return inspected


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


def check(dest: str, out: Path, pushed: str, image, podman: list[str]) -> None:
    if dest == "registry":  # the manifest written is the image's, byte for byte
        raw = skopeo_raw("--tls-verify=false", f"docker://{pushed}")
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == str(image.manifest_descriptor.digest)
        assert json.loads(raw)["layers"]
    elif dest == "podman":
        layers = podman_inspect(podman, pushed)["RootFS"]["Layers"]
        assert layers == [str(layer.diff_id) for layer in image.layers]
    elif dest in ("oci", "oci-archive", "docker-archive"):
        assert skopeo_json(f"{dest}:{out}")["layers"]


@pytest.mark.parametrize("dest", DESTINATIONS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("name", IMAGE_NAMES)
def test_every_source_into_every_destination(name, source, dest, inputs, registry, facts, podman, tmp_path):
    if source == "builder" and name != IMAGE_NAMES[0]:
        pytest.skip("the builder has one input, not one per fixture image")
    if source.startswith("docker-archive") and name == "single-zstd":
        pytest.skip("skopeo 1.x and podman 4 refuse to write a docker-archive of a zstd image, and a "
                    "docker-archive's layers are uncompressed whatever the image had")
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        src = make_source(source, name, inputs, registry, facts, session)
        out = tmp_path / "out"
        pushed = f"{registry.host}/matrix/{name}-{source.replace('.', '-')}:{dest}"
        if dest == "podman":
            pushed = f"localhost/matrix/{name}-{source.replace('.', '-')}:v1"
            target = endpoint.parse(f"podman:{pushed}", "destination").destination(
                session, endpoint.Writing(podman_args=tuple(podman)))
        elif dest == "registry":
            target = endpoint.parse(pushed, "destination").destination(session, endpoint.Writing())
        else:
            fmt = {"stream": "docker-archive", "hash": "docker-archive"}.get(dest, dest)
            output = {"stream": io.BytesIO(), "hash": None}.get(dest, out)
            target = ArchiveDestination(session.store, ArchiveOptions(fmt, f"test/{name}", "v1"), output)
        image, result = copy(src, target, session.cache)
        assert image.layers
        check(dest, out, pushed, image, podman)
        if dest in ("stream", "hash"):  # the same archive as a file, byte for byte
            again = ArchiveDestination(session.store, ArchiveOptions("docker-archive", f"test/{name}", "v1"),
                                       tmp_path / "file.tar")
            _, file_hash = copy(make_source(source, name, inputs, registry, facts, session), again, session.cache)
            data = (tmp_path / "file.tar").read_bytes()
            assert file_hash == result if dest == "hash" else target.stream.getvalue() == data
            assert hashlib.sha256(data).digest() == file_hash


def test_podman_loads_a_docker_archive_copied_from_an_oci_archive(inputs, podman, tmp_path):
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        src = LayoutImage(inputs["single-zstd"]["oci-archive"], session.store, "v1")
        target = ArchiveDestination(session.store, ArchiveOptions("docker-archive", "test/zstd", "v1"),
                                    tmp_path / "img.tar")
        copy(src, target, session.cache)
    res = subprocess.run(["podman", *podman, "load", "-i", str(tmp_path / "img.tar")], capture_output=True, text=True)
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


# --- every transform, from every source into every destination ------------------------------------

@dataclass
class Derived:
    """An image built on single-gzip (two layers, then the builder's etc/motd) in every source kind."""

    spec: object  # the builder's spec of it
    sources: dict[str, str]  # kind -> SRC as typed
    diff_ids: list[str]
    tree: dict[str, str]  # umoci's unpacking of it
    rebased: dict[str, str]  # umoci's unpacking of it rebased onto single-none
    new_ids: list[str]  # single-none's diff_ids
    made: dict[str, str]  # the diff_id append and flatten make from the layout (every source makes the same)
    old_base: str
    new_base: str
    overlay: Path  # a directory to append


OVERLAY_TREE = {"etc/app.conf": "appended\n"}


@pytest.fixture(scope="module")
def derived(tmp_path_factory, registry, facts) -> Derived:
    root = tmp_path_factory.mktemp("derived")
    (root / "tree" / "etc").mkdir(parents=True)
    (root / "tree" / "etc" / "motd").write_text("built\n")
    (root / "overlay" / "etc").mkdir(parents=True)
    (root / "overlay" / "etc" / "app.conf").write_text("appended\n")
    spec = parse_spec({"name": "matrix/derived", "tag": "v1", "fromImage": str(IMAGES / "single-gzip"),
                       "fromImageName": "v1", "contents": [str(root / "tree")], "architecture": "amd64"})
    layout = root / "layout"
    with Session(cache_dir=str(root / "cache")) as session:
        built, _ = copy(BuiltImage(spec, session), ArchiveDestination(
            session.store, ArchiveOptions("oci", "matrix/derived", "v1"), layout), session.cache)
    with tarfile.open(root / "derived.oci.tar", "w") as tf:
        for path in sorted(layout.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    docker = root / "derived.docker.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:v1", f"docker-archive:{docker}:matrix/derived:v1"],
                   check=True)
    (root / "derived.docker.tar.gz").write_bytes(gzip.compress(docker.read_bytes(), mtime=0))
    skopeo_push_layout(layout, "v1", f"{registry.host}/matrix/derived:v1", all_images=False)
    shutil.copytree(IMAGES / "single-none", root / "single-none")  # umoci writes beside what it reads
    made = {}
    with Session(cache_dir=str(root / "cache")) as session:
        for edit in ("append", "flatten"):
            image, _ = copy(endpoint.parse(f"oci:{layout}:v1").image(session, Choice(host_platform())),
                            ArchiveDestination(session.store, ArchiveOptions("oci", "x", "v1"), None),
                            session.cache, transforms_of(edit, root / "overlay", session))
            made[edit] = str(image.layers[-1].diff_id)
    tree, _ = umoci_tree(layout, "v1", root)
    none_tree, _ = umoci_tree(root / "single-none", "v1", root)
    sources = {"registry": f"{registry.host}/matrix/derived:v1", "layout": f"oci:{layout}:v1",
               "oci-archive": f"oci-archive:{root / 'derived.oci.tar'}:v1", "docker-archive": f"docker-archive:{docker}",
               "docker-archive.gz": f"docker-archive:{docker}.gz"}
    return Derived(spec, sources, [str(layer.diff_id) for layer in built.layers], tree,
                   {**none_tree, "etc/motd": "built\n"}, facts["single-none"]["diff_ids"], made,
                   f"{registry.host}/test/single-gzip:v1", f"{registry.host}/test/single-none:v1",
                   root / "overlay")


def transforms_of(edit: str, overlay: Path, session: Session, bases: tuple[str, str] = ("", "")) -> tuple:
    """The transforms the API makes for `edit` (for what has no endpoint: the builder, a stream, a hash)."""
    if edit == "rebase":
        return (Rebase(*bases, session, True),)
    made = {"none": (), "mutate": (Mutate(EDITS, session.cache),), "append": (Append([overlay], session.cache),),
            "flatten": (Flatten(session.cache),)}
    return made[edit]


def edited(edit: str, source: str, dest: str, d: Derived, podman: list[str], session: Session) -> Digest:
    """`edit` from `source` to DEST as typed; the manifest digest written."""
    args = tuple(podman) if dest.startswith("podman:") else ()
    if source == "builder":
        target = endpoint.parse(dest, "destination").destination(session, endpoint.Writing(podman_args=args))
        image, _ = copy(BuiltImage(d.spec, session), target, session.cache,
                        transforms_of(edit, d.overlay, session, (d.old_base, d.new_base)))
        return image.manifest_descriptor.digest
    ends = surgery.Ends(d.sources.get(source, source), dest, podman_args=args)
    if edit == "none":
        result = copy_endpoints(CopyOptions(ends.source, ends.dest, podman_args=args), session)
    elif edit == "mutate":
        result = surgery.mutate(surgery.MutateOptions(ends, EDITS), session)
    elif edit == "append":
        result = surgery.append(surgery.AppendOptions(ends, [str(d.overlay)]), session)
    elif edit == "flatten":
        result = surgery.flatten(surgery.FlattenOptions(ends), session)
    else:
        result = surgery.rebase(surgery.RebaseOptions(ends, d.old_base, d.new_base), session)
    assert result.digest is not None
    return result.digest


def peer_read(kind: str, dest: str, podman: list[str]) -> tuple[bytes | None, dict]:
    """What a peer reads at DEST: the manifest as written (None where the peer makes one up: a
    docker-archive's, podman's) and the config (podman's inspection in the config's shape)."""
    if kind == "podman":
        inspected = podman_inspect(podman, dest.removeprefix("podman:"))
        return None, {"rootfs": {"diff_ids": inspected["RootFS"]["Layers"]}, "config": inspected["Config"]}
    flags = ["--tls-verify=false"] if kind == "registry" else []
    ref = f"docker://{dest}" if kind == "registry" else dest
    config = json.loads(skopeo_raw("--config", *flags, ref))
    return (None if kind == "docker-archive" else skopeo_raw(*flags, ref)), config


def expect(edit: str, config: dict, d: Derived) -> None:
    """The diff_ids and run settings `edit` makes of the derived image."""
    ids, run = config["rootfs"]["diff_ids"], config.get("config") or {}
    if edit in ("none", "mutate"):
        assert ids == d.diff_ids
    elif edit == "append":
        assert ids == d.diff_ids + [d.made["append"]]
    elif edit == "flatten":
        assert ids == [d.made["flatten"]]
    else:  # the new base's layers, then the image's own
        assert ids == d.new_ids + d.diff_ids[2:]
    assert ("EDITED=1" in (run.get("Env") or [])) == (edit == "mutate")
    assert (run.get("Labels") or {}).get("matrix") == ("mutated" if edit == "mutate" else None)


@pytest.mark.parametrize("dest", DESTINATIONS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("edit", TRANSFORMS)
def test_every_transform_from_every_source_into_every_destination(edit, source, dest, derived, registry, podman,
                                                                  tmp_path):
    label = f"{edit}-{source.replace('.', '-')}"
    named = {"registry": f"{registry.host}/matrix/{label}:v1", "oci": f"oci:{tmp_path / 'out'}:v1",
             "oci-archive": f"oci-archive:{tmp_path / 'out.tar'}:v1", "podman": f"podman:localhost/matrix/{label}:v1",
             "docker-archive": f"docker-archive:{tmp_path / 'out.tar'}:matrix/{label}:v1"}
    text = named.get(dest, f"docker-archive:{tmp_path / 'file.tar'}:matrix/{label}:v1")
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        if dest in ("stream", "hash"):  # no endpoint: the engine, then the same archive as a file
            stream = io.BytesIO() if dest == "stream" else None
            src = BuiltImage(derived.spec, session) if source == "builder" else \
                endpoint.parse(derived.sources[source], "source").image(session, Choice(host_platform()))
            target = ArchiveDestination(session.store, ArchiveOptions("docker-archive", f"matrix/{label}", "v1"),
                                        stream)
            _, said = copy(src, target, session.cache,
                           transforms_of(edit, derived.overlay, session, (derived.old_base, derived.new_base)))
        digest = edited(edit, source, text, derived, podman, session)
    if dest in ("stream", "hash"):
        data = (tmp_path / "file.tar").read_bytes()
        assert said == hashlib.sha256(data).digest()
        assert stream is None or stream.getvalue() == data
    manifest, config = peer_read({"stream": "docker-archive", "hash": "docker-archive"}.get(dest, dest), text, podman)
    assert manifest is None or Digest.parse(f"sha256:{hashlib.sha256(manifest).hexdigest()}") == digest
    expect(edit, config, derived)
    if dest == "oci":
        tree, runtime = umoci_tree(tmp_path / "out", "v1", tmp_path)
        trees = {"append": {**derived.tree, **OVERLAY_TREE}, "rebase": derived.rebased}
        assert tree == trees.get(edit, derived.tree)
        assert ("EDITED=1" in runtime["process"]["env"]) == (edit == "mutate")
    if dest == "docker-archive" and source == "layout":  # podman reads a docker-archive of each transform
        res = subprocess.run(["podman", *podman, "load", "-i", str(tmp_path / "out.tar")], capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stderr
        assert podman_inspect(podman, f"matrix/{label}:v1")["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]


@pytest.mark.parametrize("edit", TRANSFORMS)
def test_podman_is_a_destination_only(edit, derived, podman, tmp_path):
    """No combination has podman as its source: refused in one line, nothing written."""
    with Session(cache_dir=str(tmp_path / "cache")) as session:
        with pytest.raises(UsageError, match=r"^podman:localhost/x:1: podman: is a destination only$"):
            edited(edit, "podman:localhost/x:1", f"oci:{tmp_path / 'out'}:v1", derived, podman, session)
    assert not (tmp_path / "out").exists()


# --- a layer whose size record is wrong, sent to a stream -----------------------------------------

@pytest.mark.parametrize("source", ["registry", "layout"])
def test_a_stream_of_a_layer_whose_gzip_misstates_its_size_is_the_files_bytes(source, registry, tmp_path):
    """A multi-member gzip records only its last member's size. A docker-archive file is written as
    each layer lands, and written again, measured, when a record was wrong; a stream cannot be
    written again, so its layers are measured first: its bytes are the file's, and skopeo reads them."""
    lay = imagegen.Layout()
    raw = imagegen.tar_of({f"f{i}": bytes([i]) * 5000 for i in range(8)})
    members = gzip.compress(raw[:10240], mtime=0) + gzip.compress(raw[10240:], mtime=0)
    assert int.from_bytes(members[-4:], "little") != len(raw)  # the record the writer would trust
    image = lay.image([(lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], members)), imagegen.sha(raw))])
    lay.tag(image, "v1")
    lay.write(tmp_path / "lay")
    text = f"oci:{tmp_path / 'lay'}:v1"
    if source == "registry":
        text = f"{registry.host}/matrix/members:v1"
        skopeo_push_layout(tmp_path / "lay", "v1", text, all_images=False)
    stream, said = io.BytesIO(), {}
    for kind, output in (("stream", stream), ("file", tmp_path / "file.tar")):
        with Session(cache_dir=str(tmp_path / f"cache-{kind}")) as session:  # cold: nothing measured yet
            src = endpoint.parse(text, "source").image(session, Choice(host_platform()))
            target = ArchiveDestination(session.store, ArchiveOptions("docker-archive", "matrix/members", "v1"),
                                        output)
            _, said[kind] = copy(src, target, session.cache)
    data = (tmp_path / "file.tar").read_bytes()
    assert stream.getvalue() == data
    assert said["stream"] == said["file"] == hashlib.sha256(data).digest()
    (tmp_path / "stream.tar").write_bytes(stream.getvalue())
    config = json.loads(skopeo_raw("--config", f"docker-archive:{tmp_path / 'stream.tar'}"))
    assert config["rootfs"]["diff_ids"] == [imagegen.sha(raw)]
