"""Manifest parsing: media-type sniffing, byte-exact digests, schema1 and size refusal."""
from __future__ import annotations

import json

import pytest

from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.errors import ManifestError

from .helpers import CORPUS, load

CI = load("manifests/containers-image/cases.json")
CI_DIR = CORPUS / "manifests/containers-image"
SCHEMA = load("oci-image-spec/schema_cases.json")


@pytest.mark.parametrize("case", CI["guess_media_type"], ids=lambda c: c["file"].split("/")[-1])
def test_guess_media_type(case):
    raw = (CI_DIR / case["file"]).read_bytes()
    assert mf.guess_media_type(raw) == case["guessed_media_type"]


@pytest.mark.parametrize("case", [c for c in CI["manifest_digest"] if "v2s1" not in (c["file"] or "")],
                         ids=lambda c: (c["file"] or "<empty>").split("/")[-1])
def test_manifest_digest_is_over_raw_bytes(case):
    raw = (CI_DIR / case["file"]).read_bytes() if case["file"] else case["bytes"].encode()
    assert str(Digest.of_bytes(raw)) == case["expected_digest"]


@pytest.mark.parametrize("name", ["v2s1.manifest.json", "v2s1-unsigned.manifest.json",
                                  "v2s1-invalid-signatures.manifest.json"])
def test_schema1_refused(name):
    raw = (CI_DIR / "internal-manifest-testdata" / name).read_bytes()
    with pytest.raises(ManifestError, match="schema1"):
        mf.parse(raw)


def test_schema1_refused_by_content_type():
    with pytest.raises(ManifestError, match="schema1"):
        mf.parse(b'{"schemaVersion":2}', content_type=mf.SCHEMA1_SIGNED)


@pytest.mark.parametrize("name,kind", [
    ("v2s2.manifest.json", mf.ImageManifest), ("v2s2nomime.manifest.json", mf.ImageManifest),
    ("ociv1.manifest.json", mf.ImageManifest), ("ociv1nomime.manifest.json", mf.ImageManifest),
    ("v2list.manifest.json", mf.Index), ("ociv1.image.index.json", mf.Index),
    ("ociv1nomime.image.index.json", mf.Index), ("schema2list.json", mf.Index),
])
def test_parse_kinds(name, kind):
    raw = (CI_DIR / "internal-manifest-testdata" / name).read_bytes()
    doc = mf.parse(raw)
    assert isinstance(doc, kind)
    assert doc.raw == raw  # kept verbatim: its digest is the digest of these bytes


@pytest.mark.parametrize("name", ["non-json.manifest.json", "unknown-version.manifest.json"])
def test_unusable(name):
    with pytest.raises(ManifestError):
        mf.parse((CI_DIR / "internal-manifest-testdata" / name).read_bytes())


def test_oversized_manifest_refused():
    big = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [],
                      "annotations": {"x": "y" * (mf.MAX_MANIFEST_SIZE + 1)}}).encode()
    with pytest.raises(ManifestError, match="limit"):
        mf.parse(big)


def test_content_type_and_declared_type_must_agree():
    raw = (CI_DIR / "internal-manifest-testdata/v2s2.manifest.json").read_bytes()
    with pytest.raises(ManifestError, match="served as"):
        mf.parse(raw, content_type=mf.OCI_MANIFEST)


def test_consistent_fixture_pairs():
    """containers/image's manifest+config pairs: config digest and size match the bytes."""
    d = CI_DIR / "internal-image-fixtures"
    for man, cfg in (("schema2.json", "schema2-config.json"), ("oci1.json", "oci1-config.json")):
        doc = mf.parse((d / man).read_bytes())
        assert isinstance(doc, mf.ImageManifest)
        raw = (d / cfg).read_bytes()
        assert doc.config.digest == Digest.of_bytes(raw) and doc.config.size == len(raw)
        assert len(mf.diff_ids(mf.parse_config(raw))) == len(doc.layers)


@pytest.mark.parametrize("vector", SCHEMA["digest_vectors"], ids=lambda v: v["source"][-40:])
def test_real_world_digest_vectors(vector):
    body = vector["docker_media_type_body"]
    assert str(Digest.of_bytes(body.encode())) == vector["sha256_of_exact_bytes"]


@pytest.mark.parametrize("name,digest_prefix", [
    ("dockerhub_library-docker-1.12.1-manifest.json", "sha256:888206c7"),
])
def test_real_world_files(name, digest_prefix):
    raw = (CORPUS / "manifests/real-world" / name).read_bytes()
    assert str(Digest.of_bytes(raw)).startswith(digest_prefix)
    assert isinstance(mf.parse(raw), mf.ImageManifest)


@pytest.mark.parametrize("mt,kind", [
    (mf.OCI_LAYER_GZIP, "gzip"), (mf.DOCKER_LAYER_GZIP, "gzip"), (mf.OCI_LAYER_ZSTD, "zstd"),
    (mf.DOCKER_LAYER_ZSTD, "zstd"), (mf.OCI_LAYER, "none"), (mf.DOCKER_LAYER, "none"),
])
def test_layer_compression(mt, kind):
    assert mf.layer_compression(mt) == kind
