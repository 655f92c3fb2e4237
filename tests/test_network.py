"""Proxies (a real tinyproxy, read back from its log) and certificates (a registry that requires a
client certificate): the registry, its token realm and blob storage all go the configured way."""
from __future__ import annotations


import pytest

from registry_tools.registry.network import Proxies, bypassed, shown

from .support.certs import make_ca_and_server, make_client
from .support.proxy import TinyProxy
from .support.registry import LocalRegistry, free_port, require_tools
from .helpers import run

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
              "NO_PROXY")


@pytest.fixture
def no_env_proxy(monkeypatch):
    for v in PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


@pytest.fixture
def proxy(tmp_path):
    p = TinyProxy(tmp_path / "proxy")
    yield p
    p.stop()


@pytest.mark.parametrize("host, entries, expected", [
    ("example.com", ("example.com",), True),
    ("a.example.com", ("example.com",), True),
    ("a.example.com", (".example.com",), True),
    ("badexample.com", ("example.com",), False),
    ("example.com", ("*",), True),
    ("10.1.2.3", ("10.0.0.0/8",), True),
    ("10.1.2.3", ("10.1.2.3",), True),
    ("11.1.2.3", ("10.0.0.0/8",), False),
    ("::1", ("::1",), True),
    ("[::1]", ("[::1]",), True),
    ("registry.local", ("other.local", " registry.local"), True),
    ("example.com", (), False),
])
def test_no_proxy_matches_as_curl_does(host, entries, expected):
    assert bypassed(host, tuple(e.strip() for e in entries)) is expected


def test_proxy_variables_and_precedence(no_env_proxy):
    no_env_proxy.setenv("HTTPS_PROXY", "http://upper:1")
    no_env_proxy.setenv("https_proxy", "http://lower:2")
    no_env_proxy.setenv("ALL_PROXY", "http://all:3")
    p = Proxies.from_environment()
    assert p.https == "http://lower:2" and p.http == "http://all:3"
    assert Proxies.from_environment("http://flag:4").https == "http://flag:4"
    assert shown("http://alice:s3cret@proxy.example:3128") == "http://proxy.example:3128"


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY", "all_proxy"])
def test_a_pull_goes_through_the_proxy_the_environment_names(registry, facts, proxy, no_env_proxy, variable,
                                                             cache_dir, tmp_path, capsys):
    no_env_proxy.setenv(variable, proxy.url)
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    code, _, err = run(capsys, "pull", ref, "-o", str(tmp_path / "x.tar"))
    assert code == 0, err
    through = proxy.requests()
    assert any(f"GET http://{registry.host}/v2/test/single-gzip/manifests/" in r for r in through)
    assert any(f"GET http://{registry.host}/v2/test/single-gzip/blobs/" in r for r in through)


def test_no_proxy_bypasses_and_the_flag_overrides(registry, facts, proxy, no_env_proxy, cache_dir, tmp_path,
                                                  capsys):
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    no_env_proxy.setenv("HTTP_PROXY", proxy.url)
    no_env_proxy.setenv("NO_PROXY", "example.com,127.0.0.0/8")
    code, _, err = run(capsys, "pull", ref, "-o", str(tmp_path / "x.tar"))
    assert code == 0, err
    assert proxy.requests() == []
    no_env_proxy.setenv("NO_PROXY", "*")
    no_env_proxy.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: it must not be used
    code, _, err = run(capsys, "digest", f"{registry.host}/test/single-gzip:v1")
    assert code == 0, err
    no_env_proxy.delenv("NO_PROXY")
    code, _, err = run(capsys, "digest", f"{registry.host}/test/single-gzip:v1", "--proxy", proxy.url)
    assert code == 0, err
    assert any("/manifests/v1" in r for r in proxy.requests())


def test_proxy_credentials_are_sent_and_never_printed(registry, facts, no_env_proxy, cache_dir, tmp_path, capsys):
    p = TinyProxy(tmp_path / "auth-proxy", "alice", "s3cret-pw")
    try:
        url = f"http://alice:s3cret-pw@127.0.0.1:{p.port}"
        code, out, err = run(capsys, "digest", f"{registry.host}/test/single-gzip:v1", "--proxy", url, "-v")
        assert code == 0, err
        assert "s3cret-pw" not in out + err and p.requests()
        bad = f"http://alice:wrong-pw@127.0.0.1:{p.port}"  # tinyproxy answers a wrong password with 401
        code, out, err = run(capsys, "digest", f"{registry.host}/test/single-gzip:v1", "--proxy", bad, "-v")
        assert code == 1 and "wrong-pw" not in out + err
        code, out, err = run(capsys, "digest", f"{registry.host}/test/single-gzip:v1", "--proxy", p.url)
        assert code == 1 and f"the proxy {p.url} asks for credentials (HTTP 407)" in err
    finally:
        p.stop()
    code, _, err = run(capsys, "digest", f"{registry.host}/x:1", "--proxy", "ftp://u:hidden@h:1")
    assert code == 2 and "hidden" not in err and "http://" in err


def test_a_proxy_that_is_down_or_refuses_is_named_and_not_the_registry(registry, no_env_proxy, cache_dir,
                                                                         tmp_path, capsys):
    ref = f"{registry.host}/test/single-gzip:v1"
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for how in ("flag", "environment"):
        if how == "environment":
            no_env_proxy.setenv("HTTP_PROXY", down)
        code, _, err = run(capsys, "digest", ref, *(["--proxy", down] if how == "flag" else []))
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"the proxy {down} cannot be reached" in err and "cannot reach registry" not in err, err
    no_env_proxy.delenv("HTTP_PROXY")
    p = TinyProxy(tmp_path / "auth-proxy", "alice", "s3cret-pw")
    try:  # tinyproxy answers a wrong password with a 401 of its own, where a 407 is due
        bad = f"http://alice:wrong-pw@127.0.0.1:{p.port}"
        code, out, err = run(capsys, "digest", ref, "--proxy", bad)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"the proxy {p.url} refused the request (HTTP 401" in err and "access denied" not in err, err
        assert "wrong-pw" not in out + err
    finally:
        p.stop()


def test_a_registry_the_proxy_cannot_reach_is_said_so(proxy, no_env_proxy, cache_dir, capsys):
    gone = f"127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "digest", f"{gone}/x:1", "--proxy", proxy.url)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert f"the proxy {proxy.url} could not connect to {gone}" in err, err


@pytest.mark.parametrize("value", ["notaurl", "alice:pw@proxyhost"])
def test_a_proxy_that_is_not_a_url_is_bad_usage_before_anything_is_sent(value, cache_dir, capsys):
    for argv in (["digest", "127.0.0.1:1/x:1"], ["login", "127.0.0.1:1", "-u", "u", "-p", "p"]):
        code, out, err = run(capsys, *argv, "--proxy", value)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "--proxy" in err and "http://HOST:PORT" in err and "pw" not in err


def test_a_tls_failure_through_a_proxy_is_the_registrys(proxy, no_env_proxy, cache_dir, tmp_path, capsys):
    """Through the proxy's tunnel, the certificate is the registry's: not said of the proxy."""
    require_tools("docker-registry")
    ca, cert, key = make_ca_and_server(tmp_path / "certs")
    reg = LocalRegistry(tmp_path / "reg", extra_config=f"  tls:\n    certificate: {cert}\n    key: {key}\n")
    reg.start(scheme="https", ca=ca)
    try:
        code, _, err = run(capsys, "digest", f"{reg.host}/x:1", "--proxy", proxy.url)
        assert code == 1 and "certificate" in err and "the proxy" not in err, err
        assert any(line.startswith(f"CONNECT {reg.host}") for line in proxy.requests())
    finally:
        reg.stop()


@pytest.fixture
def mtls(tmp_path):
    """A TLS registry requiring a client certificate signed by its CA, an image in it, and a client pair."""
    require_tools("docker-registry", "skopeo")
    certs = tmp_path / "certs"
    ca, cert, key = make_ca_and_server(certs)
    client_cert, client_key = make_client(tmp_path / "client", certs)
    reg = LocalRegistry(tmp_path / "mtls", extra_config=f"  tls:\n    certificate: {cert}\n    key: {key}\n"
                                                         f"    clientcas:\n      - {ca}\n")
    reg.start(scheme="https", ca=ca, client=(client_cert, client_key))
    yield reg, ca, client_cert, client_key
    reg.stop()


def test_mutual_tls_works_with_certs_d_or_cert_dir_and_fails_in_one_line_without(mtls, registry, no_env_proxy,
                                                                                  cache_dir, tmp_path, capsys):
    reg, ca, client_cert, client_key = mtls
    no_env_proxy.setenv("REGISTRY_TOOLS_CERTS_D", str(tmp_path / "certs.d"))
    ref = f"{reg.host}/m/app:1"
    # no client certificate: one line saying what is missing and where it goes
    code, _, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", ref, "--ca-file", str(ca))
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "client certificate" in err and "certs.d" in err
    # docker's certs.d layout for HOST:PORT: the CA and the client pair, nothing on the command line
    host_dir = tmp_path / "certs.d" / reg.host
    host_dir.mkdir(parents=True)
    (host_dir / "ca.crt").write_bytes(ca.read_bytes())
    (host_dir / "client.cert").write_bytes(client_cert.read_bytes())
    (host_dir / "client.key").write_bytes(client_key.read_bytes())
    code, out, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", ref)
    assert code == 0, err
    code, out, err = run(capsys, "pull", f"{reg.host}/m/app@{out.strip()}", "-o", str(tmp_path / "x.tar"))
    assert code == 0, err
    # skopeo's --cert-dir: the same files in a directory named on the command line
    no_env_proxy.setenv("REGISTRY_TOOLS_CERTS_D", str(tmp_path / "none"))
    cert_dir = tmp_path / "cert-dir"
    cert_dir.mkdir()
    for f in host_dir.iterdir():
        (cert_dir / f.name).write_bytes(f.read_bytes())
    code, out, err = run(capsys, "digest", ref, "--cert-dir", str(cert_dir))
    assert code == 0, err
    (cert_dir / "client.key").unlink()
    code, _, err = run(capsys, "digest", ref, "--cert-dir", str(cert_dir))
    assert code == 2 and "client.key" in err


def test_https_through_the_proxy_tunnels_and_reaches_the_token_realm(registry, proxy, no_env_proxy, cache_dir,
                                                                     tmp_path, capsys):
    """CONNECT for an https registry; its token realm (another port) through the proxy too."""
    from .support.tokenserver import Policy, TokenServer

    require_tools("docker-registry", "skopeo")
    ca, cert, key = make_ca_and_server(tmp_path / "certs")
    policy = Policy(passwords={"alice": "pw-alice-1"}, identity_tokens={}, grants={"alice": {"t/": ["pull", "push"]}},
                    anonymous={"t/": ["pull"]})
    server = TokenServer(tmp_path / "tokens", policy)
    reg = LocalRegistry(tmp_path / "reg", extra_config=f"  tls:\n    certificate: {cert}\n    key: {key}\n" +
                        server.registry_config()).start(scheme="https", ca=ca)
    try:
        code, out, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{reg.host}/t/app:v1",
                             "--ca-file", str(ca), "--creds", "alice:pw-alice-1")
        assert code == 0, err
        assert proxy.requests() == []
        no_env_proxy.setenv("https_proxy", proxy.url)
        no_env_proxy.setenv("http_proxy", proxy.url)
        code, out, err = run(capsys, "digest", f"{reg.host}/t/app:v1", "--ca-file", str(ca))
        assert code == 0, err
        lines = proxy.requests()
        assert any(line.startswith(f"CONNECT {reg.host}") for line in lines), lines
        assert any(f"127.0.0.1:{server.port}/token" in line for line in lines), lines
    finally:
        reg.stop()
        server.stop()


def test_blob_storage_reached_by_redirect_goes_through_the_proxy(httpserver, proxy, no_env_proxy, cache_dir,
                                                                 tmp_path, capsys):
    import re

    from werkzeug.wrappers import Response

    from .support.fakeregistry import FakeRegistry
    from .support.servers import own_server

    fake = FakeRegistry(httpserver)
    with own_server() as storage:
        storage.expect_request(re.compile(r"^/v2/.*")).respond_with_handler(
            lambda request: Response(fake.lay.blobs[request.path.rsplit("/", 1)[-1]],
                                     content_type="application/octet-stream"))
        fake.foreign_url = f"http://localhost:{storage.port}"
        fake.faults[fake.blob_path(fake.big)] = ["redirect"]
        no_env_proxy.setenv("HTTP_PROXY", proxy.url)
        code, _, err = run(capsys, "pull", fake.ref, "-o", str(tmp_path / "x.tar"))
        assert code == 0, err
        lines = proxy.requests()
        assert any(f"http://localhost:{storage.port}/v2/" in line for line in lines), lines
        assert any(f"http://{httpserver.host}:{httpserver.port}/v2/" in line for line in lines), lines
