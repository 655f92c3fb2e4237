"""Real docker-archives (docker save, ggcr, containers/image) as fromImage and as push sources."""
from __future__ import annotations

import json

import pytest

from registry_tools.builder.base import from_docker_archive
from registry_tools.errors import ManifestError, UsageError
from registry_tools.session import Session

from .helpers import CORPUS

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
