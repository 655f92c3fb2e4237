"""Faults a real registry will not produce on demand: each ends in a verified output or a clear error."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from registry_tools.registry.client import RetryPolicy, TransportOptions
from registry_tools.errors import AuthError, DigestMismatch, NetworkError, SizeMismatch
from registry_tools.api.pull import PullOptions, pull_image
from registry_tools.session import Session

from .support.fakeregistry import TOKEN, FakeRegistry
from .support.servers import own_server

@pytest.fixture
def fake(httpserver):
    return FakeRegistry(httpserver)


@pytest.fixture
def dest(tmp_path) -> Path:
    out = tmp_path / "img.tar"
    out.write_bytes(b"previous contents")
    return out


def session(tmp_path: Path, attempts: int = 5) -> Session:
    """Short backoff and a 2 s timeout, so the faults play out quickly."""
    return Session(cache_dir=str(tmp_path / "cache"), transport=TransportOptions(timeout=2),
                   retry=RetryPolicy(attempts=attempts, base_delay=0.05, max_delay=0.2))


def untouched(dest: Path) -> None:
    assert dest.read_bytes() == b"previous contents"
    assert sorted(p.name for p in dest.parent.iterdir() if p.name != "cache") == [dest.name]


def ok(fake: FakeRegistry, dest: Path, tmp_path: Path) -> None:
    r = pull_image(PullOptions(fake.ref, dest), session(tmp_path))
    assert dest.read_bytes() != b"previous contents"
    reference = pull_image(PullOptions(fake.ref, None), Session(cache_dir=str(tmp_path / "fresh")))
    assert r.sha256 == reference.sha256  # the same verified output as with no fault at all


def gets(fake: FakeRegistry, path: str) -> list[dict]:
    return [h for m, p, h in fake.seen if m == "GET" and p == path]


def test_500_then_success(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["500", "408", "502"]
    fake.faults[f"/v2/x/y/manifests/{fake.image.digest}"] = ["503"]
    ok(fake, dest, tmp_path)
    assert len(gets(fake, fake.blob_path(fake.big))) >= 4


def test_429_honours_retry_after(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["429"]
    t = time.monotonic()
    ok(fake, dest, tmp_path)
    assert time.monotonic() - t >= 1.0  # waited as told, not the short backoff


def test_retries_are_bounded(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["500"] * 50
    t = time.monotonic()
    with pytest.raises(Exception) as e:
        pull_image(PullOptions(fake.ref, dest), session(tmp_path, attempts=3))
    assert "500" in str(e.value) or "HTTP 500" in str(e.value)
    assert len(gets(fake, fake.blob_path(fake.big))) == 3
    assert time.monotonic() - t < 10
    untouched(dest)


def test_connection_reset_mid_blob_resumes_with_range(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["reset"]
    ok(fake, dest, tmp_path)
    attempts = gets(fake, fake.blob_path(fake.big))
    assert "Range" not in attempts[0] and attempts[1]["Range"].startswith("bytes=")
    assert attempts[1]["Range"] != "bytes=0-"  # resumed where it broke, not from the start


def test_resets_every_time_fail_clearly(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["reset"] * 50
    with pytest.raises(NetworkError, match="resume"):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path, attempts=3))
    untouched(dest)


def test_truncated_blob(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["truncate"]
    with pytest.raises(SizeMismatch):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path))
    untouched(dest)
    assert not (tmp_path / "cache" / "blobs" / "sha256" / fake.big.digest.split(":")[1]).exists()


def test_blob_with_wrong_bytes(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["wrong-bytes"]
    with pytest.raises(DigestMismatch):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path))
    untouched(dest)


def test_manifest_with_wrong_bytes(fake, dest, tmp_path):
    fake.faults[f"/v2/x/y/manifests/{fake.image.digest}"] = ["wrong-bytes"]
    with pytest.raises(Exception) as e:
        pull_image(PullOptions(fake.ref, dest), session(tmp_path))
    assert "digest mismatch" in str(e.value) or "not valid JSON" in str(e.value)
    untouched(dest)


def test_stalled_server_times_out(fake, dest, tmp_path):
    fake.faults[fake.blob_path(fake.big)] = ["stall"] * 10
    t = time.monotonic()
    with pytest.raises(NetworkError):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path, attempts=2))
    assert time.monotonic() - t < 12
    untouched(dest)


def test_redirect_to_foreign_host_drops_authorization(httpserver, dest, tmp_path):
    fake = FakeRegistry(httpserver, bearer=True)
    with own_server() as foreign:  # another host name: another origin
        seen = []

        def storage(request: Request) -> Response:
            seen.append(dict(request.headers))
            return Response(fake.lay.blobs[request.path.rsplit("/", 1)[-1]], content_type="application/octet-stream")

        foreign.expect_request(re.compile(r"^/v2/.*")).respond_with_handler(storage)
        fake.foreign_url = f"http://localhost:{foreign.port}"
        fake.faults[fake.blob_path(fake.big)] = ["redirect"]
        ok(fake, dest, tmp_path)
        assert seen, "the redirect was not followed"
        assert all("Authorization" not in h for h in seen)  # the credential stayed with the registry
        first = gets(fake, fake.blob_path(fake.big))[0]
        assert first["Authorization"] == f"Bearer {TOKEN}"  # while the registry itself got it


def test_token_endpoint_down(httpserver, dest, tmp_path):
    from .support.registry import free_port
    fake = FakeRegistry(httpserver, bearer=True, realm=f"http://127.0.0.1:{free_port()}/token")
    with pytest.raises(AuthError, match="token server"):
        pull_image(PullOptions(fake.ref, dest), session(tmp_path, attempts=2))
    untouched(dest)
