"""build --sbom: an SPDX 2.3 document derived from the closure, validated by spdx-tools,
deterministic, and attached to a pushed image as a referrer."""
from __future__ import annotations

import json
import shutil

import pytest

from registry_tools.formats.nar import nar_sha256
from registry_tools.model.digest import nix32_encode

from .support.registry import LocalRegistry
from .helpers import run

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
NAMES = {"hello-2.12.1": {"bin/hello": b"#!/bin/sh\necho hello\n"},
         "glibc-2.38-44": {"lib/libc.so.6": b"libc" * 500},
         "tzdata": {"share/zoneinfo/UTC": b"TZif"}}


def store(tmp_path):
    """Three store paths with real NAR hashes in a `nix path-info --json` graph."""
    paths = {}
    for i, (name, files) in enumerate(sorted(NAMES.items())):
        base = f"{str(i) * 32}-{name}"
        for rel, data in files.items():
            p = tmp_path / "store" / base / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        paths[name] = base
    hello, glibc, tz = (f"/nix/store/{paths[n]}" for n in ("hello-2.12.1", "glibc-2.38-44", "tzdata"))
    graph = []
    for path, refs in ((hello, [glibc, tz]), (glibc, []), (tz, [])):
        nar = nar_sha256(str(tmp_path / "store" / path.rsplit("/", 1)[1]))
        graph.append({"path": path, "references": refs, "narHash": "sha256:" + nix32_encode(nar)})
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "app").mkdir()
    shutil.copy(BUSYBOX, tmp_path / "app" / "busybox")
    spec = {"name": "example/sbom", "tag": "1.0", "closure": {"graph": "graph.json", "realStoreDir": "store"},
            "paths": [{"source": "app", "target": "/opt/app"}], "architecture": "amd64"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json", graph


def validate(path) -> dict:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    messages = validate_full_spdx_document(parse_file(str(path)))
    assert not messages, [m.validation_message for m in messages]
    return json.loads(path.read_text())


def test_the_sbom_lists_every_store_path_with_name_version_and_nar_hash(tmp_path, cache_dir, capsys):
    spec, graph = store(tmp_path)
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "layout"), "--sbom",
                       str(tmp_path / "sbom.json"))
    assert code == 0, err
    doc = validate(tmp_path / "sbom.json")
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["creationInfo"]["created"] == "1970-01-01T00:00:01Z"
    by_name = {p["name"]: p for p in doc["packages"]}
    assert by_name["hello"]["versionInfo"] == "2.12.1" and by_name["glibc"]["versionInfo"] == "2.38-44"
    assert "versionInfo" not in by_name["tzdata"]
    from registry_tools.model.digest import parse_output_hash

    for entry in graph:
        name = entry["path"].split("-", 1)[1]
        pkg = by_name[name.split("-")[0] if name != "tzdata" else name]
        assert pkg["checksums"] == [{"algorithm": "SHA256", "checksumValue": parse_output_hash(entry["narHash"]).hex()}]
    assert by_name["/opt/app"]["SPDXID"].startswith("SPDXRef-Path-")
    image = by_name["example/sbom"]
    assert image["versionInfo"] == "1.0" and image["primaryPackagePurpose"] == "CONTAINER"
    deps = {(r["spdxElementId"], r["relatedSpdxElement"]) for r in doc["relationships"]
            if r["relationshipType"] == "DEPENDS_ON"}
    assert (by_name["hello"]["SPDXID"], by_name["glibc"]["SPDXID"]) in deps and len(deps) == 2
    contained = [r for r in doc["relationships"] if r["relationshipType"] == "CONTAINS"]
    assert len(contained) == 4
    assert str(tmp_path) not in (tmp_path / "sbom.json").read_text()  # nothing of this machine
    # the same inputs, the same bytes
    first = (tmp_path / "sbom.json").read_bytes()
    assert run(capsys, "build", str(spec), "-o", str(tmp_path / "img.tar"), "--sbom", str(tmp_path / "again.json"))[0] == 0
    assert (tmp_path / "again.json").read_bytes() == first


def test_push_sbom_attaches_it_as_a_referrer(tmp_path, cache_dir, capsys):
    spec, _ = store(tmp_path)
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        ref = f"{reg.host}/sbom/app:1.0"
        code, out, err = run(capsys, "build", str(spec), "--push", ref, "--sbom", str(tmp_path / "sbom.json"),
                             "--json")
        assert code == 0, err
        digest = json.loads(out)["digest"]
        code, out, err = run(capsys, "referrers", f"{reg.host}/sbom/app@{digest}", "--json")
        (entry,) = json.loads(out)["referrers"]
        assert entry["artifactType"] == "application/spdx+json"
        validate(tmp_path / "sbom.json")
        import oras.client

        got = oras.client.OrasClient(hostname=reg.host, insecure=True).pull(
            target=f"{reg.host}/sbom/app@{entry['digest']}", outdir=str(tmp_path / "pulled"))
        assert [open(p, "rb").read() for p in got] == [(tmp_path / "sbom.json").read_bytes()]
    finally:
        reg.stop()


def test_sbom_of_a_multi_platform_spec_is_refused_in_one_line(tmp_path, cache_dir, capsys):
    from .test_multiarch import multi_workdir

    spec = multi_workdir(tmp_path)
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "l"), "--sbom", str(tmp_path / "s.json"))
    assert code == 2 and "--platform" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", [123, "md5:abc", "sha256:zz"])
def test_a_bad_nar_hash_in_the_graph_names_the_path(tmp_path, cache_dir, capsys, bad):
    spec, graph = store(tmp_path)
    graph[0]["narHash"] = bad
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "l"))
    assert code == 2 and "narHash" in err and graph[0]["path"] in err


def test_spdx_ids_are_unique_by_construction(tmp_path, cache_dir, capsys):
    """Two store paths sharing a hash part, and parts that were one ID once their characters were
    replaced (`a_b`, `a+b`, `a-b`; `3…_`, `3…+`): each package its own SPDXID, validated, the same
    on every run."""
    shared, other = "1" * 32, "2" * 32
    names = [f"{shared}-foo-1.0", f"{shared}-bar-2.0", f"{other}-a_b", f"{other}-a+b", f"{other}-a-b",
             f"{other}-x.y", f"{'3' * 31}_-c", f"{'3' * 31}+-c"]
    graph = []
    for i, base in enumerate(names):
        (tmp_path / "store" / base).mkdir(parents=True)
        (tmp_path / "store" / base / "file").write_bytes(base.encode())
        refs = [f"/nix/store/{names[i + 1]}"] if i + 1 < len(names) else []
        graph.append({"path": f"/nix/store/{base}", "references": refs,
                      "narHash": "sha256:" + nix32_encode(nar_sha256(str(tmp_path / "store" / base)))})
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    spec = {"name": "example/ids", "tag": "1", "closure": {"graph": "graph.json", "realStoreDir": "store"},
            "architecture": "amd64"}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    for out in ("a.json", "b.json"):
        code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / f"l-{out}"),
                           "--sbom", str(tmp_path / out))
        assert code == 0, err
    doc = validate(tmp_path / "a.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    ids = {p["comment"].split()[3]: p["SPDXID"] for p in doc["packages"] if p["SPDXID"] != "SPDXRef-Image"}
    assert sorted(ids) == sorted(f"/nix/store/{n}" for n in names)
    assert len(set(ids.values())) == len(names)
    assert ids[f"/nix/store/{shared}-foo-1.0"] == f"SPDXRef-StorePath-{shared}-foo-1..0"
    deps = {(r["spdxElementId"], r["relatedSpdxElement"]) for r in doc["relationships"]
            if r["relationshipType"] == "DEPENDS_ON"}
    assert deps == {(ids[f"/nix/store/{a}"], ids[f"/nix/store/{b}"]) for a, b in zip(names, names[1:], strict=False)}
