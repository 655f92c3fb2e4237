"""A layer that dominates the image is decompressed while it downloads.

Its uncompressed size comes from its gzip trailer, asked for with a Range request before
the download; the output is the same, byte for byte, as when the layer is read from
the cache; damage, a wrong size record (a multi-member gzip) and a cut connection each
end in a verified output or a clear error with the destination untouched.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from registry_tools.api.pull import PullOptions, pull_image
from registry_tools.errors import DigestMismatch
from registry_tools.registry.client import RetryPolicy, TransportOptions
from registry_tools.registry.source import STREAM_FROM
from registry_tools.session import Session

from .support import imagegen
from .support.fakeregistry import FakeRegistry

BIG = os.urandom(STREAM_FROM + (2 << 20))  # random: gzip cannot shrink it below the streaming threshold


def image(multi_member: bool = False) -> tuple[imagegen.Layout, list[tuple[imagegen.Blob, str]]]:
    lay = imagegen.Layout()
    raw = imagegen.tar_of({"big.bin": BIG})
    if multi_member:  # two gzip members: the trailer records only the last one's size
        half = len(raw) // 2
        data = gzip.compress(raw[:half], 1, mtime=0) + gzip.compress(raw[half:], 1, mtime=0)
    else:
        data = gzip.compress(raw, 1, mtime=0)
    big = lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], data))
    small, small_diff = lay.layer({"etc/hello": b"hello\n"}, "gzip")
    return lay, [(big, imagegen.sha(raw)), (small, small_diff)]


def session(tmp_path: Path, name: str) -> Session:
    return Session(cache_dir=str(tmp_path / name), transport=TransportOptions(timeout=5),
                   retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1))


def tail_requests(fake: FakeRegistry) -> list[str]:
    return [h.get("Range", "") for m, p, h in fake.seen if m == "GET" and p == fake.blob_path(fake.big)
            and h.get("Range", "").startswith(f"bytes={len(fake.big.data) - 4}-")]


@pytest.fixture
def dest(tmp_path) -> Path:
    out = tmp_path / "img.tar"
    out.write_bytes(b"previous contents")
    return out


def test_a_dominant_layer_streams_and_gives_the_same_archive(httpserver, tmp_path, dest):
    lay, layers = image()
    fake = FakeRegistry(httpserver, layers=layers, lay=lay)
    streamed = pull_image(PullOptions(fake.ref, dest), session(tmp_path, "cold"))
    assert tail_requests(fake), "the size record was not asked for: the layer did not stream"
    cached = pull_image(PullOptions(fake.ref, tmp_path / "again.tar"), session(tmp_path, "cold"))  # from the cache
    assert streamed.sha256 == cached.sha256
    assert dest.read_bytes() == (tmp_path / "again.tar").read_bytes()


def test_damage_in_a_streamed_layer_is_caught(httpserver, tmp_path, dest):
    lay, layers = image()
    fake = FakeRegistry(httpserver, layers=layers, lay=lay)
    fake.faults[fake.blob_path(fake.big)] = ["wrong-bytes"] * 6  # the trailer (a wrong record) and the body
    with pytest.raises(DigestMismatch):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path, "c"))
    assert dest.read_bytes() == b"previous contents"
    assert not (tmp_path / "c" / "blobs" / "sha256" / fake.big.digest.split(":")[1]).exists()
    import threading
    import time

    deadline = time.monotonic() + 5  # the small layer's pending diff_id check ended with the pull
    while any(t.name == "diff_id" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "diff_id"]
    assert sorted(p.name for p in dest.parent.iterdir() if p.name != "c") == [dest.name]


def test_a_wrong_size_record_falls_back_to_exact_sizes(httpserver, tmp_path, dest):
    lay, layers = image(multi_member=True)
    fake = FakeRegistry(httpserver, layers=layers, lay=lay)
    result = pull_image(PullOptions(fake.ref, dest), session(tmp_path, "c"))
    assert tail_requests(fake)
    again = pull_image(PullOptions(fake.ref, tmp_path / "again.tar"), session(tmp_path, "c"))
    assert result.sha256 == again.sha256


def test_a_cut_in_a_streamed_layer_resumes(httpserver, tmp_path, dest):
    lay, layers = image()
    fake = FakeRegistry(httpserver, layers=layers, lay=lay)
    fake.faults[fake.blob_path(fake.big)] = ["reset", "reset"]  # the trailer request or the body, in any order
    result = pull_image(PullOptions(fake.ref, dest), session(tmp_path, "c"))
    reference = pull_image(PullOptions(fake.ref, None), session(tmp_path, "fresh"))
    assert result.sha256 == reference.sha256


def test_a_small_layer_beside_a_dominant_one_gives_way_and_fails_as_clearly(httpserver, tmp_path, dest, monkeypatch):
    """The smaller layers are produced on threads of lower priority (they give way to the dominant
    one, which does not): a wrong diff_id there still ends the pull in one error, the destination
    untouched."""
    from registry_tools.errors import VerificationError
    from registry_tools.formats import tar
    from registry_tools.workers import giving_way

    gave_way = []

    def spy(fn):
        gave_way.append(fn)
        return giving_way(fn)

    from registry_tools.store.blobs import LayerCheck

    checked = []
    verify = LayerCheck.verify

    def verify_spy(self, tar):
        checked.append(self.layer.diff_id)
        return verify(self, tar)

    monkeypatch.setattr(tar, "giving_way", spy)
    monkeypatch.setattr(LayerCheck, "verify", verify_spy)
    lay, layers = image()
    (big, big_diff), (small, small_diff) = layers
    fake = FakeRegistry(httpserver, layers=layers, lay=lay)
    (tmp_path / "good").mkdir()
    pull_image(PullOptions(fake.ref, tmp_path / "good" / "img.tar"), session(tmp_path, "good"))
    assert len(gave_way) == 1  # the small layer, not the dominant one
    # its diff_id was checked on the archive's own bytes, as the ordered hash read them at the end
    assert [str(d) for d in checked] == [small_diff]
    fake = FakeRegistry(httpserver, layers=[(big, big_diff), (small, "sha256:" + "0" * 64)], lay=lay)
    with pytest.raises(VerificationError, match="diff_id"):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path, "c"))
    assert len(gave_way) == 2 and len(checked) == 2
    assert dest.read_bytes() == b"previous contents"
    assert sorted(p.name for p in dest.parent.iterdir() if p.name not in ("c", "good")) == [dest.name]
