"""prefetch against a real registry: both call styles, exact output, reproducible by pull."""
from __future__ import annotations

import json
import re

import pytest

from registry_tools import cli
from registry_tools.model.platform import host_platform
from registry_tools.api.prefetch import parse_lock_input
from registry_tools.model.pin import nix_string
from registry_tools.errors import UsageError


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def parse_nix(text: str) -> dict:
    """Read back the attribute set prefetch prints (a strict reader: one `key = "value";` a line)."""
    lines = text.strip().splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    out = {}
    for line in lines[1:-1]:
        m = re.fullmatch(r'  ([A-Za-z]+) = "((?:[^"\\]|\\.)*)";', line)
        assert m, line
        out[m.group(1)] = m.group(2)
    return out


def pull_args(pin: dict, out: str) -> list[str]:
    args = ["pull", pin["imageName"], "--digest", pin["imageDigest"], "--os", pin["os"], "--arch", pin["arch"],
            "--final-image-name", pin["finalImageName"], "--final-image-tag", pin["finalImageTag"],
            "--hash", pin["hash"], "-o", out, "-q"]
    if "variant" in pin:
        args += ["--variant", pin["variant"]]
    return args


KEYS = ["imageName", "imageDigest", "hash", "finalImageName", "finalImageTag", "os", "arch"]


def test_nix_output_is_exact_and_alone_on_stdout(registry, facts, cache_dir, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/multi", "v1", "--platform", "linux/arm64/v8")
    assert code == 0
    pin = parse_nix(out)
    assert list(pin) == KEYS + ["variant", "manifestDigest"]
    assert pin["imageName"] == f"{registry.host}/test/multi"
    assert pin["imageDigest"] == facts["multi"]["index"]
    assert pin["manifestDigest"] == facts["multi"]["platforms"]["linux/arm64/v8"]
    assert (pin["os"], pin["arch"], pin["variant"]) == ("linux", "arm64", "v8")
    assert pin["finalImageName"] == f"{registry.host}/test/multi" and pin["finalImageTag"] == "v1"
    assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", pin["hash"])
    assert "moving " not in err and "moving " not in out  # no progress lines off a terminal unless -v
    code, out2, err = run(capsys, "prefetch", f"{registry.host}/test/multi", "v1", "--platform", "linux/arm64/v8", "-v")
    assert code == 0 and out2 == out and "moving " in err  # -v: a line per blob, on stderr only


@pytest.mark.parametrize("plat", ["linux/arm64/v8", "linux/arm/v6"])
def test_pull_reproduces_the_hash_multi_arch(registry, cache_dir, tmp_path, capsys, plat):
    code, out, _ = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", plat, "--json", "-q")
    assert code == 0
    pin = json.loads(out)
    code, out2, err = run(capsys, *pull_args(pin, str(tmp_path / "img.tar")))
    assert code == 0, err
    assert out2.strip() == pin["hash"]


def test_pull_reproduces_the_hash_single_arch(registry, cache_dir, tmp_path, capsys):
    code, out, _ = run(capsys, "prefetch", f"{registry.host}/test/single-zstd:v1", "--json", "-q")
    pin = json.loads(out)
    assert "variant" not in pin and pin["imageDigest"] == pin["manifestDigest"]
    code, out2, err = run(capsys, *pull_args(pin, str(tmp_path / "img.tar")))
    assert code == 0, err
    assert out2.strip() == pin["hash"]


def test_pull_reproduces_with_a_fresh_cache(registry, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "c1"))
    _, out, _ = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--arch", "arm", "--variant", "v7",
                    "--final-image-name", "app", "--final-image-tag", "stable", "--json", "-q")
    pin = json.loads(out)
    assert (pin["finalImageName"], pin["finalImageTag"], pin["arch"], pin["variant"]) == ("app", "stable", "arm", "v7")
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "c2"))
    code, out2, err = run(capsys, *pull_args(pin, str(tmp_path / "img.tar")))
    assert code == 0, err
    assert out2.strip() == pin["hash"]


@pytest.mark.parametrize("style", ["positional", "colon", "flags", "digest", "digest-flag", "at"])
def test_call_styles_agree(registry, facts, cache_dir, capsys, style):
    name = f"{registry.host}/test/multi"
    index = facts["multi"]["index"]
    args = {
        "positional": [name, "v1"],
        "colon": [f"{name}:v1"],
        "flags": ["--image-name", name, "--image-tag", "v1"],
        "digest": [name, index, "--final-image-tag", "v1"],
        "digest-flag": ["--image-name", name, "--image-digest", index, "--final-image-tag", "v1"],
        "at": [f"{name}@{index}", "--final-image-tag", "v1"],
    }[style]
    code, out, err = run(capsys, "prefetch", *args, "--platform", "linux/amd64", "--json", "-q")
    assert code == 0, err
    pin = json.loads(out)
    assert pin["imageDigest"] == index
    assert pin["manifestDigest"] == facts["multi"]["platforms"]["linux/amd64"]
    code, ref_out, _ = run(capsys, "prefetch", name, "v1", "--platform", "linux/amd64", "--json", "-q")
    assert json.loads(ref_out) == pin


def test_default_platform_is_the_hosts(registry, cache_dir, capsys):
    _, out, _ = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--json", "-q")
    pin = json.loads(out)
    assert pin["arch"] == host_platform().architecture and pin["os"] == "linux"


def test_tag_resolved_by_its_bytes_and_blobs_shared_with_pull(registry, facts, cache_dir, tmp_path, capsys):
    """One GET of the tag, hashed here: a registry's Docker-Content-Digest for a tag is not trusted."""
    mark = registry.log_offset()
    _, out, _ = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", "linux/arm/v7", "--json", "-q")
    pin = json.loads(out)
    assert pin["imageDigest"] == facts["multi"]["index"]
    reqs = registry.requests_since(mark)
    assert ("GET", "/v2/test/multi/manifests/v1") in reqs
    assert ("HEAD", "/v2/test/multi/manifests/v1") in reqs  # free on Docker Hub: it tells the rate-limit budget
    assert ("GET", f"/v2/test/multi/manifests/{facts['multi']['index']}") not in reqs  # the tag's bytes, cached
    first_blobs = [u for m, u in reqs if m == "GET" and "/blobs/" in u]
    assert len(first_blobs) == len(set(first_blobs)) == 3
    # pull with the pin: nothing downloaded again
    mark = registry.log_offset()
    code, _, _ = run(capsys, *pull_args(pin, str(tmp_path / "img.tar")))
    assert code == 0
    assert registry.requests_since(mark) == []
    # a second prefetch of the same tag: the HEAD and the GET of the tag, nothing else
    mark = registry.log_offset()
    run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", "linux/arm/v7", "-q")
    assert registry.requests_since(mark) == [("GET", "/v2/"), ("HEAD", "/v2/test/multi/manifests/v1"),
                                             ("GET", "/v2/test/multi/manifests/v1")]


def test_get_fallback_when_head_is_refused(httpserver, cache_dir, capsys):
    from .support.fakeregistry import serve_layout
    from .support import imagegen
    lay = imagegen.Layout()
    img = lay.image([lay.layer({"f": b"x"}, "gzip")])
    httpserver.expect_request("/v2/x/y/manifests/t1", method="HEAD").respond_with_data("", status=405)
    httpserver.expect_request("/v2/x/y/manifests/t1", method="GET").respond_with_data(
        lay.blobs[img.digest], content_type=imagegen.OCI_MANIFEST)
    serve_layout(httpserver, lay)
    code, out, err = run(capsys, "prefetch", f"{httpserver.host}:{httpserver.port}/x/y:t1", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["imageDigest"] == img.digest


def test_unknown_tag_lists_tags(registry, cache_dir, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/multi:nope", "-q")
    assert code == 1 and out == ""
    assert "no tag 'nope'" in err and "v1" in err and len(err.strip().splitlines()) == 1


def test_unknown_repository(registry, cache_dir, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/missing:v1", "-q")
    assert code == 1 and out == ""
    assert "repository" in err and "not found" in err


def test_no_such_platform_lists_what_exists(registry, cache_dir, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", "linux/ppc64le", "-q")
    assert code == 1 and out == ""
    assert "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6" in err


def test_single_arch_image_and_an_explicit_other_platform(registry, cache_dir, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/single-gzip:v1", "--platform", "linux/s390x", "-q")
    assert code == 1 and "linux/amd64" in err


def test_unreachable_registry(cache_dir, capsys):
    from .support.registry import free_port
    code, out, err = run(capsys, "prefetch", f"127.0.0.1:{free_port()}/x/y:z", "-q")
    assert code == 1 and out == "" and "cannot reach registry" in err


@pytest.mark.parametrize("args", [
    [],
    ["a/b", "t1", "--image-tag", "t2"],
    ["a/b:t", "t2"],
    ["Bad//Name"],
    ["a/b", "--final-image-tag", "not a tag"],
])
def test_usage_errors(args, cache_dir, capsys):
    code, out, err = run(capsys, "prefetch", *args, "-q")
    assert code == 2 and out == "" and "Traceback" not in err


def test_lock_file(registry, facts, cache_dir, tmp_path, capsys):
    listing = tmp_path / "images.txt"
    listing.write_text(
        "# images we build on\n"
        f"{registry.host}/test/multi:v1 linux/arm64/v8\n"
        f"\n{registry.host}/test/single-gzip:v1   # a comment\n"
        f"{registry.host}/test/multi@{facts['multi']['index']} linux/arm/v6\n"
    )
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--json", "-q")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["version"] == 1
    refs = [(i["reference"], i.get("platform")) for i in doc["images"]]
    assert refs == [(f"{registry.host}/test/multi:v1", "linux/arm64/v8"),
                    (f"{registry.host}/test/single-gzip:v1", None),
                    (f"{registry.host}/test/multi@{facts['multi']['index']}", "linux/arm/v6")]
    assert doc["images"][0]["manifestDigest"] == facts["multi"]["platforms"]["linux/arm64/v8"]
    assert doc["images"][2]["manifestDigest"] == facts["multi"]["platforms"]["linux/arm/v6"]
    for i, pin in enumerate(doc["images"]):  # every pin reproduces with pull
        code, out2, err = run(capsys, *pull_args(pin, str(tmp_path / f"{i}.tar")))
        assert code == 0, err
        assert out2.strip() == pin["hash"]


def test_lock_file_with_a_failure_prints_nothing(registry, cache_dir, tmp_path, capsys):
    listing = tmp_path / "images.txt"
    listing.write_text(f"{registry.host}/test/multi:v1\n{registry.host}/test/multi:gone\n")
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--json", "-q")
    assert code == 1 and out == ""
    assert "images.txt:2" in err and "gone" in err


def test_lock_input_errors():
    with pytest.raises(UsageError):
        parse_lock_input("# only a comment\n")
    with pytest.raises(UsageError, match=":2:"):
        parse_lock_input("a/b:1\na/b:2 linux/amd64 extra\n")


@pytest.mark.parametrize("value,literal", [
    ("plain", '"plain"'), ('say "hi"', '"say \\"hi\\""'), ("${evil}", '"\\${evil}"'), ("a\\b", '"a\\\\b"'),
])
def test_nix_string(value, literal):
    assert nix_string(value) == literal



def test_lock_file_transfers_stay_within_one_limit(threaded_server, cache_dir, tmp_path, capsys):
    """Three images resolved at once, each with its own workers: blob downloads never exceed --jobs."""
    import threading
    import time as _time

    from werkzeug.wrappers import Response

    from .support import imagegen

    httpserver = threaded_server

    lay = imagegen.Layout()
    images = []
    for n in range(3):
        layers = [lay.layer({f"f{n}-{i}": bytes([n, i]) * 40000}, "gzip") for i in range(3)]
        img = lay.image(layers)
        images.append(img)
        httpserver.expect_request(f"/v2/x/img{n}/manifests/t", method="GET").respond_with_data(
            lay.blobs[img.digest], content_type=imagegen.OCI_MANIFEST, headers={"Docker-Content-Digest": img.digest})
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def handler(request):
        path = request.path
        digest = path.rsplit("/", 1)[-1]
        data = lay.blobs[digest]
        if "/manifests/" in path:
            return Response(data, content_type=json.loads(data)["mediaType"])
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        _time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return Response(data, content_type="application/octet-stream")

    import re as _re
    httpserver.expect_request(_re.compile(r"^/v2/x/img\d/(blobs|manifests)/sha256:.*")).respond_with_handler(handler)
    httpserver.expect_request("/v2/").respond_with_data("{}")
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{httpserver.host}:{httpserver.port}/x/img{n}:t\n" for n in range(3)))
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--json", "-q", "--jobs", "2")
    assert code == 0, err
    assert len(json.loads(out)["images"]) == 3
    assert state["max"] == 2  # 12 blobs, 3 images at once, never more than --jobs transfers
