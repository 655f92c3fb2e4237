"""A config whose diff_id misstates its layer's content: refused in every output, and never
remembered as checked, so no later pull sharing the cache (in any format) takes it.

The layer's compressed bytes are right (its digest matches): only decompressing it and
hashing the tar can tell. The cache keeps a layer's measured facts (diff_id, size) once
that check passed; a pull that finds them skips it, so they must never be written for a
diff_id that did not match.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import run
from .support import imagegen
from .support.fakeregistry import serve_layout

FILES = {"etc/hello": b"hello " * 3000, "etc/other": b"other\n"}
# Every output a pinned image can be written to (pull), or hashed to (prefetch), or flattened to (export),
# or assembled to from a layer pin (which read no layer: the assembly is where the diff_id is checked).
OUTPUTS = ["pull:docker-archive", "pull:oci-archive", "pull:oci", "prefetch:docker-archive", "prefetch:oci",
           "export", "assemble:oci-archive"]
FORMATS = ["docker-archive", "oci-archive", "oci"]


class Images:
    """Two images of one layer blob at /v2/x/y: `right` names its true diff_id, `wrong` another's."""

    def __init__(self, httpserver, compression: str = "gzip"):
        lay = imagegen.Layout()
        self.layer, self.diff_id = lay.layer(FILES, compression)
        self.other_diff_id = imagegen.sha(imagegen.tar_of({"etc/hello": b"something else\n"}))
        self.right = lay.image([(self.layer, self.diff_id)])
        self.wrong = lay.image([(self.layer, self.other_diff_id)], config_extra={"author": "misstated"})
        lay.tag(self.wrong, "v1")
        self.lay = lay
        serve_layout(httpserver, lay)
        self.repo = f"{httpserver.host}:{httpserver.port}/x/y"

    def ref(self, image: imagegen.Blob) -> str:
        return f"{self.repo}@{image.digest}"


class Run:
    """One output of an image: its exit code, stderr, the path it writes (None for a hash only),
    and what was beside that path before."""

    def __init__(self, capsys, work: Path, how: str, ref: str, name: str):
        command, _, fmt = how.partition(":")
        self.out: Path | None = work / name if command != "prefetch" else None
        self.before = sorted(p.name for p in work.iterdir())
        if command == "pull":
            self.code, _, self.err = run(capsys, "pull", ref, "--format", fmt, "-o", str(self.out), "-q")
        elif command == "prefetch":
            repo, _, digest = ref.partition("@")
            self.code, _, self.err = run(capsys, "prefetch", repo, digest, "--format", fmt, "-q")
        elif command == "assemble":
            repo, _, digest = ref.partition("@")
            code, pin, err = run(capsys, "prefetch", repo, digest, "--layers", "--format", fmt, "--json")
            assert code == 0, err  # a layer pin reads manifests and the config only
            pin_file = work.parent / f"{name}.pin.json"
            pin_file.write_text(pin)
            self.code, _, self.err = run(capsys, "assemble", str(pin_file), "-o", str(self.out), "-q")
        else:
            self.code, _, self.err = run(capsys, "export", ref, "-o", str(self.out), "-q")
        self.after = sorted(p.name for p in work.iterdir())


def output(capsys, work: Path, how: str, ref: str, name: str) -> Run:
    return Run(capsys, work, how, ref, name)


def assert_refused(r: Run, images: Images) -> None:
    lines = r.err.strip().splitlines()
    assert r.code == 1, r.err
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    assert "diff_id" in lines[0] and "digest mismatch" in lines[0] and images.other_diff_id in lines[0]
    assert r.after == r.before  # nothing written, nothing half-written beside it


def assert_not_marked(cache_dir: Path, images: Images) -> None:
    """No fact about the layer names the misstated diff_id (or any, unless the right one was checked)."""
    facts = cache_dir / "meta" / "sha256" / (images.layer.digest.split(":", 1)[1] + ".json")
    if facts.exists():
        assert json.loads(facts.read_text())["diff_id"] == images.diff_id


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.mark.parametrize("how", OUTPUTS)
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_wrong_diff_id_is_refused_in_every_output(httpserver, work, cache_dir, capsys, how, compression):
    images = Images(httpserver, compression)
    assert_refused(output(capsys, work, how, images.ref(images.wrong), "out"), images)
    assert_not_marked(cache_dir, images)


@pytest.mark.parametrize("second", OUTPUTS)
@pytest.mark.parametrize("first", OUTPUTS)
def test_a_wrong_diff_id_is_refused_again_by_any_output_sharing_the_cache(httpserver, work, cache_dir, capsys,
                                                                          first, second):
    """The second run finds the layer's blob in the cache: it must check the diff_id all the same."""
    images = Images(httpserver)
    ref = images.ref(images.wrong)
    assert_refused(output(capsys, work, first, ref, "first"), images)
    assert_refused(output(capsys, work, second, ref, "second"), images)
    assert_not_marked(cache_dir, images)
    assert (cache_dir / "blobs" / "sha256" / images.layer.digest.split(":", 1)[1]).exists()  # the blob was cached


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_layer_checked_for_one_image_does_not_vouch_for_anothers_wrong_diff_id(httpserver, work, cache_dir,
                                                                                 capsys, fmt):
    """The same blob under two configs: the right one's check is kept; the wrong one is refused all the
    same, in every format, and the right one still pulls afterwards."""
    images = Images(httpserver)
    r = output(capsys, work, f"pull:{fmt}", images.ref(images.right), "right-first")
    assert r.code == 0, r.err
    assert_not_marked(cache_dir, images)
    for i, how in enumerate(FORMATS):
        assert_refused(output(capsys, work, f"pull:{how}", images.ref(images.wrong), f"wrong-{i}"), images)
    r = output(capsys, work, f"pull:{fmt}", images.ref(images.right), "right-again")
    assert r.code == 0, r.err
    assert_not_marked(cache_dir, images)


@pytest.mark.parametrize("fmt", FORMATS)
def test_after_a_refused_wrong_diff_id_the_right_image_pulls(httpserver, work, cache_dir, capsys, fmt):
    images = Images(httpserver)
    for i, how in enumerate(FORMATS):
        assert_refused(output(capsys, work, f"pull:{how}", images.ref(images.wrong), f"wrong-{i}"), images)
    r = output(capsys, work, f"pull:{fmt}", images.ref(images.right), "right")
    assert r.code == 0, r.err
    facts = json.loads((cache_dir / "meta" / "sha256" / (images.layer.digest.split(":", 1)[1] + ".json"))
                       .read_text())
    assert facts["diff_id"] == images.diff_id


@pytest.mark.parametrize("second", FORMATS)
@pytest.mark.parametrize("first", FORMATS)
def test_a_layout_with_a_wrong_diff_id_is_refused_in_every_format_sharing_the_cache(tmp_path, work, cache_dir,
                                                                                    capsys, first, second):
    """The same from an OCI layout (copy): its blobs land in the cache first, verified by digest."""
    lay = imagegen.Layout()
    layer, _ = lay.layer(FILES, "gzip")
    wrong = imagegen.sha(imagegen.tar_of({"etc/hello": b"something else\n"}))
    lay.tag(lay.image([(layer, wrong)]), "v1")
    root = lay.write(tmp_path / "layout")
    for name, fmt in (("first", first), ("second", second)):
        out = work / name
        code, _, err = run(capsys, "copy", f"oci:{root}:v1", f"{fmt}:{out}", "-q")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "diff_id" in err and "digest mismatch" in err and wrong in err
        assert not out.exists()
    facts = cache_dir / "meta" / "sha256" / (layer.digest.split(":", 1)[1] + ".json")
    assert not facts.exists()
