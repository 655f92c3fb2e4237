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
