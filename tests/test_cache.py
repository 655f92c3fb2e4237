"""The blob cache: pruning keeps what is used, and what is pruned is simply fetched again."""
from __future__ import annotations

import os
import time

import pytest

from registry_tools import cli
from registry_tools.store.cache import BlobCache
from registry_tools.model.digest import Digest
from registry_tools.api.pull import PullOptions, pull_image


def test_prune_least_recently_used_first(tmp_path):
    cache = BlobCache(tmp_path / "c")
    digests = []
    for i in range(4):
        data = bytes([i]) * 1000
        d = Digest.of_bytes(data)
        cache.put_bytes(d, data)
        os.utime(cache.path(d), (time.time() - 1000 + i, time.time() - 1000 + i))
        digests.append(d)
    cache.touch(digests[0])  # the oldest, but just used
    removed, freed = cache.prune(max_bytes=2000)
    assert (removed, freed) == (2, 2000)
    assert [cache.has(d) for d in digests] == [True, False, False, True]
    assert cache.prune(older_than=100) == (1, 1000)  # digests[3] is ~997 s old, digests[0] fresh
    assert cache.usage() == (1, 1000)


def test_pull_after_prune_fetches_again(registry, facts, cache_dir, tmp_path, capsys):
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    a = pull_image(PullOptions(ref, tmp_path / "a.tar"))
    assert cli.main(["cache", "prune", "--max-size", "0"]) == 0
    assert cli.main(["cache", "info"]) == 0
    assert " 0 blobs" in capsys.readouterr().out
    mark = registry.log_offset()
    b = pull_image(PullOptions(ref, tmp_path / "b.tar"))
    assert a.sha256 == b.sha256
    assert sum(1 for m, u in registry.requests_since(mark) if "/blobs/" in u) == 3


def test_cache_usage_errors(capsys, cache_dir):
    assert cli.main(["cache", "prune"]) == 2
    assert cli.main(["cache", "prune", "--max-size", "lots"]) == 2
    assert "not a size" in capsys.readouterr().err


@pytest.mark.parametrize("order", ["verified-first", "written-first"])
def test_a_layer_checked_from_the_archive_is_recorded_once_both_the_copy_and_the_check_held(tmp_path, order):
    """A smaller layer's diff_id is checked from the archive's ordered hash while its copy may
    still be finishing (the gzip trailer, the size): the cache records it as measured only once
    both have ended well, with the compression the copy found."""
    import hashlib
    import io

    from registry_tools.model import manifest as mf
    from registry_tools.model.digest import Digest
    from registry_tools.model.image import Layer
    from registry_tools.store.blobs import BlobStore, LayerCheck

    tar = b"layer bytes" * 1000
    blob = Digest.parse("sha256:" + "cd" * 32)
    layer = Layer(mf.Descriptor(mf.OCI_LAYER, blob, 100), Digest.parse("sha256:" + hashlib.sha256(tar).hexdigest()))
    cache = BlobCache(tmp_path / "cache")
    check = LayerCheck(BlobStore(cache), layer, "layer 1/2", len(tar))
    if order == "written-first":
        check.written("gzip")
        assert cache.meta(blob) is None
        check.verify(io.BytesIO(tar))
    else:
        check.verify(io.BytesIO(tar))
        assert cache.meta(blob) is None  # the copy has not ended yet: nothing is trusted
        check.written("gzip")
    assert cache.meta(blob) == {"diff_id": str(layer.diff_id), "size": len(tar), "compression": "gzip"}
