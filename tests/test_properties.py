"""Every parser of untrusted input, under generated input: a value or a typed error, never a crash.

"Typed error" means a RegistryToolsError (what the CLI prints as one line), or for the
strict challenge parser the ChallengeSyntaxError it documents. Generated documents mix
the keys each format expects with values of every JSON type, so the type checks at
the edge are exercised, not only the JSON syntax.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry_tools.builder.closure import parse_graph
from registry_tools.builder.spec import parse_spec
from registry_tools.errors import RegistryToolsError
from registry_tools.formats.docker_archive import read_docker_archive
from registry_tools.formats.oci_layout import LayoutReader
from registry_tools.model import manifest as mf
from registry_tools.model import platform as pf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest, parse_output_hash
from registry_tools.registry.auth import ChallengeSyntaxError, parse_challenges, token_lifetime, token_value
from registry_tools.registry.credentials import CredentialStore
from registry_tools.api.prefetch import parse_lock_input
from registry_tools.store.cache import BlobCache

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=40)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
DIGEST = "sha256:" + "a" * 64


def any_of(*keys: str) -> st.SearchStrategy[dict]:
    """Objects holding some of the keys a format expects, each with a value of any type."""
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), json_values | st.just(DIGEST), max_size=6)


def descriptors() -> st.SearchStrategy:
    plat = any_of("os", "architecture", "variant", "os.version", "os.features") | json_values
    return st.fixed_dictionaries({"mediaType": st.sampled_from([mf.OCI_MANIFEST, mf.DOCKER_MANIFEST]) | json_values,
                                  "digest": st.just(DIGEST) | json_values, "size": st.integers(-5, 10**6) | json_values},
                                 optional={"platform": plat, "annotations": json_values, "urls": json_values,
                                           "artifactType": json_values})


manifests = st.fixed_dictionaries({"schemaVersion": st.sampled_from([1, 2]) | json_values},
                                  optional={"mediaType": st.sampled_from([mf.OCI_INDEX, mf.OCI_MANIFEST, mf.DOCKER_LIST])
                                            | json_values,
                                            "manifests": st.lists(descriptors(), max_size=3) | json_values,
                                            "config": descriptors() | json_values,
                                            "layers": st.lists(descriptors(), max_size=3) | json_values,
                                            "artifactType": json_values, "annotations": json_values})


def typed(fn, *args, allowed: tuple[type[BaseException], ...] = (RegistryToolsError,)):
    try:
        return fn(*args)
    except allowed:
        return None


@SETTINGS
@given(st.text(max_size=300))
def test_reference_parsers(text):
    for fn in (refs.parse, refs.parse_normalized, refs.parse_docker_ref, refs.parse_any):
        typed(fn, text)


@SETTINGS
@given(st.text(max_size=100))
def test_digest_and_hash_parsers(text):
    typed(Digest.parse, text)
    typed(parse_output_hash, text)


@SETTINGS
@given(st.text(max_size=80))
def test_platform_parser(text):
    typed(pf.parse, text)


@SETTINGS
@given(manifests, st.sampled_from(["", mf.OCI_INDEX, mf.OCI_MANIFEST, mf.SCHEMA1, "text/plain"]))
def test_manifest_parser_and_platform_choice(doc, content_type):
    raw = json.dumps(doc).encode()
    parsed = typed(mf.parse, raw, content_type)
    mf.guess_media_type(raw)
    if isinstance(parsed, mf.Index):
        typed(pf.choose_in_index, parsed.choice_view(), pf.Platform("linux", "amd64"))
        pf.offered_platforms([d.raw for d in parsed.manifests])


def entries() -> st.SearchStrategy:
    """Index entries whose digest, size and annotations are right, the platform of any shape."""
    plat = any_of("os", "architecture", "variant", "os.version", "os.features") | json_values
    notes = st.dictionaries(st.sampled_from(["vnd.docker.reference.type", "x"]), st.text(max_size=5), max_size=2)
    return st.fixed_dictionaries({"mediaType": st.just(mf.OCI_MANIFEST), "digest": st.just(DIGEST),
                                  "size": st.integers(0, 10**6), "platform": plat}, optional={"annotations": notes})


@SETTINGS
@given(st.lists(entries(), min_size=1, max_size=4), st.sampled_from(["linux/amd64", "linux/arm/v7", "windows/amd64"]))
def test_index_entries_reach_the_platform_chooser_well_typed(items, wanted):
    raw = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": items}).encode()
    parsed = typed(mf.parse, raw)
    if isinstance(parsed, mf.Index):
        typed(pf.choose_in_index, parsed.choice_view(), pf.parse(wanted))
        pf.offered_platforms([d.raw for d in parsed.manifests])


@SETTINGS
@given(st.binary(max_size=300))
def test_manifest_parser_on_bytes(raw):
    typed(mf.parse, raw)
    typed(mf.parse_config, raw)


@SETTINGS
@given(any_of("os", "architecture", "variant", "config", "rootfs", "history", "created")
       | json_values)
def test_config_parser(doc):
    config = typed(mf.parse_config, json.dumps(doc).encode())
    if config is not None:
        typed(mf.diff_ids, config)


@SETTINGS
@given(st.lists(st.text(max_size=60), max_size=3), st.booleans())
def test_challenge_parser(headers, strict):
    typed(parse_challenges, headers, strict, allowed=(ChallengeSyntaxError,))


@SETTINGS
@given(json_values)
def test_token_answers(value):
    typed(token_value, value, "r")
    assert 1.0 <= token_lifetime(value) <= 24 * 3600


@SETTINGS
@given(json_values | st.lists(any_of("path", "references", "narSize"), max_size=4) | st.text(max_size=200))
def test_reference_graph_parser(doc):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    typed(parse_graph, text, "graph")


@SETTINGS
@given(any_of("name", "tag", "paths", "closure", "contents", "config", "created", "mtime", "maxLayers", "uid",
              "layering", "compressor", "architecture", "variant", "inheritConfig", "fromImage"))
def test_build_spec_parser(doc):
    doc.setdefault("name", "example/app")
    typed(parse_spec, doc, Path("/nonexistent-base"))


@SETTINGS
@given(st.text(max_size=300))
def test_lock_input_parser(text):
    typed(parse_lock_input, text, "input")


@SETTINGS
@given(any_of("auths", "credHelpers", "credsStore") | json_values)
def test_auth_file_parser(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("auth") / "auth.json"
    path.write_text(json.dumps(doc))
    typed(CredentialStore([path]).lookup, "localhost:5000", "x/y")


def tar_with(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@SETTINGS
@given(st.lists(any_of("Config", "Layers", "RepoTags"), max_size=2) | json_values)
def test_docker_archive_manifest_parser(tmp_path_factory, doc):
    root = tmp_path_factory.mktemp("da")
    (root / "a.tar").write_bytes(tar_with({"manifest.json": json.dumps(doc).encode(), "c.json": b"{}"}))
    typed(read_docker_archive, root / "a.tar", None, BlobCache(root / "cache"), "archive")


@SETTINGS
@given(st.fixed_dictionaries({}, optional={"manifests": st.lists(descriptors(), max_size=3) | json_values,
                                           "schemaVersion": json_values}) | json_values)
def test_layout_index_parser(tmp_path_factory, doc):
    root = tmp_path_factory.mktemp("layout")
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps(doc))
    with LayoutReader(root, "layout") as layout:
        typed(layout.entries)
        typed(layout.entries, "v1")
