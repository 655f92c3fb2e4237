"""Real docker-archives (docker save, ggcr, containers/image) as fromImage and as push sources."""
from __future__ import annotations

import json

import pytest

from registry_tools.formats.docker_archive import read_docker_archive
from registry_tools.errors import ManifestError, UsageError
from registry_tools.model.digest import Digest
from registry_tools.session import Session

from .helpers import CORPUS


def from_docker_archive(path, name, session):
    """The archive's image as the reader gives it: config and layers, stored under their diff_ids."""
    return read_docker_archive(path, name, session.cache, f"fromImage {path}")

FIX = CORPUS / "docker-archive" / "fixtures"
FACTS = json.loads((CORPUS / "docker-archive" / "fixtures_facts.json").read_text())

LOADABLE = [
    ("ggcr_tarball_test_image_1.tar", None),
    ("containers-image_almostempty.tar", None),
    ("ggcr_tarball_hello-world-v25.tar", None),  # Docker 25: OCI layout plus manifest.json
    ("ggcr_tarball_test_bundle.tar", "test_image_1"),  # a RepoTag without a tag: :latest
    ("ggcr_tarball_test_bundle.tar", "index.docker.io/library/test_image_2:latest"),
    ("ggcr_tarball_test_link.tar", "bazel/v1/tarball:test_image_3"),  # duplicate layers as symlinks
    ("mutate_whiteout_image.tar", None),
    ("mutate_overwritten_file.tar", None),
]


@pytest.mark.parametrize("name,tag", LOADABLE, ids=lambda v: str(v))
def test_loads_and_every_layer_matches_its_diff_id(name, tag, cache_dir):
    with Session() as s:
        base = from_docker_archive(FIX / name, tag, s)
        ids = base.config["rootfs"]["diff_ids"]
        assert [str(layer.diff_id) for layer in base.layers] == ids
        for layer in base.layers:  # stored under the diff_id, checked on the way in
            assert s.cache.has(layer.diff_id, layer.size)


@pytest.mark.parametrize("name,tag,error,match", [
    ("ggcr_tarball_null_manifest.tar", None, ManifestError, "lists no image"),
    ("ggcr_tarball_no_manifest.tar", None, ManifestError, "has no manifest.json"),
    ("ggcr_tarball_test_bundle.tar", None, UsageError, "holds 2 images"),
    ("ggcr_tarball_test_bundle.tar", "nothere:latest", UsageError, "no image tagged"),
])
def test_clear_errors(name, tag, error, match, cache_dir):
    with Session() as s, pytest.raises(error, match=match):
        from_docker_archive(FIX / name, tag, s)


def test_push_a_real_docker_save_archive(registry, cache_dir, capsys):
    """The config is pushed byte for byte (its digest is the image ID); layers get compressed."""
    from registry_tools import cli
    facts = FACTS["containers-image_almostempty.tar"]["per_image"][0]
    code = cli.main(["push", str(FIX / "containers-image_almostempty.tar"), f"{registry.host}/saved/empty:1", "-q"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["inspect", "--raw", f"{registry.host}/saved/empty:1", "-q"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["config"]["digest"] == facts["config_sha256"]
    assert len(manifest["layers"]) == len(facts["rootfs.diff_ids"])


def _archive(path, members: dict[str, bytes | str]) -> None:
    """A tar with files (bytes) and symlinks (str targets)."""
    import io
    import tarfile
    with tarfile.open(path, "w") as tf:
        for name, value in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, str):
                info.type, info.linkname = tarfile.SYMTYPE, value
                tf.addfile(info)
            else:
                info.size = len(value)
                tf.addfile(info, io.BytesIO(value))


@pytest.mark.parametrize("layers,links", [
    (["../../etc/passwd"], {}),
    (["/etc/passwd"], {}),
    (["layer.tar"], {"layer.tar": "../../../etc/passwd"}),
    (["a/layer.tar"], {"a/layer.tar": "../b/layer.tar", "b/layer.tar": "../a/layer.tar"}),
])
def test_paths_that_leave_the_archive_are_refused(tmp_path, cache_dir, layers, links):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode()
    members: dict = {"config.json": config,
                     "manifest.json": json.dumps([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": layers}]).encode()}
    members.update(links)
    _archive(tmp_path / "evil.tar", members)
    with Session() as s, pytest.raises(ManifestError, match="outside|leave the archive|link cycle"):
        from_docker_archive(tmp_path / "evil.tar", None, s)


def test_a_gzipped_archive_works_as_base(tmp_path, cache_dir):
    """nixpkgs' buildImage writes .tar.gz archives."""
    import gzip
    import shutil
    with open(FIX / "ggcr_tarball_test_image_1.tar", "rb") as src, gzip.open(tmp_path / "img.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with Session() as s:
        base = from_docker_archive(tmp_path / "img.tar.gz", None, s)
    assert len(base.layers) == len(base.config["rootfs"]["diff_ids"]) == 1


def _damaged_gzip(raw: bytes, damage: str) -> bytes:
    import gzip
    data = bytearray(gzip.compress(raw, mtime=0))
    if damage == "deflate":  # the compressed stream itself
        for i in range(20, 40):
            data[i] ^= 0xFF
    elif damage == "crc":  # the trailer's checksum
        data[-6] ^= 0xFF
    else:  # cut short
        del data[len(data) // 2:]
    return bytes(data)


def _archive_with_layer(path, layer: bytes, diff_id: str) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    _archive(path, {"manifest.json": json.dumps([{"Config": "config.json", "RepoTags": ["x:1"],
                                                  "Layers": ["layer.tar.gz"]}]).encode(),
                    "config.json": config, "layer.tar.gz": layer})


def _layer_tar() -> tuple[bytes, str]:
    import hashlib
    import io
    import os
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = os.urandom(200_000)
        info = tarfile.TarInfo("etc/data")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("damage", ["deflate", "crc", "truncated"])
def test_a_damaged_gzip_layer_is_a_layer_format_error_naming_the_layer(tmp_path, cache_dir, damage):
    from registry_tools.errors import LayerFormatError
    raw, diff_id = _layer_tar()
    _archive_with_layer(tmp_path / "bad.tar", _damaged_gzip(raw, damage), diff_id)
    with Session() as s:
        with pytest.raises(LayerFormatError, match=r"bad\.tar: layer layer\.tar\.gz: damaged gzip data \(.+\)$"):
            from_docker_archive(tmp_path / "bad.tar", None, s)
        assert not s.cache.has(Digest.parse(diff_id))  # nothing half-written into the cache


def test_a_build_from_an_archive_with_a_damaged_gzip_layer_ends_in_one_line(tmp_path):
    """The build's fromImage reads the archive's layers: damage there is one line, not a traceback."""
    import subprocess
    import sys
    raw, diff_id = _layer_tar()
    _archive_with_layer(tmp_path / "bad.tar", _damaged_gzip(raw, "deflate"), diff_id)
    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "motd").write_text("hello\n")
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x", "tag": "1", "fromImage": str(tmp_path / "bad.tar"),
                                                    "contents": ["root"]}))
    res = subprocess.run([sys.executable, "-m", "registry_tools", "build", str(tmp_path / "spec.json"),
                          "-o", str(tmp_path / "out.tar"), "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and "bad.tar: layer layer.tar.gz: damaged gzip data" in lines[0], res.stderr
    assert not (tmp_path / "out.tar").exists()
