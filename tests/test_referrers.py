"""Referrers, artifacts and the fallback tag: against the real docker-registry (no referrers API)
and a scripted OCI 1.1 registry (the API and OCI-Subject); oras-py as the peer."""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess



from .support.ociregistry import OciRegistry
from .support.registry import LocalRegistry
from .helpers import check_schema, run, validator

SPDX = "application/spdx+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def raw_of(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, check=True).stdout


def seed(registry, host, facts, capsys, repo="app/img:1") -> str:
    code, _, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{host}/{repo}")
    assert code == 0, err
    return facts["single-gzip"]["manifest"]


def files(tmp_path):
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_text('{"spdxVersion": "SPDX-2.3"}\n')
    report = tmp_path / "report.txt"
    report.write_text("all good\n")
    return sbom, report


def test_attach_without_the_api_keeps_a_sorted_fallback_index(registry, target, facts, cache_dir, tmp_path,
                                                             capsys):
    subject = seed(registry, target.host, facts, capsys)
    sbom, report = files(tmp_path)
    ref = f"{target.host}/app/img:1"
    code, out, err = run(capsys, "attach", ref, "--artifact-type", SPDX, str(sbom), "--annotation",
                         "org.example.kind=sbom", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["subject"] == subject and first["files"] == 1
    manifest = json.loads(raw_of(f"{target.host}/app/img@{first['digest']}"))
    validator().validator_for("application/vnd.oci.image.manifest.v1+json").validate(manifest)
    assert manifest["artifactType"] == SPDX and manifest["config"]["digest"] == EMPTY_DIGEST
    assert manifest["subject"]["digest"] == subject and "created" not in json.dumps(manifest)
    assert manifest["layers"][0]["annotations"] == {"org.opencontainers.image.title": "sbom.spdx.json"}
    code, out, err = run(capsys, "attach", ref, "--artifact-type", "application/vnd.example.report",
                         f"{report}:text/plain", "--json")
    assert code == 0, err
    second = json.loads(out)
    tag = f"{target.host}/app/img:sha256-{subject.split(':')[1]}"
    fallback = raw_of(tag)
    index = json.loads(fallback)
    validator().validator_for("application/vnd.oci.image.index.v1+json").validate(index)
    assert [e["digest"] for e in index["manifests"]] == sorted([first["digest"], second["digest"]])
    by = {e["digest"]: e for e in index["manifests"]}
    assert by[first["digest"]]["artifactType"] == SPDX
    assert by[first["digest"]]["annotations"] == {"org.example.kind": "sbom"}
    assert by[second["digest"]]["artifactType"] == "application/vnd.example.report"
    # the same attach again: the same artifact, the fallback index unchanged
    code, out, _ = run(capsys, "attach", ref, "--artifact-type", SPDX, str(sbom), "--annotation",
                       "org.example.kind=sbom", "--json")
    assert json.loads(out)["digest"] == first["digest"] and raw_of(tag) == fallback
    code, out, err = run(capsys, "referrers", ref, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["via"] == "tag" and listed["subject"] == subject

    check_schema(listed, "referrers")
    check_schema(first, "attach")
    assert sorted(d["digest"] for d in listed["referrers"]) == sorted([first["digest"], second["digest"]])
    code, out, err = run(capsys, "referrers", ref, "--artifact-type", SPDX)
    assert code == 0 and out.split() == [first["digest"], SPDX, str(by[first["digest"]]["size"])]
    # oras-py pulls what attach pushed
    import oras.client

    client = oras.client.OrasClient(hostname=target.host, insecure=True)
    got = client.pull(target=f"{target.host}/app/img@{first['digest']}", outdir=str(tmp_path / "oras-out"))
    assert [p.rsplit("/", 1)[1] for p in got] == ["sbom.spdx.json"]
    assert (tmp_path / "oras-out" / "sbom.spdx.json").read_bytes() == sbom.read_bytes()
    # pull of an artifact says what it is
    code, _, err = run(capsys, "pull", f"{target.host}/app/img@{first['digest']}", "-o", str(tmp_path / "x.tar"))
    assert code == 1 and "artifact of type application/spdx+json" in err and len(err.strip().splitlines()) == 1


def test_the_referrers_api_and_oci_subject(httpserver, registry, facts, cache_dir, tmp_path, capsys, monkeypatch):
    oci = OciRegistry(httpserver)
    subject = seed(registry, oci.host, facts, capsys)
    sbom, report = files(tmp_path)
    code, out, err = run(capsys, "attach", f"{oci.host}/app/img:1", "--artifact-type", SPDX, str(sbom), "--json")
    assert code == 0, err
    ours = json.loads(out)["digest"]
    # the registry said OCI-Subject: no fallback tag was written
    assert not [p for m, p in oci.log if m == "PUT" and "/manifests/sha256-" in p]
    # oras-py pushes an artifact with a subject through the same registry
    import oras.client
    import oras.oci

    monkeypatch.chdir(tmp_path)
    client = oras.client.OrasClient(hostname=oci.host, insecure=True)
    raw = oci.manifests[("app/img", subject)][0]
    client.push(target=f"{oci.host}/app/img:oras-report", files=["report.txt:text/plain"],
                subject=oras.oci.Subject(json.loads(raw)["mediaType"], subject, len(raw)))
    theirs = "sha256:" + hashlib.sha256(oci.manifests[("app/img", "oras-report")][0]).hexdigest()
    code, out, err = run(capsys, "referrers", f"{oci.host}/app/img@{subject}", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["via"] == "api"
    assert sorted(d["digest"] for d in listed["referrers"]) == sorted([ours, theirs])
    code, out, err = run(capsys, "referrers", f"{oci.host}/app/img@{subject}", "--artifact-type", SPDX, "--json")
    assert [d["digest"] for d in json.loads(out)["referrers"]] == [ours]
    oci.page_size = 1  # one referrer a page: both are found through the Link header
    code, out, err = run(capsys, "referrers", f"{oci.host}/app/img@{subject}", "--json")
    assert sorted(d["digest"] for d in json.loads(out)["referrers"]) == sorted([ours, theirs])
    assert len([p for m, p in oci.log if "/referrers/" in p and "page=1" in p]) == 1


def test_hostile_referrers_answers_are_refused_or_skipped(httpserver, registry, target, facts, cache_dir, tmp_path,
                                                         capsys, caplog):
    oci = OciRegistry(httpserver)
    subject = seed(registry, oci.host, facts, capsys)
    oci.referrers_override[subject] = json.dumps({"schemaVersion": 2, "config": {}, "layers": []}).encode()
    code, _, err = run(capsys, "referrers", f"{oci.host}/app/img@{subject}")
    assert code == 1 and "not an index" in err and len(err.strip().splitlines()) == 1
    oci.referrers_override[subject] = b"<html>nope</html>"
    code, _, err = run(capsys, "referrers", f"{oci.host}/app/img@{subject}")
    assert code == 1 and "not valid JSON" in err
    # a fallback tag naming the image itself (oras#2148): skipped, with a line in the log
    subject = seed(registry, target.host, facts, capsys)
    hexd = subject.split(":")[1]
    assert run(capsys, "tag", f"{target.host}/app/img@{subject}", f"sha256-{hexd}")[0] == 0
    with caplog.at_level(logging.WARNING, logger="registry_tools.referrers"):
        code, out, err = run(capsys, "referrers", f"{target.host}/app/img@{subject}", "--json")
    assert code == 0 and json.loads(out)["referrers"] == []
    assert "not an index" in caplog.text
    # a fallback index whose entries are an artifact of another image, and one with a forged size: both skipped
    amd64 = facts["multi"]["platforms"]["linux/amd64"]
    assert run(capsys, "copy", f"{registry.host}/test/multi@{amd64}", f"{target.host}/app/img:amd64")[0] == 0
    sbom, _ = files(tmp_path)
    code, out, _ = run(capsys, "attach", f"{target.host}/app/img:amd64", "--artifact-type", SPDX, str(sbom), "--json")
    foreign = json.loads(out)["digest"]
    size = len(raw_of(f"{target.host}/app/img@{foreign}"))
    entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": foreign, "size": size},
               {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": foreign, "size": size + 7}]
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": entries}).encode()
    from registry_tools.registry.client import Registry

    reg = Registry(target.host)
    try:
        reg.put_manifest("app/img", f"sha256-{hexd}", index, "application/vnd.oci.image.index.v1+json")
    finally:
        reg.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="registry_tools.referrers"):
        code, out, err = run(capsys, "referrers", f"{target.host}/app/img@{subject}", "--json")
    assert code == 0, err
    assert json.loads(out)["referrers"] == []
    assert "its subject is not" in caplog.text and "skipping entry" in caplog.text


def test_an_answer_of_the_referrers_api_naming_another_subject_is_skipped(httpserver, registry, facts, cache_dir,
                                                                           tmp_path, capsys, caplog):
    """The API's answer is checked as the fallback tag's entries are: each entry's manifest, fetched
    by digest and verified, must name the subject asked about."""
    oci = OciRegistry(httpserver)
    subject = seed(registry, oci.host, facts, capsys)
    amd64 = facts["multi"]["platforms"]["linux/amd64"]
    assert run(capsys, "copy", f"{registry.host}/test/multi@{amd64}", f"{oci.host}/app/img:amd64")[0] == 0
    sbom, report = files(tmp_path)
    code, out, err = run(capsys, "attach", f"{oci.host}/app/img:amd64", "--artifact-type", SPDX, str(sbom), "--json")
    assert code == 0, err
    foreign = json.loads(out)["digest"]  # an SBOM of the amd64 image, not of `subject`
    code, out, err = run(capsys, "attach", f"{oci.host}/app/img:1", "--artifact-type", SPDX, str(report), "--json")
    ours = json.loads(out)["digest"]
    size = {d: len(oci.manifests[("app/img", d)][0]) for d in (foreign, ours)}
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": SPDX}
    oci.referrers_override[subject] = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {**entry, "digest": foreign, "size": size[foreign]},
            {**entry, "digest": ours, "size": size[ours] + 7},  # a forged size
            {**entry, "digest": "sha256:" + "0" * 64, "size": 10},  # nothing there
            {**entry, "digest": ours, "size": size[ours]}]}).encode()
    with caplog.at_level(logging.WARNING, logger="registry_tools.referrers"):
        code, out, err = run(capsys, "referrers", f"{oci.host}/app/img@{subject}", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["via"] == "api" and [d["digest"] for d in listed["referrers"]] == [ours]
    assert f"skipping entry {foreign}: its subject is not {subject}" in caplog.text
    assert caplog.text.count("skipping entry") == 3
    # a copy with --referrers carries only what refers to the image
    other = LocalRegistry(tmp_path / "other").start()
    try:
        code, out, err = run(capsys, "copy", f"{oci.host}/app/img:1", f"{other.host}/c/img:1", "--referrers", "--json")
        assert code == 0, err
        assert json.loads(out)["referrers"] == [ours]
    finally:
        other.stop()


def test_copy_referrers_carries_artifacts_recursively_and_cosign_tags(httpserver, registry, target, facts, cache_dir,
                                                                     tmp_path, capsys, monkeypatch):
    subject = seed(registry, target.host, facts, capsys)
    sbom, report = files(tmp_path)
    ref = f"{target.host}/app/img:1"
    code, out, _ = run(capsys, "attach", ref, "--artifact-type", SPDX, str(sbom), "--json")
    sbom_digest = json.loads(out)["digest"]
    code, out, _ = run(capsys, "attach", f"{target.host}/app/img@{sbom_digest}", "--artifact-type",
                       "application/vnd.example.signature", str(report), "--json")  # refers to the SBOM
    nested = json.loads(out)["digest"]
    # a legacy cosign signature tag beside the image
    cosign_tag = f"sha256-{subject.split(':')[1]}.sig"
    assert run(capsys, "tag", f"{target.host}/app/img@{nested}", cosign_tag)[0] == 0
    other = LocalRegistry(tmp_path / "other").start()
    try:
        code, out, err = run(capsys, "copy", ref, f"{other.host}/copy/img:1", "--referrers", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert sorted(doc["referrers"]) == sorted({sbom_digest, nested})
        code, out, err = run(capsys, "referrers", f"{other.host}/copy/img:1", "--json")
        assert [d["digest"] for d in json.loads(out)["referrers"]] == [sbom_digest]
        code, out, err = run(capsys, "referrers", f"{other.host}/copy/img@{sbom_digest}", "--json")
        assert [d["digest"] for d in json.loads(out)["referrers"]] == [nested]
        assert raw_of(f"{other.host}/copy/img:{cosign_tag}") == raw_of(f"{target.host}/app/img:{cosign_tag}")
        # copying again sends no manifest of them again
        mark = other.log_offset()
        code, out, err = run(capsys, "copy", ref, f"{other.host}/copy/img:1", "--referrers", "--json")
        assert code == 0, err
        assert not [p for m, p in other.requests_since(mark) if m == "PUT"]
    finally:
        other.stop()
    # from a registry with the referrers API (an oras-py artifact among them) to one without: the
    # fallback index is written there
    oci = OciRegistry(httpserver)
    seed(registry, oci.host, facts, capsys)
    import oras.client
    import oras.oci

    monkeypatch.chdir(tmp_path)
    raw = oci.manifests[("app/img", subject)][0]
    oras.client.OrasClient(hostname=oci.host, insecure=True).push(
        target=f"{oci.host}/app/img:oras", files=["report.txt:text/plain"],
        subject=oras.oci.Subject(json.loads(raw)["mediaType"], subject, len(raw)))
    theirs = "sha256:" + hashlib.sha256(oci.manifests[("app/img", "oras")][0]).hexdigest()
    code, out, err = run(capsys, "copy", f"{oci.host}/app/img:1", f"{target.host}/from-oci/img:1", "--referrers",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["referrers"] == [theirs]
    code, out, err = run(capsys, "referrers", f"{target.host}/from-oci/img:1", "--json")
    assert json.loads(out)["via"] == "tag" and [d["digest"] for d in json.loads(out)["referrers"]] == [theirs]
    code, _, err = run(capsys, "copy", ref, f"oci:{tmp_path / 'l'}", "--referrers")
    assert code == 2 and "between registries" in err


def test_eight_writers_attaching_at_once_all_land_in_the_fallback_index(registry, target, facts, cache_dir,
                                                                        tmp_path, capsys):
    """docker-registry has no referrers API: eight processes attach to one subject at once, each
    reading the fallback index, adding its entry and writing it back; none is lost."""
    import os
    import sys

    from .helpers import ROOT
    subject = seed(registry, target.host, facts, capsys)
    ref = f"{target.host}/app/img:1"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for i in range(8):
        note = tmp_path / f"note-{i}.txt"
        note.write_text(f"writer {i}\n")
        procs.append(subprocess.Popen([sys.executable, "-m", "registry_tools", "attach", ref, "--artifact-type",
                                       "application/vnd.example.note", str(note), "--json"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    attached = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        attached.append(json.loads(out)["digest"])
    assert len(set(attached)) == 8
    code, out, err = run(capsys, "referrers", ref, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["via"] == "tag" and listed["subject"] == subject
    assert sorted(d["digest"] for d in listed["referrers"]) == sorted(attached)
    index = json.loads(raw_of(f"{target.host}/app/img:sha256-{subject.split(':')[1]}"))
    assert [e["digest"] for e in index["manifests"]] == sorted(attached)
