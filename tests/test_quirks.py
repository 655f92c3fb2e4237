"""Registry quirks, reproduced by a scripted registry (tests/support/ociregistry.py), one test each,
each citing where the behaviour is documented; every command that applies must succeed or fail in
one clear line. Behaviours covered elsewhere are named in `ELSEWHERE` with the test that covers them."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import httpx
import pytest
from werkzeug.wrappers import Response

from registry_tools.model.reference import DOCKER_HUB_API_HOST
from registry_tools.registry.client import Registry, TransportOptions

from .support.ociregistry import OciRegistry
from .support.servers import own_server
from .helpers import run

ELSEWHERE = {
    "Docker Hub RateLimit headers": "tests/test_rate_limit.py",
    "GCR/Artifact Registry upload Location on another host": "tests/test_hostile_wire.py::test_s1_*",
    "blob GETs redirected to storage": "tests/test_transport_faults.py::test_redirect_to_foreign_host_drops_authorization",
    "GitLab fallback referrers tag naming the image": "tests/test_referrers.py::test_hostile_referrers_answers_*",
}


@pytest.fixture
def threaded(threaded_server):
    """A copy within the scripted registry reads a blob while uploading it: it must answer in parallel."""
    return threaded_server


@pytest.fixture
def oci(threaded):
    return OciRegistry(threaded, referrers_api=False)


def seed(registry, oci, capsys, repo="app/img:1") -> str:
    code, out, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{oci.host}/{repo}")
    assert code == 0, err
    return out.strip()


def every_command(registry, oci, capsys, tmp_path, repo="app/img") -> dict[str, int]:
    """pull, prefetch, push, copy and tags against the quirky registry: each one's exit code."""
    codes = {}
    code, out, err = run(capsys, "prefetch", f"{oci.host}/{repo}:1", "--json")
    codes["prefetch"] = code
    pin = json.loads(out) if code == 0 else {}
    codes["pull"] = run(capsys, "pull", f"{oci.host}/{repo}@{pin.get('imageDigest', 'sha256:' + '0' * 64)}",
                        "-o", str(tmp_path / "pulled.tar"))[0]
    layout = tmp_path / "layout"
    if not layout.exists():
        assert run(capsys, "pull", f"{registry.host}/test/single-zstd@sha256:57fd797851a207bc2ed0d8796578bbe4e9c606e"
                   "acbe16e427cd61ec6d022f4cb", "--format", "oci", "-o", str(layout))[0] == 0
    codes["push"] = run(capsys, "push", str(layout), f"{oci.host}/{repo}-pushed:1")[0]
    codes["copy"] = run(capsys, "copy", f"{oci.host}/{repo}:1", f"{oci.host}/{repo}-copied:1")[0]
    codes["tags"] = run(capsys, "tags", f"{oci.host}/{repo}")[0]
    return codes


# --- Docker Hub ---------------------------------------------------------------------------------

def test_docker_hub_token_realm_on_another_host_with_anonymous_tokens(registry, threaded, cache_dir, tmp_path,
                                                                      capsys):
    """Docker Hub's challenge names a token realm on another host (auth.docker.io) and hands
    out anonymous tokens for public repositories. Source: the distribution token authentication
    spec, https://distribution.github.io/distribution/spec/auth/token/ (the Docker Hub example:
    `Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`)."""
    with own_server() as realm:  # another host name than the registry's 127.0.0.1
        asked = []
        realm.expect_request("/token").respond_with_handler(
            lambda r: (asked.append((dict(r.args), r.headers.get("Authorization"))),
                       Response(json.dumps({"token": "quirk-token", "expires_in": 300}),
                                content_type="application/json"))[1])
        oci = OciRegistry(threaded, referrers_api=False)
        seed(registry, oci, capsys)  # (no challenge yet)
        oci.challenge = f'Bearer realm="http://localhost:{realm.port}/token",service="registry.docker.io"'
        codes = every_command(registry, oci, capsys, tmp_path)
        assert codes == {"prefetch": 0, "pull": 0, "push": 0, "copy": 0, "tags": 0}, codes
        assert asked and all(auth is None for _, auth in asked)  # anonymous: no credential sent anywhere
        assert all(args.get("service") == "registry.docker.io" for args, _ in asked)


def test_docker_hub_api_host_is_registry_1():
    """`docker.io` names are served from registry-1.docker.io. Source: Docker's registry
    configuration (`remoteurl: https://registry-1.docker.io`), and containers/image
    docker/docker_client.go (`dockerV1Hostname`/`dockerRegistry = "registry-1.docker.io"`)."""
    hosts = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.path == "/v2/":
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "x"}]})

    reg = Registry("docker.io", transport=httpx.MockTransport(answer))
    try:
        assert reg.manifest_digest("library/alpine", "3") is None
    finally:
        reg.close()
    assert set(hosts) == {DOCKER_HUB_API_HOST} == {"registry-1.docker.io"}


@pytest.mark.parametrize("retry_after", ["1", None])
def test_429_with_and_without_retry_after_is_waited_out(registry, oci, retry_after, cache_dir, tmp_path, capsys):
    """Docker Hub answers 429 TOOMANYREQUESTS when the pull limit is reached, with or without
    Retry-After. Sources: https://docs.docker.com/docker-hub/usage/ ("429 response code"), and
    RFC 6585 section 4 (Retry-After MAY be included)."""
    digest = seed(registry, oci, capsys)
    oci.budget_429, oci.retry_after = 1, retry_after
    code, out, err = run(capsys, "prefetch", f"{oci.host}/app/img:1", "--json")
    assert code == 0 and json.loads(out)["imageDigest"] == digest, err
    oci.budget_429 = 100  # a limit that does not lift: one line, exit 1
    code, _, err = run(capsys, "prefetch", f"{oci.host}/app/img:1")
    assert code == 1 and "429" in err and len(err.strip().splitlines()) == 1


# --- ECR ------------------------------------------------------------------------------------------

def test_ecr_refuses_cross_repository_mounts_with_202(registry, oci, cache_dir, tmp_path, capsys):
    """ECR answers a mount of a blob no manifest of the source references with 202, starting an
    upload. Source: aws/containers-roadmap#2860 and #1459."""
    seed(registry, oci, capsys)
    oci.quirks.add("ecr-no-mount")
    code, out, err = run(capsys, "copy", f"{oci.host}/app/img:1", f"{oci.host}/other/img:1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["blobsMounted"] == 0 and doc["blobsUploaded"] > 0
    assert any("mount=" in p for m, p, _ in oci.seen if m == "POST")


def test_ecr_layer_parts_of_at_least_5_mib(registry, oci, cache_dir, tmp_path, capsys):
    """ECR refuses an upload whose parts (but the last) are under 5 MiB. Source:
    dotnet/sdk-container-builds#424 ("LayerPartTooSmallException: All layer parts except the last
    part should be at least 5MB")."""
    oci.quirks.add("ecr-parts")
    oci.part_limit = 6 << 20
    big = tmp_path / "big"
    big.mkdir()
    (big / "data.bin").write_bytes(os.urandom(13 << 20))  # incompressible: a 13 MiB layer
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "quirk/big", "tag": "1", "paths": [{"source": "big", "target": "/big"}],
                                "architecture": "amd64"}))
    code, out, err = run(capsys, "build", str(spec), "--push", f"{oci.host}/big/img:1")
    assert code == 0, err
    sizes = [parts for parts in oci.parts.values() if len(parts) > 1]
    assert sizes and all(n >= 5 << 20 for parts in sizes for n in parts[:-1])


# --- Quay, Harbor, Artifactory --------------------------------------------------------------------

def test_quay_mount_without_from_is_never_sent(registry, oci, cache_dir, tmp_path, capsys):
    """Quay answered `?mount=` without `from=` with 400 Bad Request. Source: quay/quay#899
    (PROJQUAY-2570)."""
    seed(registry, oci, capsys)
    oci.quirks.add("quay-mount-needs-from")
    codes = every_command(registry, oci, capsys, tmp_path)
    assert set(codes.values()) == {0}, codes
    mounts = [p for m, p, _ in oci.seen if m == "POST" and "mount=" in p]
    assert mounts and all("from=" in p for p in mounts)


def test_harbor_401_on_a_refused_mount_falls_back_to_an_upload(registry, oci, cache_dir, tmp_path, capsys):
    """Harbor answers a mount it cannot do with 401 UNAUTHORIZED instead of 202. Source:
    goharbor/harbor#17097."""
    seed(registry, oci, capsys)
    oci.quirks.add("harbor-mount-401")
    code, out, err = run(capsys, "copy", f"{oci.host}/app/img:1", f"{oci.host}/other/img:1", "--json")
    assert code == 0, err
    assert json.loads(out)["blobsUploaded"] > 0
    codes = every_command(registry, oci, capsys, tmp_path)
    assert set(codes.values()) == {0}, codes


def test_artifactory_403_on_a_manifest_head_means_not_there(registry, oci, cache_dir, tmp_path, capsys):
    """Artifactory answers a HEAD of a manifest it does not have with 403. Source:
    google/go-containerregistry#1691 ("Make 403 non-fatal for manifest existence checks")."""
    seed(registry, oci, capsys)
    oci.quirks.add("artifactory-head-403")
    codes = every_command(registry, oci, capsys, tmp_path)
    assert set(codes.values()) == {0}, codes
    code, _, err = run(capsys, "prefetch", f"{oci.host}/app/img:nope")
    assert code == 1 and "no tag 'nope'" in err and len(err.strip().splitlines()) == 1


# --- Docker-Content-Digest --------------------------------------------------------------------------

def test_a_head_without_docker_content_digest(registry, oci, cache_dir, tmp_path, capsys):
    """Registries serving manifests statically (S3) or some Nexus set-ups send no
    Docker-Content-Digest. Sources: distribution/distribution#2384, regclient/regclient#363."""
    seed(registry, oci, capsys)
    oci.quirks.add("no-digest-header")
    codes = every_command(registry, oci, capsys, tmp_path)
    assert set(codes.values()) == {0}, codes


def test_a_wrong_docker_content_digest_for_a_tag_is_not_trusted(registry, oci, facts, cache_dir, tmp_path, capsys,
                                                               caplog):
    """A registry's Docker-Content-Digest for a tag can name another manifest (Docker Hub's HEAD of
    a manifest list once answered with the linux/amd64 manifest's digest). Source:
    opencontainers/distribution-spec#207 (comment of 2020-11-05)."""
    good = seed(registry, oci, capsys)
    code, _, err = run(capsys, "copy", f"{registry.host}/test/single-zstd:v1", f"{oci.host}/app/img:2")
    assert code == 0, err
    oci.quirks.add("wrong-digest-header")
    with caplog.at_level(logging.WARNING, logger="registry_tools.source"):
        code, out, err = run(capsys, "prefetch", f"{oci.host}/app/img:1", "--json")
    assert code == 0, err
    assert json.loads(out)["imageDigest"] == good == facts["single-gzip"]["manifest"]
    assert "its bytes are" in caplog.text
    codes = every_command(registry, oci, capsys, tmp_path)
    assert set(codes.values()) == {0}, codes
    copied = oci.manifests[("app/img-copied", "1")][0]
    assert "sha256:" + hashlib.sha256(copied).hexdigest() == good


# --- WWW-Authenticate -------------------------------------------------------------------------------

@pytest.mark.parametrize("challenge", [
    # Google Artifact Registry sends a realm alone. Source: apple/containerization#901.
    'Bearer realm="{realm}"',
    # Extra parameters (RFC 6750 section 3: error, error_description, scope) are ignored.
    'Bearer realm="{realm}",service="svc",error="insufficient_scope",x-vendor="1"',
    # Several challenges in one header, Basic first (RFC 7235 section 4.1): Bearer is answered.
    'Basic realm="Registry", Bearer realm="{realm}",service="svc"',
])
def test_www_authenticate_variants(registry, threaded, challenge, cache_dir, tmp_path, capsys):
    """WWW-Authenticate without `service`, with extra parameters, and with several challenges.
    Sources: RFC 7235 section 4.1, RFC 6750 section 3, apple/containerization#901 (Artifact
    Registry's realm-only challenge)."""
    with own_server() as realm:
        asked = []
        realm.expect_request("/token").respond_with_handler(
            lambda r: (asked.append(dict(r.args)), Response(json.dumps({"token": "quirk-token"}),
                                                            content_type="application/json"))[1])
        oci = OciRegistry(threaded, referrers_api=False)
        seed(registry, oci, capsys)
        oci.challenge = challenge.format(realm=f"http://localhost:{realm.port}/token")
        codes = every_command(registry, oci, capsys, tmp_path)
        assert set(codes.values()) == {0}, codes
        assert asked
        if "service=" not in challenge:
            assert all("service" not in a for a in asked)


def test_elsewhere_names_real_tests():
    """The behaviours covered by other test files name tests that exist."""
    from .helpers import ROOT

    for where in ELSEWHERE.values():
        path, _, name = where.partition("::")
        text = (ROOT / path).read_text()
        if name:
            assert re.search(r"def " + name.replace("*", r"\w*"), text), where
    assert TransportOptions  # (imported for the Registry above)


def test_a_failed_upload_session_is_cancelled(registry, oci, cache_dir, tmp_path, capsys):
    """An upload whose commit fails is DELETEd (distribution spec, "Canceling an upload"), not left
    for the registry to expire."""
    from registry_tools.api.push import push
    from registry_tools.errors import NetworkError
    from registry_tools.registry.pacing import RetryPolicy
    from registry_tools.session import Session

    layout = tmp_path / "layout"
    assert run(capsys, "pull", f"{registry.host}/test/single-gzip@sha256:ff402d2714575133048940e2d544c2a85471b8f9d"
               "4491a86158aca87ac6eeb68", "--format", "oci", "-o", str(layout))[0] == 0
    oci.quirks.add("fail-commit")
    with Session(retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)) as s:
        with pytest.raises(NetworkError, match="run the push again"):
            push(str(layout), f"{oci.host}/fails/img:1", session=s)
    deletes = [p for m, p, _ in oci.seen if m == "DELETE" and "/blobs/uploads/" in p]
    assert deletes and not oci.uploads  # every session it opened was cancelled


def test_src_and_dest_creds_each_go_to_their_own_repository(registry, cache_dir, tmp_path, capsys):
    """skopeo's --src-creds and --dest-creds: two registries, two users."""
    from .support.registry import LocalRegistry
    from .support.tokenserver import htpasswd_config

    a = LocalRegistry(tmp_path / "a", extra_config=htpasswd_config(tmp_path / "ha", {"alice": "pw-a-1"})).start()
    b = LocalRegistry(tmp_path / "b", extra_config=htpasswd_config(tmp_path / "hb", {"bob": "pw-b-2"})).start()
    try:
        code, _, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{a.host}/src/img:1",
                           "--creds", "alice:pw-a-1")
        assert code == 0, err
        code, out, err = run(capsys, "copy", f"{a.host}/src/img:1", f"{b.host}/dst/img:1",
                             "--src-creds", "alice:pw-a-1", "--dest-creds", "bob:pw-b-2", "--json")
        assert code == 0, err
        code, _, err = run(capsys, "copy", f"{a.host}/src/img:1", f"{b.host}/dst/img:2",
                           "--src-creds", "bob:pw-b-2", "--dest-creds", "alice:pw-a-1")
        assert code == 1 and "pw-" not in err
        code, _, err = run(capsys, "copy", f"{a.host}/src/img:1", f"{b.host}/dst/img:2", "--creds", "x:y",
                           "--dest-creds", "bob:pw-b-2")
        assert code == 2 and "not both" in err
    finally:
        a.stop()
        b.stop()
