"""Digests and the hash forms users pin."""
from __future__ import annotations

import base64
import hashlib

import pytest

from registry_tools.model.digest import Digest, nix32_decode, nix32_encode, parse_output_hash, sri
from registry_tools.errors import InvalidDigest

EMPTY = hashlib.sha256(b"").digest()


def test_nix32_known_vector():
    # `nix hash to-base32 sha256:e3b0c442…` (the empty string) prints this.
    assert nix32_encode(EMPTY) == "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"


@pytest.mark.parametrize("seed", range(20))
def test_nix32_round_trip(seed):
    raw = hashlib.sha256(str(seed).encode()).digest()
    assert nix32_decode(nix32_encode(raw), 32) == raw


@pytest.mark.parametrize("form", [
    lambda r: sri(r), lambda r: r.hex(), lambda r: r.hex().upper(), lambda r: "sha256:" + r.hex(),
    lambda r: nix32_encode(r), lambda r: "sha256:" + nix32_encode(r), lambda r: base64.b64encode(r).decode(),
])
def test_output_hash_forms(form):
    raw = hashlib.sha256(b"registry-tools").digest()
    assert parse_output_hash(form(raw)) == raw


@pytest.mark.parametrize("bad", ["", "sha256-abc", "md5-1B2M2Y8AsgTpgAmY7PhCfg==", "sha512:" + "0" * 128,
                                 "z" * 64, "sha256:" + "0" * 63])
def test_output_hash_rejects(bad):
    with pytest.raises(InvalidDigest):
        parse_output_hash(bad)


@pytest.mark.parametrize("bad", ["sha256:abc", "sha256:" + "A" * 64, "sha512:" + "a" * 128, "nocolon", "sha256:"])
def test_digest_rejects(bad):
    with pytest.raises(InvalidDigest):
        Digest.parse(bad)


def test_digest_round_trip():
    d = Digest.parse("sha256:" + "ab" * 32)
    assert str(d) == "sha256:" + "ab" * 32
