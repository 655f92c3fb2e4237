"""copy, tags, tag and delete against real registries, read back by skopeo and podman."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile

import pytest

from registry_tools import cli
from registry_tools import endpoint as endpoints
from registry_tools.api.copy import CopyOptions, copy, parse_platforms
from registry_tools.api.tags import list_tags, tag
from registry_tools.errors import DigestMismatch, PlatformNotFound, RegistryError, UsageError
from registry_tools.session import Session

from .support.registry import LocalRegistry
from .helpers import run

WRITES = ("POST", "PATCH", "PUT")


def raw_of(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, check=True).stdout


def test_a_whole_index_pushed_by_skopeo_copy_all_round_trips_with_its_digest(registry, target, facts, cache_dir,
                                                                             capsys):
    src = f"{registry.host}/test/multi:v1"
    code, out, err = run(capsys, "copy", src, f"{target.host}/mirror/multi:v1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["digest"] == facts["multi"]["index"] == doc["sourceDigest"]
    assert raw_of(f"{target.host}/mirror/multi:v1") == raw_of(src)
    for digest in facts["multi"]["platforms"].values():
        assert raw_of(f"{target.host}/mirror/multi@{digest}") == raw_of(f"{registry.host}/test/multi@{digest}")
    assert doc["blobsUploaded"] > 0 and doc["bytesSent"] > 0 and not doc["upToDate"]
    # skopeo reads the whole copy back (every platform, every blob verified)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false",
                        f"docker://{target.host}/mirror/multi:v1", f"oci:{d}:x"], check=True, capture_output=True)


def test_a_second_copy_costs_one_head_and_sends_nothing(registry, target, cache_dir, capsys):
    src, dst = f"{registry.host}/test/multi:v1", f"{target.host}/again/multi:v1"
    assert run(capsys, "copy", src, dst)[0] == 0
    mark = target.log_offset()
    code, out, err = run(capsys, "copy", "--all", src, dst, "--json")  # --all: the default, accepted
    assert code == 0 and json.loads(out)["upToDate"]
    sent = [r for r in target.requests_since(mark) if r != ("GET", "/v2/")]  # less the one ping a process makes
    assert sent == [("HEAD", "/v2/again/multi/manifests/v1")]


def test_blobs_are_sent_largest_first(registry, target, cache_dir, capsys):
    """With one transfer at a time the order shows: the biggest blob first (the transfers of a copy
    then end close together instead of one big blob running alone at the end)."""
    src = f"{registry.host}/test/multi:v1"
    sizes = {}
    for entry in json.loads(raw_of(src))["manifests"]:
        manifest = json.loads(raw_of(f"{registry.host}/test/multi@{entry['digest']}"))
        sizes.update({b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]})
    mark = target.log_offset()
    assert run(capsys, "copy", src, f"{target.host}/ordered/multi:v1", "--jobs", "1")[0] == 0
    heads = [u.rsplit("/", 1)[1] for m, u in target.requests_since(mark) if m == "HEAD" and "/blobs/" in u]
    assert sorted(heads) == sorted(sizes) and len(set(sizes.values())) > 2
    assert [sizes[d] for d in heads] == sorted(sizes.values(), reverse=True)


def test_an_indexs_manifests_are_fetched_at_once_and_kept_in_order(threaded_server, cache_dir):
    """One round trip for all of an index's manifests, not one after another (a remote registry's
    latency once per platform); the tree keeps the index's order whatever order they arrive in."""
    import threading
    import time

    from werkzeug.wrappers import Response

    from registry_tools.model import manifest as mf
    from registry_tools.model import reference as refs
    from registry_tools.model.digest import Digest
    from registry_tools.registry.tree import read_tree

    from .support import imagegen

    lay = imagegen.Layout()
    arches = ["amd64", "arm64", "ppc64le", "s390x"]
    images = [lay.image([lay.layer({"f": arch.encode()})], arch=arch) for arch in arches]
    index = lay.index([(img, {"os": "linux", "architecture": arch}, None) for img, arch in zip(images, arches, strict=True)])
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    both_in_flight = threading.Event()

    def handler(request):
        digest = request.path.rsplit("/", 1)[1]
        if digest != index.digest:
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
                if state["now"] >= 2:
                    both_in_flight.set()
            both_in_flight.wait(2)  # a sequential reader makes each of these wait the whole 2 s
            position = [img.digest for img in images].index(digest)
            time.sleep(0.05 * (len(images) - 1 - position))  # the first asked comes back last
            with lock:
                state["now"] -= 1
        blob = lay.blobs[digest]
        return Response(blob, content_type=json.loads(blob)["mediaType"])

    threaded_server.expect_request(re.compile(r"^/v2/x/multi/manifests/sha256:.*")).respond_with_handler(handler)
    threaded_server.expect_request("/v2/").respond_with_data("{}")
    with Session(cache_dir=cache_dir) as s:
        origin = s.source(refs.parse(f"{threaded_server.host}:{threaded_server.port}/x/multi:t"))
        start = time.monotonic()
        tree = read_tree(origin, mf.Descriptor("", Digest.parse(index.digest), 0))
        took = time.monotonic() - start
    assert state["max"] >= 2 and took < 1.5
    assert [str(c.digest) for c in tree.children] == [img.digest for img in images]


def test_copy_streams_blobs_without_recompressing_or_caching(registry, target, facts, cache_dir, capsys):
    """The compressed bytes arrive unchanged (digests kept) and the cache keeps no layer of the copy."""
    assert run(capsys, "copy", f"{registry.host}/test/single-zstd:v1", f"{target.host}/z/img:v1")[0] == 0
    manifest = json.loads(raw_of(f"{target.host}/z/img:v1"))
    assert [layer["digest"] for layer in manifest["layers"]] == facts["single-zstd"]["layers"]
    blobs = cache_dir / "blobs" / "sha256"
    assert not any((blobs / d.split(":")[1]).exists() for d in facts["single-zstd"]["layers"])


def test_same_registry_copies_mount_instead_of_uploading(registry, cache_dir, capsys):
    mark = registry.log_offset()
    code, out, _ = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{registry.host}/promoted/img:v2",
                       "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["blobsMounted"] == 3 and doc["blobsUploaded"] == 0 and doc["bytesSent"] == 0
    assert not [u for m, u in registry.requests_since(mark) if m == "PATCH"]


def test_a_platform_subset_is_a_new_index_of_exactly_those_entries(registry, target, facts, cache_dir, capsys):
    code, out, err = run(capsys, "copy", "--platform", "linux/amd64,linux/arm/v7", f"{registry.host}/test/multi:v1",
                         f"{target.host}/sub/multi:v1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"source {facts['multi']['index']}"
    index = raw_of(f"{target.host}/sub/multi:v1")
    assert lines[1] == "sha256:" + hashlib.sha256(index).hexdigest() != facts["multi"]["index"]
    entries = json.loads(index)["manifests"]
    plats = facts["multi"]["platforms"]
    assert [e["digest"] for e in entries] == [plats["linux/amd64"], plats["linux/arm/v7"]]
    for e in entries:  # never an index naming a manifest that was not copied
        assert raw_of(f"{target.host}/sub/multi@{e['digest']}")
    for other in ("linux/arm64/v8", "linux/arm/v6"):
        r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                            f"docker://{target.host}/sub/multi@{plats[other]}"], capture_output=True)
        assert r.returncode != 0


def test_podman_pulls_the_copied_subset(registry, target, facts, cache_dir, capsys):
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    assert run(capsys, "copy", "--platform", "linux/arm64", f"{registry.host}/test/multi:v1",
               f"{target.host}/pod/multi:v1")[0] == 0
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:
        res = subprocess.run(["podman", "--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs",
                              "pull", "--tls-verify=false", "--arch", "arm64", f"{target.host}/pod/multi:v1"],
                             capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert facts["multi"]["platforms"]["linux/arm64/v8"].split(":")[1][:12] in res.stdout + res.stderr or \
        res.stdout.strip()


def test_a_platform_the_index_lacks_lists_what_it_offers_and_writes_nothing(registry, target, cache_dir):
    mark = target.log_offset()
    with Session() as s, pytest.raises(PlatformNotFound, match="linux/arm64/v8.*linux/arm/v6"):
        copy(CopyOptions(f"{registry.host}/test/multi:v1", f"{target.host}/none/multi:v1",
                         platforms=parse_platforms(["linux/s390x"])), s)
    assert target.requests_since(mark) == []


def test_blobs_the_destination_has_are_skipped_and_more_tags_are_added(registry, target, facts, cache_dir, capsys):
    src = f"{registry.host}/test/single-gzip:v1"
    assert run(capsys, "copy", src, f"{target.host}/has/img:v1")[0] == 0
    mark = target.log_offset()
    code, out, err = run(capsys, "copy", src, f"{target.host}/has/img:v2", "--tag", "v3", "--tag", "v4", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["blobsSkipped"], doc["blobsUploaded"], doc["bytesSent"]) == (3, 0, 0)
    assert doc["tags"] == ["v2", "v3", "v4"]
    puts = [u for m, u in target.requests_since(mark) if m == "PUT"]
    assert sorted(puts) == sorted(f"/v2/has/img/manifests/{t}" for t in ("v2", "v3", "v4"))
    for t in ("v1", "v2", "v3", "v4"):
        assert raw_of(f"{target.host}/has/img:{t}") == raw_of(src)


@pytest.mark.parametrize("dest", ["foo", "library/foo:1", "not a ref!"])
def test_a_destination_that_is_not_a_registry_or_path_is_refused(dest):
    with pytest.raises(UsageError, match="destination"):
        endpoints.parse(dest, "destination")


def test_skopeo_transport_prefixes(tmp_path):
    assert endpoints.parse("docker://localhost:5000/a/b:1", "destination").repository.tag == "1"
    assert endpoints.parse("docker://alpine", "destination").repository.name == "docker.io/library/alpine"
    e = endpoints.parse(f"oci:{tmp_path}/lay:v1", "destination")
    assert (e.scheme, e.path, e.name) == ("oci:", tmp_path / "lay", "v1")
    e = endpoints.parse(f"docker-archive:{tmp_path}/x.tar:my/img:2", "destination")
    assert (e.scheme, e.path, e.name) == ("docker-archive:", tmp_path / "x.tar", "my/img:2")
    assert endpoints.parse(f"oci-archive:{tmp_path}/x.tar", "destination").scheme == "oci-archive:"
    assert endpoints.parse("podman:localhost/app:1", "destination").scheme == "podman:"


def test_copy_to_files_and_back(registry, target, facts, tmp_path, cache_dir, capsys):
    layout = tmp_path / "lay"
    code, out, err = run(capsys, "copy", "--platform", "linux/arm/v7", f"{registry.host}/test/multi:v1",
                         f"oci:{layout}:v7")
    assert code == 0, err
    assert out.strip() == facts["multi"]["platforms"]["linux/arm/v7"]
    code, out, err = run(capsys, "copy", f"oci:{layout}:v7", f"docker://{target.host}/back/img:v7", "--tag", "extra")
    assert code == 0, err
    assert out.strip() == facts["multi"]["platforms"]["linux/arm/v7"]
    assert raw_of(f"{target.host}/back/img:extra") == raw_of(f"{target.host}/back/img:v7")
    archive = tmp_path / "img.tar"
    assert run(capsys, "copy", f"oci:{layout}:v7", f"docker-archive:{archive}:test/img:v7")[0] == 0
    manifest = subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], capture_output=True, text=True,
                              check=True).stdout
    assert json.loads(manifest)["Architecture"] == "arm"


def test_a_blob_damaged_at_the_source_is_never_committed(own_registry, target, facts, cache_dir):
    layer = facts["single-gzip"]["layers"][0].split(":")[1]
    path = own_registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / layer[:2] / layer / "data"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with Session() as s, pytest.raises(DigestMismatch):
        copy(CopyOptions(f"{own_registry.host}/test/single-gzip:v1", f"{target.host}/bad/img:v1"), s)
    assert not any(m == "PUT" and "/manifests/" in u for m, u in target.requests_since(0))
    r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{target.host}/bad/img:v1"],
                       capture_output=True)
    assert r.returncode != 0
    blob = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://{target.host}/v2/bad/img/blobs/sha256:{layer}"], capture_output=True, text=True)
    assert blob.stdout == "404"


def test_tags_follow_link_pages_and_tag_is_one_put(registry, cache_dir, facts, capsys):
    digest = facts["single-none"]["manifest"]
    with Session() as s:
        for t in ("a", "b", "c", "d", "e"):
            assert tag(f"{registry.host}/test/single-none@{digest}", t, s).changed
        mark = registry.log_offset()
        again = tag(f"{registry.host}/test/single-none@{digest}", "c", s)
        assert not again.changed
        assert not [u for m, u in registry.requests_since(mark) if m == "PUT"]
        listed = list_tags(f"{registry.host}/test/single-none", s)
        assert sorted(listed) == ["a", "b", "c", "d", "e", "v1"] and len(listed) == 6
    code, out, _ = run(capsys, "tags", f"{registry.host}/test/single-none", "--json")
    assert code == 0 and sorted(json.loads(out)) == ["a", "b", "c", "d", "e", "v1"]


def test_tags_follow_link_pages_on_the_registrys_own_origin(httpserver, cache_dir):
    """distribution 2.8 sends one page whatever `n` says; a scripted server sends three."""
    pages = {None: (["a", "b"], '</v2/x/y/tags/list?n=2&last=b>; rel="next"'),
             "b": (["c", "d"], '</v2/x/y/tags/list?n=2&last=d>; rel="next"'), "d": (["e"], None)}
    seen = []

    def handler(request):
        from werkzeug.wrappers import Response
        last = request.args.get("last")
        seen.append((request.args.get("n"), last))
        tags, link = pages[last]
        headers = {"Link": link} if link else {}
        return Response(json.dumps({"name": "x/y", "tags": tags}), headers=headers, content_type="application/json")

    httpserver.expect_request("/v2/").respond_with_data("{}")
    httpserver.expect_request("/v2/x/y/tags/list").respond_with_handler(handler)
    host = f"127.0.0.1:{httpserver.port}"
    with Session() as s:
        assert list_tags(f"{host}/x/y", s, page_size=2) == ["a", "b", "c", "d", "e"]
    assert seen == [("2", None), ("2", "b"), ("2", "d")]
    pages["d"] = (["e"], '<http://elsewhere.example/v2/x/y/tags/list?last=e>; rel="next"')
    with Session() as s, pytest.raises(RegistryError, match="another host"):
        list_tags(f"{host}/x/y", s, page_size=2)


def test_delete_where_allowed_and_a_clear_error_where_not(tmp_path, registry, facts, cache_dir, capsys):
    digest = facts["single-gzip"]["manifest"]
    for allowed in (True, False):
        reg = LocalRegistry(tmp_path / f"del-{allowed}", delete=allowed).start()
        try:
            assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{reg.host}/d/img:v1")[0] == 0
            code, _, err = run(capsys, "delete", f"{reg.host}/d/img@{digest}")
            if allowed:
                assert code == 0, err
                r = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/d/img:v1"],
                                   capture_output=True)
                assert r.returncode != 0
            else:
                assert code == 1 and len(err.strip().splitlines()) == 1
                assert "does not allow deleting" in err
        finally:
            reg.stop()
    code, _, err = run(capsys, "delete", f"{registry.host}/test/single-gzip:v1")
    assert code == 2 and "@sha256" in err


@pytest.mark.parametrize("argv", [["pull", "--allow", "a/b@sha256:" + "a" * 64, "-o", "x.tar"],
                                  ["copy", "--platf", "linux/amd64", "a/b:1", "localhost:5000/b:1"],
                                  ["sync", "lock.json", "--to", "localhost:5000", "--dry"]])
def test_abbreviated_options_are_refused(argv, capsys):
    """`pull --all` was once silently read as --allow-cross-arch: a typo became a wrong image."""
    assert cli.main(argv) == 2
    typed = {"pull": "--allow", "copy": "--platf", "sync": "--dry"}[argv[0]]
    assert f"unknown option {typed}; did you mean --" in capsys.readouterr().err


def test_a_single_image_copied_to_a_layout_is_reported_in_one_clean_line(registry, facts, cache_dir, tmp_path,
                                                                           capsys):
    manifest = facts["single-gzip"]["manifest"]
    code, out, err = run(capsys, "copy", f"{registry.host}/test/single-gzip@{manifest}", f"oci:{tmp_path / 'lay'}")
    assert code == 0 and out.strip() == manifest
    assert err.strip() == f"wrote oci:{tmp_path / 'lay'} (manifest {manifest})"
