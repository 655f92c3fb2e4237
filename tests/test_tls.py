"""A registry that speaks TLS on loopback: used over verified TLS, never downgraded to http."""
from __future__ import annotations

import pytest

from registry_tools import cli

from .support.registry import require_tools as _require
from .support.certs import make_ca_and_server
from .support.imagegen import single_arch_layout
from .support.registry import LocalRegistry, skopeo_push_layout_tls


@pytest.fixture
def tls_registry(tmp_path):
    _require("docker-registry", "skopeo")
    ca, cert, key = make_ca_and_server(tmp_path / "certs")
    reg = LocalRegistry(tmp_path / "tls-registry",
                        extra_config=f"  tls:\n    certificate: {cert}\n    key: {key}\n").start(scheme="https", ca=ca)
    facts = single_arch_layout(tmp_path / "layout")
    skopeo_push_layout_tls(tmp_path / "layout", "v1", f"{reg.host}/tls/image:v1", ca)
    try:
        yield reg, ca, facts
    finally:
        reg.stop()


def test_pull_over_verified_tls_with_ca_file(tls_registry, cache_dir, tmp_path, capsys):
    reg, ca, facts = tls_registry
    code = cli.main(["pull", f"{reg.host}/tls/image@{facts['manifest']}", "--ca-file", str(ca),
                     "-o", str(tmp_path / "x.tar"), "-q"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "x.tar").exists()


def test_ssl_cert_file_is_honoured(tls_registry, cache_dir, tmp_path, capsys, monkeypatch):
    reg, ca, facts = tls_registry
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    code = cli.main(["pull", f"{reg.host}/tls/image@{facts['manifest']}", "-o", str(tmp_path / "x.tar"), "-q"])
    assert code == 0, capsys.readouterr().err


def test_unknown_ca_is_refused_not_downgraded(tls_registry, cache_dir, tmp_path, capsys, monkeypatch):
    reg, ca, facts = tls_registry
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    code = cli.main(["pull", f"{reg.host}/tls/image@{facts['manifest']}", "-o", str(tmp_path / "x.tar"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "certificate" in err.lower() and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.tar").exists()
    code = cli.main(["pull", f"{reg.host}/tls/image@{facts['manifest']}", "--tls-verify=false",
                     "-o", str(tmp_path / "y.tar"), "-q"])
    assert code == 0


def _subject_hash(ca):
    """OpenSSL's name for a CA in a hashed directory (what c_rehash and update-ca-certificates write)."""
    import subprocess

    _require("openssl")
    return subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(ca)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_ssl_cert_dir_lists_directories_of_hashed_and_plain_certificates(tls_registry, cache_dir, tmp_path, capsys,
                                                                         monkeypatch):
    import shutil

    reg, ca, facts = tls_registry
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    shutil.copy(ca, hashed / f"{_subject_hash(ca)}.0")  # found by its hash name alone
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(ca, plain / "registry-ca.crt")
    empty = tmp_path / "empty"
    empty.mkdir()
    ref = f"{reg.host}/tls/image@{facts['manifest']}"
    for i, listed in enumerate((str(hashed), f"{empty}:{plain}", f"{tmp_path / 'missing'}:{hashed}")):
        monkeypatch.setenv("SSL_CERT_DIR", listed)
        out = tmp_path / f"x{i}.tar"  # a cold cache each time: every request goes over TLS
        assert cli.main(["pull", ref, "-o", str(out), "-q", "--cache-dir", str(tmp_path / f"cache{i}")]) == 0, \
            (listed, capsys.readouterr().err)
        assert out.exists()
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))  # the control: nothing else trusts this CA
    assert cli.main(["pull", ref, "-o", str(tmp_path / "y.tar"), "-q", "--cache-dir", str(tmp_path / "cold")]) == 1
    assert "certificate" in capsys.readouterr().err.lower()


def test_a_hashed_directory_is_read_only_when_a_chain_needs_it(tmp_path, monkeypatch):
    """/etc/ssl/certs holds each CA as NAME.pem with its hash name beside it: nothing of it is read
    when the context is made (it was every file, 60-300 ms at each start); a file no hash name
    reaches is read at once, and a file SSL_CERT_FILE named already is not read twice."""
    from registry_tools.registry.client import TransportOptions, ssl_context

    from .support.certs import make_ca_and_server

    ca, _, _ = make_ca_and_server(tmp_path / "certs")
    other, _, _ = make_ca_and_server(tmp_path / "other")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    baseline = ssl_context(TransportOptions()).cert_store_stats()["x509"]
    d = tmp_path / "system-like"
    d.mkdir()
    (d / "registry-ca.pem").write_bytes(ca.read_bytes())
    (d / f"{_subject_hash(ca)}.0").symlink_to("registry-ca.pem")
    monkeypatch.setenv("SSL_CERT_DIR", str(d))
    assert ssl_context(TransportOptions()).cert_store_stats()["x509"] == baseline
    (d / "unlinked.crt").write_bytes(other.read_bytes())
    assert ssl_context(TransportOptions()).cert_store_stats()["x509"] == baseline + 1
    monkeypatch.setenv("SSL_CERT_FILE", str(d / "unlinked.crt"))
    assert ssl_context(TransportOptions()).cert_store_stats()["x509"] == 1
