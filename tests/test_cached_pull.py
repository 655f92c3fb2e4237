"""A pinned pull whose blobs are all cached contacts no registry (the content is verified by its
digests, as Nix trusts a store path by its hash); --check-registry asks the registry first, with
one HEAD of the manifest by digest, and fails in one line when it no longer serves it."""
from __future__ import annotations

import json
import re

import pytest

from .helpers import IMAGES, run
from .support.registry import LocalRegistry, require_tools, skopeo_push_layout
from .support.tokenserver import htpasswd_config

PASSWORD = "cached-Pull-9"


@pytest.fixture
def guarded(tmp_path):
    """A registry of the test's own behind htpasswd (the test stops it), holding one image."""
    require_tools("docker-registry", "skopeo", "htpasswd")
    reg = LocalRegistry(tmp_path / "reg", extra_config=htpasswd_config(tmp_path / "htpasswd", {"alice": PASSWORD}))
    reg.start()
    skopeo_push_layout(IMAGES / "single-gzip", "v1", f"{reg.host}/team/app:v1", all_images=False,
                       creds=f"alice:{PASSWORD}")
    yield reg
    reg.stop()


@pytest.fixture
def isolated(monkeypatch, tmp_path, cache_dir):
    """No credentials from the machine's auth files."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return cache_dir


def asked(reg: LocalRegistry, mark: int) -> set[tuple[str, str]]:
    """(method, URI) of every request the registry logged since `mark`, answered or refused (a refused
    one logs no "response completed"), but the version check /v2/."""
    with open(reg.log_path, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    found = set()
    for line in text.splitlines():
        m = re.search(r'http\.request\.method=(\S+)', line)
        u = re.search(r'http\.request\.uri=(?:"([^"]+)"|(\S+))', line)
        if m and u and (u.group(1) or u.group(2)) != "/v2/":
            found.add((m.group(1), u.group(1) or u.group(2)))
    return found


def pull(capsys, ref: str, out, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "pull", ref, "-o", str(out), "-q", *extra)


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_cached_pull_asks_no_registry_and_check_registry_does(guarded, facts, isolated, tmp_path, capsys):
    digest = facts["single-gzip"]["manifest"]
    ref = f"{guarded.host}/team/app@{digest}"
    code, first, err = pull(capsys, ref, tmp_path / "a.tar", "--creds", f"alice:{PASSWORD}")
    assert code == 0, err

    # Wrong credentials: every blob is cached, so not one request is made and the pull succeeds.
    mark = guarded.log_offset()
    code, out, err = pull(capsys, ref, tmp_path / "b.tar", "--creds", "alice:wrong")
    assert (code, out) == (0, first), err
    assert asked(guarded, mark) == set()
    # --check-registry asks: one HEAD of the manifest by digest, refused for these credentials.
    code, out, err = pull(capsys, ref, tmp_path / "c.tar", "--creds", "alice:wrong", "--check-registry")
    assert code == 1 and out == ""
    assert "access denied" in one_line(err)
    assert not (tmp_path / "c.tar").exists()
    head = {("HEAD", f"/v2/team/app/manifests/{digest}")}
    assert asked(guarded, mark) == head
    # With the right ones it passes, and the pull is still served from the cache.
    mark = guarded.log_offset()
    code, out, err = pull(capsys, ref, tmp_path / "d.tar", "--creds", f"alice:{PASSWORD}", "--check-registry")
    assert (code, out) == (0, first), err
    assert asked(guarded, mark) == head

    # A repository the registry does not have: the cache serves the digest all the same; asked, it fails.
    missing = f"{guarded.host}/team/gone@{digest}"
    code, out, err = pull(capsys, missing, tmp_path / "e.tar", "--creds", f"alice:{PASSWORD}")
    assert code == 0 and out.strip(), err
    code, out, err = pull(capsys, missing, tmp_path / "f.tar", "--creds", f"alice:{PASSWORD}", "--check-registry")
    assert code == 1 and "does not serve this manifest" in one_line(err)

    # The registry down: the pull still succeeds; asked, it fails in one line.
    guarded.stop()
    code, out, err = pull(capsys, ref, tmp_path / "g.tar", "--creds", f"alice:{PASSWORD}")
    assert (code, out) == (0, first), err
    assert (tmp_path / "g.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
    code, out, err = pull(capsys, ref, tmp_path / "h.tar", "--check-registry")
    assert code == 1 and guarded.host in one_line(err)
    assert not (tmp_path / "h.tar").exists()


def test_a_cached_pin_assembles_offline_and_check_registry_asks(registry, facts, isolated, tmp_path, capsys):
    """assemble and pull --pin take --check-registry too."""
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/single-gzip:v1", "--layers", "--json")
    assert code == 0, err
    pin = json.loads(out)
    (tmp_path / "real.json").write_text(out)
    code, out, err = run(capsys, "assemble", str(tmp_path / "real.json"), "-o", str(tmp_path / "first.tar"), "-q")
    assert code == 0, err  # the layers are cached now
    pin["imageName"] = f"{registry.host}/test/no-such-repository"  # the cache still holds every blob
    (tmp_path / "pin.json").write_text(json.dumps(pin))
    mark = registry.log_offset()
    code, out, err = run(capsys, "assemble", str(tmp_path / "pin.json"), "-o", str(tmp_path / "a.tar"), "-q")
    assert code == 0, err
    assert registry.requests_since(mark) == []
    for argv in (["assemble", str(tmp_path / "pin.json")], ["pull", "--pin", str(tmp_path / "pin.json")]):
        code, out, err = run(capsys, *argv, "-o", str(tmp_path / "b.tar"), "--check-registry")
        assert code == 1 and "does not serve this manifest" in one_line(err), err
        assert not (tmp_path / "b.tar").exists()
