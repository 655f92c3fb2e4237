"""The one verifying reader, directly and behind every source that feeds it.

Directly: bytes past the announced size fail on the read that brings the first of them
(not only at EOF, and before a tee sees them), too few fail at EOF, wrong bytes of the
right size fail on the digest. Behind each source (a registry, the cache, an OCI layout,
an oci-archive, a docker-archive) a blob too long, too short or wrong is one line, exit 1,
nothing written and nothing cached.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from registry_tools.errors import CacheDamaged, DigestMismatch, SizeMismatch, VerificationError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest, VerifyingReader, verify_bytes
from registry_tools.store.cache import BlobCache

from .helpers import run
from .support import imagegen
from .support.damage import FAR, HOW, damaged, docker_archive, mismatch, rewrite, serve_damaged, tar_directory
from .support.fakeregistry import serve_layout

DATA = bytes(range(256)) * 40 + b"the announced content"
DIGEST = Digest.of_bytes(DATA)


class Trickle:
    """A raw stream handing out at most `step` bytes a read; past `data` it goes on with filler
    for ever (`endless`), and complains if it is read again once past `stop` bytes."""

    def __init__(self, data: bytes, step: int, endless: bool = False, stop: int | None = None):
        self.data = data
        self.step = step
        self.endless = endless
        self.stop = stop
        self.handed = 0

    def read(self, n: int = -1) -> bytes:
        if self.stop is not None and self.handed > self.stop:
            raise AssertionError(f"read again after {self.handed} bytes, past the announced {self.stop}")
        want = self.step if n < 0 else min(n, self.step)
        out = self.data[self.handed:self.handed + want]
        if self.endless and len(out) < want:
            out += b"x" * (want - len(out))
        self.handed += len(out)
        return out


def read_through(reader: VerifyingReader, n: int, limit: int) -> None:
    """Read until EOF; fails the test if `limit` bytes go by without an error or an EOF."""
    got = 0
    while chunk := reader.read(n):
        got += len(chunk)
        if got > limit:
            pytest.fail(f"read {got} bytes of a {limit}-byte bound without an error")


# --- the reader itself --------------------------------------------------------------------------

@pytest.mark.parametrize("background", [False, True], ids=["hash-inline", "hash-background"])
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_more_bytes_than_announced_fail_on_the_read_that_brings_the_first_of_them(step, background):
    raw = Trickle(DATA, step, endless=True, stop=len(DATA))
    tee = io.BytesIO()
    reader = VerifyingReader(raw, DIGEST, len(DATA), "blob under test", tee=tee, background=background)
    with pytest.raises(SizeMismatch) as e:
        read_through(reader, step, 4 * len(DATA))
    reader.close()
    assert e.value.expected == len(DATA)
    assert e.value.actual == raw.handed <= len(DATA) + step  # the read that crossed the size, no later
    if step == 1:
        assert e.value.actual == len(DATA) + 1
    kept = tee.getvalue()
    assert len(kept) <= len(DATA) and kept == DATA[:len(kept)]  # the tee never saw a byte past the size
    assert "blob under test" in str(e.value) and "size mismatch" in str(e.value)
    assert not reader.verified


@pytest.mark.parametrize("background", [False, True], ids=["hash-inline", "hash-background"])
def test_an_endless_stream_is_stopped_at_the_announced_size(background):
    """A source that never ends (a hostile server, a device) fails once past the size."""
    raw = Trickle(b"", 1 << 16, endless=True, stop=1000)
    reader = VerifyingReader(raw, DIGEST, 1000, "endless", background=background)
    with pytest.raises(SizeMismatch):
        read_through(reader, 1 << 16, 10 << 20)
    reader.close()
    assert raw.handed == 1 << 16


@pytest.mark.parametrize("background", [False, True], ids=["hash-inline", "hash-background"])
@pytest.mark.parametrize("step", [1, 4096])
def test_fewer_bytes_than_announced_fail_at_eof(step, background):
    short = DATA[:-5]
    reader = VerifyingReader(Trickle(short, step), DIGEST, len(DATA), "short blob", background=background)
    got = b""
    with pytest.raises(SizeMismatch) as e:
        while chunk := reader.read(step):
            got += chunk
    assert got == short  # every byte there was came through; the end is what failed
    assert (e.value.expected, e.value.actual) == (len(DATA), len(short))
    assert not reader.verified


@pytest.mark.parametrize("background", [False, True], ids=["hash-inline", "hash-background"])
@pytest.mark.parametrize("where", [0, len(DATA) // 2, len(DATA) - 1])
def test_wrong_bytes_of_the_right_size_fail_on_the_digest(where, background):
    wrong = bytearray(DATA)
    wrong[where] ^= 0x80
    reader = VerifyingReader(Trickle(bytes(wrong), 4096), DIGEST, len(DATA), "wrong blob", background=background)
    with pytest.raises(DigestMismatch) as e:
        read_through(reader, 4096, len(DATA))
    assert e.value.expected == str(DIGEST)
    assert e.value.actual == str(Digest.of_bytes(bytes(wrong)))
    assert reader.count == len(DATA) and not reader.verified


@pytest.mark.parametrize("background", [False, True], ids=["hash-inline", "hash-background"])
def test_the_right_bytes_pass_and_eof_stays_eof(background):
    tee = io.BytesIO()
    reader = VerifyingReader(Trickle(DATA, 1000), DIGEST, len(DATA), "good blob", tee=tee, background=background)
    read_through(reader, 1000, len(DATA))
    assert reader.verified and reader.count == len(DATA) and tee.getvalue() == DATA
    assert reader.read(1000) == b"" and reader.read() == b""  # checked once; EOF again is no error


def test_without_a_size_the_digest_alone_catches_more_or_fewer_bytes():
    """A layer's tar against its diff_id: no size is announced."""
    for other in (DATA + b"!", DATA[:-1], b""):
        with pytest.raises(DigestMismatch):
            VerifyingReader(io.BytesIO(other), DIGEST, None, "tar (diff_id)").drain()
    VerifyingReader(io.BytesIO(DATA), DIGEST, None, "tar (diff_id)").drain()


@pytest.mark.parametrize("bad", [DATA + b"!", DATA[:-1], DATA[:-1] + b"!"], ids=["long", "short", "wrong"])
def test_the_origin_chooses_the_error_class_while_the_check_stays_in_the_reader(bad):
    def damaged_cache(e: VerificationError) -> Exception:
        return CacheDamaged(DIGEST, str(e))

    reader = VerifyingReader(io.BytesIO(bad), DIGEST, len(DATA), "cached", fail=damaged_cache)
    with pytest.raises(CacheDamaged) as e:
        reader.drain(len(DATA))
    assert e.value.digest == DIGEST and "mismatch" in e.value.reason


def test_bytes_in_memory_and_read_all_get_the_same_checks():
    verify_bytes("doc", DATA, DIGEST, len(DATA))
    with pytest.raises(SizeMismatch):
        verify_bytes("doc", DATA + b"x", DIGEST, len(DATA))
    with pytest.raises(SizeMismatch):
        verify_bytes("doc", DATA[:-1], DIGEST, len(DATA))
    with pytest.raises(DigestMismatch):
        verify_bytes("doc", DATA[:-1] + b"x", DIGEST, len(DATA))
    assert VerifyingReader(io.BytesIO(DATA), DIGEST, len(DATA), "doc").read_all(len(DATA)) == DATA
    with pytest.raises(SizeMismatch, match="limit"):  # a document over the limit: refused before reading
        VerifyingReader(io.BytesIO(DATA), DIGEST, len(DATA), "doc").read_all(len(DATA) - 1)
    with pytest.raises(SizeMismatch, match="limit"):  # no size announced: refused once past the limit
        VerifyingReader(Trickle(b"", 4096, endless=True), DIGEST, None, "doc").read_all(10_000)


# --- behind every source ------------------------------------------------------------------------

def small_image(compression: str = "gzip") -> tuple[imagegen.Layout, imagegen.Blob, imagegen.Blob]:
    """(layout, manifest, layer): one layer, tagged v1."""
    lay = imagegen.Layout()
    layer, diff = lay.layer({"etc/hello": b"hello " * 3000, "etc/other": b"other\n"}, compression)
    img = lay.image([(layer, diff)])
    lay.tag(img, "v1")
    return lay, img, layer


def part(lay: imagegen.Layout, img: imagegen.Blob, layer: imagegen.Blob, target: str) -> str:
    """The digest of the blob `target` names: the layer, the config or the manifest."""
    if target == "layer":
        return layer.digest
    if target == "config":
        return json.loads(img.data)["config"]["digest"]
    return img.digest


def make_dest(tmp_path: Path, fmt: str) -> Path:
    """A destination that already holds something: a file, or an empty directory for a layout."""
    out = tmp_path / "out" / ("layout" if fmt == "oci" else "img.tar")
    out.parent.mkdir()
    if fmt == "oci":
        out.mkdir()
    else:
        out.write_bytes(b"previous contents")
    return out


def assert_untouched(out: Path, fmt: str) -> None:
    if fmt == "oci":
        assert out.is_dir() and list(out.iterdir()) == []
    else:
        assert out.read_bytes() == b"previous contents"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # nothing left beside it


def assert_not_cached(cache_dir: Path, digest: str) -> None:
    assert not (cache_dir / "blobs" / "sha256" / digest.split(":", 1)[1]).exists()
    assert not (cache_dir / "meta" / "sha256" / (digest.split(":", 1)[1] + ".json")).exists()
    tmp = cache_dir / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry-tools: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
@pytest.mark.parametrize("target", ["layer", "config"])
@pytest.mark.parametrize("how", HOW)
def test_a_registry_serving_other_bytes_than_the_descriptor_says(httpserver, tmp_path, cache_dir, capsys,
                                                                 how, target, fmt):
    """Content-Length agrees with what is sent: only the reader can tell. Megabytes too many
    fail as a size mismatch, on the first byte past the size, before the transport's own bound."""
    lay, img, layer = small_image()
    digest = part(lay, img, layer, target)
    serve_damaged(httpserver, lay, {digest: damaged(lay.blobs[digest], how)})
    out = make_dest(tmp_path, fmt)
    code, _, err = run(capsys, "pull", f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}",
                       "--format", fmt, "-o", str(out), "-q")
    line = one_line(err)
    assert code == 1
    assert mismatch(how) in line and ("layer 1/1 " + digest if target == "layer" else "config of") in line
    assert_untouched(out, fmt)
    assert_not_cached(cache_dir, digest)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci"])
@pytest.mark.parametrize("target", ["layer", "config", "manifest"])
@pytest.mark.parametrize("how", HOW)
def test_a_damaged_cached_blob_is_caught_by_the_reader_and_fetched_again(httpserver, tmp_path, cache_dir, capsys,
                                                                       caplog, how, target, fmt):
    lay, img, layer = small_image()
    serve_layout(httpserver, lay)
    ref = f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}"
    first = tmp_path / "first"
    assert run(capsys, "pull", ref, "--format", fmt, "-o", str(first), "-q")[0] == 0
    digest = part(lay, img, layer, target)
    path = cache_dir / "blobs" / "sha256" / digest.split(":", 1)[1]
    good = path.read_bytes()
    rewrite(path, damaged(good, how))
    # read directly: the cache's typed error, for a blob too long on the read that crosses the size
    with BlobCache(cache_dir).open(mf.Descriptor("", Digest.parse(digest), len(good))) as reader:
        with pytest.raises(CacheDamaged) as e:
            assert reader.read(len(good)) == damaged(good, how)[:len(good)]
            reader.read(1)
    assert e.value.digest == Digest.parse(digest) and mismatch(how) in e.value.reason
    if how in ("long", "far"):
        assert f"got {len(good) + 1}" in e.value.reason
    # through a pull: the damaged copy is found, evicted, fetched again; none of it reaches the output
    second = tmp_path / "second"
    code, _, err = run(capsys, "pull", ref, "--format", fmt, "-o", str(second), "-q")
    assert code == 0, err
    if (target, how) == ("layer", "wrong"):  # else the size (or, for a manifest or config, the
        assert f"damaged copy of {digest}" in caplog.text  # place that reads it) tells, silently
    assert path.read_bytes() == good
    if fmt == "oci":
        assert sorted(p.name for p in (second / "blobs/sha256").iterdir()) == \
            sorted(p.name for p in (first / "blobs/sha256").iterdir())
        for p in (first / "blobs/sha256").iterdir():
            assert (second / "blobs/sha256" / p.name).read_bytes() == p.read_bytes()
    else:
        assert second.read_bytes() == first.read_bytes()


def layout_with(tmp_path: Path, kind: str, target: str, how: str) -> tuple[str, str]:
    """An OCI layout (or oci-archive) one of whose blob files is damaged: (source, digest)."""
    lay, img, layer = small_image()
    digest = part(lay, img, layer, target)
    root = lay.write(tmp_path / "layout")
    rewrite(root / "blobs" / "sha256" / digest.split(":", 1)[1], damaged(lay.blobs[digest], how))
    if kind == "oci":
        return f"oci:{root}:v1", digest
    return f"oci-archive:{tar_directory(root, tmp_path / 'layout.tar')}:v1", digest


@pytest.mark.parametrize("dest", ["docker-archive", "oci"])
@pytest.mark.parametrize("kind", ["oci", "oci-archive"])
@pytest.mark.parametrize("target", ["layer", "config", "manifest"])
@pytest.mark.parametrize("how", HOW)
def test_a_layout_whose_blob_file_differs_from_its_descriptor(tmp_path, cache_dir, capsys, how, target, kind, dest):
    source, digest = layout_with(tmp_path, kind, target, how)
    out = make_dest(tmp_path, dest)
    code, _, err = run(capsys, "copy", source, f"{dest}:{out}", "-q")
    line = one_line(err)
    assert code == 1 and mismatch(how) in line and digest in line
    assert_untouched(out, dest)
    assert_not_cached(cache_dir, digest)


@pytest.mark.parametrize("dest", ["oci-archive", "oci"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("how", ["long", "short", "wrong"])
def test_a_docker_archive_layer_other_than_its_diff_id(tmp_path, cache_dir, capsys, how, compression, dest):
    """Uncompressed, only the diff_id can tell; compressed, the decompressor may tell first (a
    damaged stream): either way one line that names the archive and the layer."""
    raw = imagegen.tar_of({"etc/hello": b"hello " * 3000, "etc/other": b"other\n"})
    diff_id = imagegen.sha(raw)
    archive = docker_archive(tmp_path / "src.tar", [damaged(imagegen.compress(raw, compression), how)], [diff_id])
    out = make_dest(tmp_path, dest)
    code, _, err = run(capsys, "copy", f"docker-archive:{archive}", f"{dest}:{out}", "-q")
    line = one_line(err)
    assert code == 1 and "0/layer.tar" in line and str(archive) in line
    if compression == "none":
        assert "diff_id" in line and "digest mismatch" in line
    assert_untouched(out, dest)
    assert_not_cached(cache_dir, diff_id)


def test_an_intact_docker_archive_passes_the_same_reader(tmp_path, cache_dir, capsys):
    """The other side of the test above: the same archive, undamaged, is copied."""
    raw = imagegen.tar_of({"etc/hello": b"hello " * 3000, "etc/other": b"other\n"})
    for compression in ("none", "gzip", "zstd"):
        archive = docker_archive(tmp_path / f"{compression}.tar", [imagegen.compress(raw, compression)],
                                 [imagegen.sha(raw)])
        out = tmp_path / f"{compression}-out.tar"
        code, _, err = run(capsys, "copy", f"docker-archive:{archive}", f"docker-archive:{out}", "-q")
        assert code == 0, err
        with tarfile.open(out) as tf:
            names = tf.getnames()
        assert f"{imagegen.sha(raw).split(':')[1]}.tar" in names


def test_far_is_past_the_transports_slack():
    from registry_tools.registry.blob import SLACK

    assert FAR > SLACK
