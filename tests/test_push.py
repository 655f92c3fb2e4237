"""push: to real registries (read back by skopeo), the layer cache, mounts, tags, faults, and the protocol."""
from __future__ import annotations

import hashlib
import os
import json
import re
import subprocess
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from registry_tools import cli
from registry_tools.registry.sink import RegistrySink
from registry_tools.builder.image import BuiltImage
from registry_tools.engine import Need
from registry_tools.engine import Progress
from registry_tools.model import reference as refs
from registry_tools.model.image import Layer
from registry_tools.registry.client import RetryPolicy, TransportOptions
from registry_tools.errors import DigestMismatch, NetworkError
from registry_tools.api.push import build_and_push
from registry_tools.session import Session
from registry_tools.builder.spec import parse_spec

from .support.registry import LocalRegistry
from .support.tokenserver import htpasswd_config
from .support.buildinputs import make_store, spec_file

WRITES = ("POST", "PATCH", "PUT")


@pytest.fixture
def work(tmp_path, cache_dir):
    make_store(tmp_path)
    (tmp_path / "app" / "bin").mkdir(parents=True)
    (tmp_path / "app" / "bin" / "tool").write_bytes(b"tool" * 50000)
    (tmp_path / "app" / "etc").mkdir()
    (tmp_path / "app" / "etc" / "conf").write_text("a = 1\n")
    (tmp_path / "root1").mkdir()
    spec_file(tmp_path, contents=[], config={"Cmd": ["/opt/app/bin/tool"]})
    return tmp_path


def spec_of(work: Path, **kw):
    return parse_spec(json.loads(spec_file(work, contents=[], config={"Cmd": ["/opt/app/bin/tool"]}, **kw).read_text()), work)


def writes(reg: LocalRegistry, mark: int) -> list[tuple[str, str]]:
    return [(m, u) for m, u in reg.requests_since(mark) if m in WRITES]


def test_pushed_image_reads_back_byte_for_byte(registry, work, tmp_path):
    with Session() as s:
        result, image = build_and_push(spec_of(work), f"{registry.host}/pushed/app:1.0", s)
    assert result.reference == f"{registry.host}/pushed/app:1.0"
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/pushed/app:1.0"],
                         capture_output=True, check=True).stdout
    assert raw == image.manifest.raw and hashlib.sha256(raw).hexdigest() == result.digest.hex
    info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                      f"docker://{registry.host}/pushed/app:1.0"], capture_output=True, check=True).stdout)
    assert info["Digest"] == str(result.digest) and len(info["Layers"]) == len(image.layers)
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{registry.host}/pushed/app:1.0",
                    f"oci:{tmp_path / 'copy'}:x"], check=True, capture_output=True)
    index = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == str(result.digest)
    assert (tmp_path / "copy" / "blobs/sha256" / result.digest.hex).read_bytes() == image.manifest.raw


def test_push_to_htpasswd_registry(work, tmp_path):
    reg = LocalRegistry(tmp_path / "basic", extra_config=htpasswd_config(tmp_path / "htpasswd", {"ci": "pw-123"})).start()
    try:
        code = cli.main(["build", str(work / "spec.json"), "--push", f"{reg.host}/ci/app:1", "--creds", "ci:pw-123", "-q"])
        assert code == 0
        out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", "ci:pw-123",
                              f"docker://{reg.host}/ci/app:1"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert cli.main(["build", str(work / "spec.json"), "--push", f"{reg.host}/ci/app:1", "-q"]) == 1  # no creds
    finally:
        reg.stop()


class PackRecorder(Progress):
    """A progress seam: which layers a build packed (rather than found in the cache)."""

    def __init__(self) -> None:
        self.packed: list[Layer] = []

    def layer_ready(self, layer: Layer, compressor: str, packed: bool) -> None:
        if packed:
            self.packed.append(layer)


def test_unchanged_rebuild_packs_and_uploads_nothing(registry, work):
    dest = f"{registry.host}/cache/app:1"
    with Session() as s:
        first, _ = build_and_push(spec_of(work), dest, s)
    assert first.uploaded
    recorder = PackRecorder()
    packed = recorder.packed
    mark = registry.log_offset()
    with Session(progress=recorder) as s:
        second, _ = build_and_push(spec_of(work), dest, s)
    assert packed == []  # every layer came from the cache of inputs
    assert writes(registry, mark) == []  # nothing uploaded, no manifest written
    assert second.digest == first.digest and second.uploaded == []
    heads = [u for m, u in registry.requests_since(mark) if m == "HEAD"]
    assert heads  # it asked, and the registry had everything


def test_one_changed_file_uploads_one_layer(registry, work):
    dest = f"{registry.host}/change/app:1"
    with Session() as s:
        first, image1 = build_and_push(spec_of(work), dest, s)
    (work / "app" / "etc" / "conf").write_text("a = 2\n")
    recorder = PackRecorder()
    packed = recorder.packed
    mark = registry.log_offset()
    with Session(progress=recorder) as s:
        second, image2 = build_and_push(spec_of(work), dest, s)
    assert len(packed) == 1
    changed = [new for new, old in zip(image2.layers, image1.layers, strict=True)
               if new.descriptor.digest != old.descriptor.digest]
    assert len(changed) == 1
    assert sorted(second.uploaded) == sorted([changed[0].descriptor.digest, image2.manifest.config.digest])
    puts = [u for m, u in writes(registry, mark) if m == "PUT"]
    assert len([u for u in puts if "/blobs/uploads/" in u]) == 2 and len([u for u in puts if "/manifests/" in u]) == 2


def test_tag_only_update_sends_only_the_manifest(registry, work):
    with Session() as s:
        first, _ = build_and_push(spec_of(work), f"{registry.host}/tags/app:1", s)
    mark = registry.log_offset()
    with Session() as s:
        second, _ = build_and_push(spec_of(work), f"{registry.host}/tags/app:2", s)
    assert second.digest == first.digest
    assert writes(registry, mark) == [("PUT", "/v2/tags/app/manifests/2")]


def test_another_repository_mounts(registry, work):
    with Session() as s:
        build_and_push(spec_of(work), f"{registry.host}/mount/a:1", s)
    mark = registry.log_offset()
    with Session() as s:
        result, image = build_and_push(spec_of(work), f"{registry.host}/mount/b:1", s)
    assert len(result.mounted) == len(image.layers) + 1 and result.uploaded == []
    assert all("mount=" in u for m, u in writes(registry, mark) if m == "POST")
    assert not [u for m, u in writes(registry, mark) if m == "PATCH"]


def test_push_sources(registry, facts, work, tmp_path, capsys):
    """push SOURCE DEST for an OCI layout, an oci-archive and a docker-archive."""
    ref = f"{registry.host}/test/multi@{facts['multi']['index']}"
    assert cli.main(["pull", ref, "--platform", "linux/arm64/v8", "--format", "oci", "-o", str(tmp_path / "lay"), "-q"]) == 0
    assert cli.main(["pull", ref, "--platform", "linux/arm64/v8", "--format", "oci-archive", "-o", str(tmp_path / "a.oci"), "-q"]) == 0
    assert cli.main(["pull", ref, "--platform", "linux/arm64/v8", "-o", str(tmp_path / "a.tar"), "-q"]) == 0
    capsys.readouterr()
    want = facts["multi"]["platforms"]["linux/arm64/v8"]
    for i, source in enumerate([str(tmp_path / "lay"), str(tmp_path / "a.oci"), str(tmp_path / "a.tar")]):
        assert cli.main(["push", source, f"{registry.host}/sources/s{i}:t", "-q"]) == 0
        pushed = capsys.readouterr().out.strip()
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/sources/s{i}:t"],
                             capture_output=True, check=True).stdout
        if i < 2:  # a layout's manifest is pushed as it is
            assert pushed.endswith(want) and hashlib.sha256(raw).hexdigest() == want[7:]
        else:  # a docker-archive gets a new manifest (compressed layers); the image is the same
            cfg = json.loads(subprocess.run(["skopeo", "inspect", "--config", "--tls-verify=false",
                                             f"docker://{registry.host}/sources/s{i}:t"], capture_output=True,
                                            check=True).stdout)
            assert cfg["architecture"] == "arm64" and len(cfg["rootfs"]["diff_ids"]) == 2


def test_push_whole_index_from_a_layout(registry, facts, tmp_path, capsys):
    subprocess.run(["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", "--preserve-digests",
                    f"docker://{registry.host}/test/multi:v1", f"oci:{tmp_path / 'all'}:v1"], check=True)
    assert cli.main(["push", f"{tmp_path / 'all'}:v1", f"{registry.host}/indexes/multi:v1", "-q"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith(facts["multi"]["index"])
    assert cli.main(["pull", f"{registry.host}/indexes/multi@{facts['multi']['index']}", "--platform", "linux/arm/v6",
                     "-o", str(tmp_path / "x.tar"), "-q"]) == 0


def test_registry_down_mid_push_then_retry_sends_only_what_is_missing(work, tmp_path, capsys):
    reg = LocalRegistry(tmp_path / "flaky").start()
    spec = spec_of(work)
    try:
        with Session() as s, BuiltImage(spec, s).open(Need.MEASURED) as built:
            image = built.image()
            sink = RegistrySink(s, refs.parse_normalized(f"{reg.host}/flaky/app:1"))
            for layer in image.layers[:2]:  # part of the push lands...
                sink.submit(layer.descriptor)
            sink.wait()
            sink.close(True)
        reg.stop()  # ...and then the registry goes away
        code = cli.main(["build", str(work / "spec.json"), "--push", f"{reg.host}/flaky/app:1", "-q"])
        err = capsys.readouterr().err
        assert code == 1 and "cannot reach registry" in err and len(err.strip().splitlines()) == 1
        reg.start()  # the same port, the same storage
        mark = reg.log_offset()
        assert cli.main(["build", str(work / "spec.json"), "--push", f"{reg.host}/flaky/app:1", "-q"]) == 0
        statuses = reg.statuses_since(mark)
        uploaded = [u for m, u, st in statuses if m == "PUT" and "/blobs/uploads/" in u]
        assert len(uploaded) == len(image.layers) - 2 + 1, statuses  # the rest of the layers and the config
        for layer in image.layers[:2]:
            assert not any(str(layer.descriptor.digest) in u for u in uploaded)
    finally:
        reg.stop()


# --- the protocol, against a scripted registry -----------------------------------------------

class UploadRegistry:
    """Takes uploads; `script` sets how it answers (relative Locations, chunk minimums, faults)."""

    def __init__(self, server, **script):
        self.script = {"relative": True, "min_chunk": 0, "refuse_monolithic": False, "refuse_mount": False,
                       "wrong_digest": False, "fail_patch": 0, "reset_patch": 0, **script}
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.sessions: dict[str, bytearray] = {}
        self.opened = 0
        self.log: list[tuple[str, str, dict]] = []
        server.expect_request(re.compile(r"^/v2/.*")).respond_with_handler(self.handle)

    def handle(self, req: Request) -> Response:
        self.log.append((req.method, req.full_path, dict(req.headers)))
        path = req.path
        if path == "/v2/":
            return Response("{}")
        m = re.match(r"^/v2/(.+)/blobs/uploads/(.*)$", path)
        if m and req.method == "POST":
            mount, source = req.args.get("mount"), req.args.get("from")
            if mount and not self.script["refuse_mount"] and (source, mount) in self.blobs:
                self.blobs[(m.group(1), mount)] = self.blobs[(source, mount)]
                return Response(status=201)
            sid = f"s{self.opened}"
            self.opened += 1
            self.sessions[sid] = bytearray()
            loc = f"/v2/{m.group(1)}/blobs/uploads/{sid}?state=opaque-{sid}"
            headers = {"Location": loc if self.script["relative"] else f"http://{req.host}{loc}"}
            if self.script["min_chunk"]:
                headers["OCI-Chunk-Min-Length"] = str(self.script["min_chunk"])
            return Response(status=202, headers=headers)
        if m and req.method == "PATCH":
            sid = m.group(2)
            assert req.args.get("state") == f"opaque-{sid}", "the Location's query was dropped"
            if self.script["fail_patch"]:
                self.script["fail_patch"] -= 1
                return Response("boom", status=500)
            data = req.get_data()
            if self.script["reset_patch"]:
                self.script["reset_patch"] -= 1
                raise ConnectionResetError("cut")
            if "Content-Range" not in req.headers and self.script["refuse_monolithic"]:
                return Response(status=413)
            if "Content-Range" in req.headers:
                start, end = map(int, req.headers["Content-Range"].split("-"))
                assert start == len(self.sessions[sid]) and end - start + 1 == len(data)
            self.sessions[sid] += data
            return Response(status=202, headers={"Location": f"/v2/{m.group(1)}/blobs/uploads/{sid}?state=opaque-{sid}",
                                                 "Range": f"0-{len(self.sessions[sid]) - 1}"})
        if m and req.method == "PUT":
            data = bytes(self.sessions.pop(m.group(2)))
            digest = req.args["digest"]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            self.blobs[(m.group(1), digest)] = data
            got = "sha256:" + "0" * 64 if self.script["wrong_digest"] else digest
            return Response(status=201, headers={"Docker-Content-Digest": got})
        m = re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]+)$", path)
        if m:
            if (m.group(1), m.group(2)) in self.blobs:
                return Response(status=200, headers={"Content-Length": str(len(self.blobs[(m.group(1), m.group(2))]))})
            return Response(status=404)
        m = re.match(r"^/v2/(.+)/manifests/(.+)$", path)
        if m:
            if req.method == "PUT":
                self.manifests[m.group(2)] = req.get_data()
                return Response(status=201, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(req.get_data()).hexdigest()})
            if m.group(2) in self.manifests:
                data = self.manifests[m.group(2)]
                return Response(status=200, headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(data).hexdigest()})
            return Response(status=404)
        return Response(status=404)


def quick_session() -> Session:
    return Session(transport=TransportOptions(timeout=5), retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1))


def fake_push(work, server, **script):
    fake = UploadRegistry(server, **script)
    with quick_session() as s:
        result, image = build_and_push(spec_of(work), f"{server.host}:{server.port}/x/app:1", s)
    return fake, result, image


def test_protocol_post_patch_put_with_relative_location(httpserver, work):
    fake, result, image = fake_push(work, httpserver)
    patches = [(m, p) for m, p, h in fake.log if m == "PATCH"]
    assert len(patches) == len(image.layers) + 1  # one PATCH per blob
    assert all("state=opaque-" in p for _, p in patches)
    puts = [p for m, p, h in fake.log if m == "PUT" and "/blobs/uploads/" in p]
    assert all(re.search(r"\?state=opaque-s\d+&digest=sha256:", p) for p in puts)  # query kept, digest appended
    assert fake.manifests["1"] == image.manifest.raw


def test_chunked_fallback_honours_min_length(httpserver, work):
    (work / "app" / "bin" / "big").write_bytes(os.urandom(25 << 20))  # incompressible: several chunks
    fake, result, image = fake_push(work, httpserver, refuse_monolithic=True, min_chunk=10 << 20)
    by_session: dict[str, list[int]] = {}
    for m, p, h in fake.log:
        if m == "PATCH" and "Content-Range" in h:
            by_session.setdefault(p.split("?")[0], []).append(int(h["Content-Length"]))
    assert any(len(sizes) > 1 for sizes in by_session.values())  # the big layer went in several chunks
    for sizes in by_session.values():  # every chunk but a blob's last is at least the minimum
        assert all(size >= 10 << 20 for size in sizes[:-1])
    assert fake.manifests["1"] == image.manifest.raw


@pytest.mark.parametrize("refuse", [False, True], ids=["mounted", "refused-then-uploaded"])
def test_mount_and_its_fallback(httpserver, work, cache_dir, refuse):
    fake = UploadRegistry(httpserver, refuse_mount=refuse)
    with quick_session() as s:
        build_and_push(spec_of(work), f"{httpserver.host}:{httpserver.port}/x/a:1", s)
    n = len(fake.log)
    with quick_session() as s:
        result, image = build_and_push(spec_of(work), f"{httpserver.host}:{httpserver.port}/y/b:1", s)
    blobs = {layer.descriptor.digest for layer in image.layers} | {image.manifest.config.digest}
    posts = [p for m, p, h in fake.log[n:] if m == "POST"]
    assert len(posts) == len(blobs) and all("mount=" in p and "from=x%2Fa" in p or "from=x/a" in p for p in posts)
    patches = [p for m, p, h in fake.log[n:] if m == "PATCH"]
    if refuse:  # each refused mount's session is used for the upload: no second POST
        assert set(result.uploaded) == blobs and result.mounted == [] and len(patches) == len(blobs)
    else:
        assert set(result.mounted) == blobs and result.uploaded == [] and patches == []
    assert {d for (repo, d) in fake.blobs if repo == "y/b"} == {str(d) for d in blobs}


def test_wrong_returned_digest_is_an_error(httpserver, work):
    with pytest.raises(DigestMismatch):
        fake_push(work, httpserver, wrong_digest=True)


@pytest.mark.parametrize("fault", ["fail_patch", "reset_patch"])
def test_upload_faults_recover(httpserver, work, fault):
    fake, result, image = fake_push(work, httpserver, **{fault: 2})
    assert fake.manifests["1"] == image.manifest.raw
    assert {d for repo, d in fake.blobs if repo == "x/app"} >= {str(layer.descriptor.digest) for layer in image.layers}


def test_upload_faults_that_do_not_stop_fail_clearly(httpserver, work):
    with pytest.raises(NetworkError, match="run the push again"):
        fake_push(work, httpserver, fail_patch=100)


def test_a_failed_push_leaves_nothing_running(httpserver, work):
    """Once push has raised, no upload carries on in the background."""
    import threading

    fake = UploadRegistry(httpserver, fail_patch=100)
    with pytest.raises(NetworkError):
        with quick_session() as s:
            build_and_push(spec_of(work), f"{httpserver.host}:{httpserver.port}/x/app:1", s)
    n = len(fake.log)
    assert not [t for t in threading.enumerate() if t.name.startswith("push")]
    import time
    time.sleep(0.5)
    assert len(fake.log) == n  # and the registry hears nothing more


def test_a_push_waits_for_a_blob_in_flight_only_where_the_wait_saves_its_bytes():
    """Another push sending the same blob to the same registry: waited for (then found there, or
    mounted), unless the registry has refused a mount in this operation and the repository is
    another one (it would be uploaded after the wait all the same)."""
    import threading
    import time

    from registry_tools.cancel import Cancel
    from registry_tools.errors import Interrupted
    from registry_tools.model.digest import Digest
    from registry_tools.registry.sink import Sending

    sending, digest, cancel = Sending(), Digest.parse("sha256:" + "ab" * 32), Cancel()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with sending.claim("reg.example", digest, "team/a", cancel):
            held.set()
            release.wait(5)

    def waited(repo: str) -> float:
        start = time.monotonic()
        timer = threading.Timer(1.0, release.set)
        timer.start()
        with sending.claim("reg.example", digest, repo, cancel):
            took = time.monotonic() - start
        timer.cancel()
        release.set()  # the holder ends now if it did not wait for the timer
        return took

    for repo, refused, waits in (("team/b", False, True), ("team/b", True, False), ("team/a", True, True)):
        release.clear()
        held.clear()
        if refused:
            sending.mount_refused("reg.example")
        t = threading.Thread(target=holder)
        t.start()
        assert held.wait(5)
        took = waited(repo)
        t.join()
        assert (took >= 0.8) == waits, (repo, refused, took)
    release.clear()
    held.clear()
    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    start = time.monotonic()
    with sending.claim("other.example", digest, "team/b", cancel):  # another registry: nothing to wait for
        assert time.monotonic() - start < 0.8
    # a wait ends the moment the operation is cancelled
    stop = Cancel()
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    with pytest.raises(Interrupted):
        with sending.claim("reg.example", digest, "team/a", stop):
            pass
    assert time.monotonic() - start < 1
    release.set()
    t.join()
