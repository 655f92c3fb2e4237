"""sync (lock-driven mirroring) and prefetch --check/--update, against real registries."""
from __future__ import annotations

import json
import subprocess

import pytest

from registry_tools.api.pull import PullOptions, pull_image

from .helpers import run


def make_lock(capsys, tmp_path, lines: list[str]) -> tuple:
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{line}\n" for line in lines))
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--json")
    assert code == 0, err
    lock = tmp_path / "images.lock.json"
    lock.write_text(out)
    return listing, lock


def not_ping(requests):
    return [r for r in requests if r != ("GET", "/v2/")]


def test_sync_mirrors_the_pins_and_the_mirror_lock_pulls_the_same_hashes(registry, target, tmp_path, cache_dir,
                                                                         capsys, monkeypatch):
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/multi:v1 linux/arm64",
                                           f"{registry.host}/test/multi:v1 linux/amd64",
                                           f"{registry.host}/test/single-gzip:v1"])
    mirror = tmp_path / "mirror.lock.json"
    code, _, err = run(capsys, "sync", str(lock), "--to", f"{target.host}/hub", "-o", str(mirror))
    assert code == 0, err
    pins, mirrored = json.loads(lock.read_text())["images"], json.loads(mirror.read_text())["images"]
    assert len(pins) == len(mirrored) == 3
    for pin, new in zip(pins, mirrored, strict=True):
        assert new["imageName"] == pin["imageName"].replace(registry.host, f"{target.host}/hub")
        assert {k: v for k, v in new.items() if k != "imageName"} == {k: v for k, v in pin.items() if k != "imageName"}
    index = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                            f"docker://{target.host}/hub/test/multi:v1"], capture_output=True, check=True).stdout
    assert "sha256:" + __import__("hashlib").sha256(index).hexdigest() == pins[0]["imageDigest"]
    # Every hash stays valid: pull each pin from the mirror, with a cache that has never seen them.
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "fresh-cache"))
    mark = registry.log_offset()
    for new in mirrored:
        pull_image(PullOptions(f"{new['imageName']}@{new['imageDigest']}", tmp_path / "out.tar", hash=new["hash"], final_image_name=new["finalImageName"], final_image_tag=new["finalImageTag"], os=new["os"], arch=new["arch"], variant=new.get("variant")))
    assert registry.requests_since(mark) == []  # read from the mirror alone


def test_a_complete_sync_costs_one_head_per_image_and_uploads_nothing(registry, target, tmp_path, cache_dir, capsys):
    lines = [f"{registry.host}/test/{name}:v1" for name in ("multi", "single-gzip", "single-zstd", "single-none")]
    _, lock = make_lock(capsys, tmp_path, lines)
    assert run(capsys, "sync", str(lock), "--to", target.host)[0] == 0
    mark_target, mark_source = target.log_offset(), registry.log_offset()
    code, out, err = run(capsys, "sync", str(lock), "--to", target.host)
    assert code == 0, err
    sent = not_ping(target.requests_since(mark_target))
    assert sorted(sent) == sorted(("HEAD", f"/v2/test/{n}/manifests/v1") for n in
                                  ("multi", "single-gzip", "single-zstd", "single-none"))
    assert registry.requests_since(mark_source) == []
    assert err.count("up to date") == 4
    assert json.loads(out)["images"][0]["imageName"] == f"{target.host}/test/multi"


def test_dry_run_sends_nothing(registry, target, tmp_path, cache_dir, capsys):
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/single-gzip:v1"])
    mark, mark_target = registry.log_offset(), target.log_offset()
    code, out, err = run(capsys, "sync", str(lock), "--to", f"{target.host}/m", "--dry-run")
    assert code == 0 and out == ""
    assert f"would copy {registry.host}/test/single-gzip@sha256:" in err and f"{target.host}/m/test/single-gzip" in err
    assert target.requests_since(mark_target) == [] and registry.requests_since(mark) == []


def test_dry_run_json_is_one_document_of_the_sync_schema(registry, target, tmp_path, cache_dir, capsys):
    import jsonschema

    from .helpers import ROOT
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/multi:v1 linux/arm64",
                                           f"{registry.host}/test/single-gzip:v1"])
    pins = json.loads(lock.read_text())["images"]
    mark, mark_target = registry.log_offset(), target.log_offset()
    code, out, err = run(capsys, "sync", str(lock), "--to", f"{target.host}/m", "--dry-run", "--json")
    assert code == 0, err
    doc = json.loads(out)  # one document, nothing else on stdout
    schema = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
    jsonschema.validate(doc, {**schema, "$ref": "#/$defs/sync"})
    assert doc == {"dryRun": True, "images": [
        {"source": f"{pin['imageName']}@{pin['imageDigest']}",
         "destination": pin["imageName"].replace(registry.host, f"{target.host}/m"), "tags": ["v1"]}
        for pin in pins]}
    assert target.requests_since(mark_target) == [] and registry.requests_since(mark) == []
    with pytest.raises(jsonschema.ValidationError):  # a dry run's images say nothing of what was sent
        jsonschema.validate({"dryRun": True, "images": [{**doc["images"][0], "upToDate": True}]},
                            {**schema, "$ref": "#/$defs/sync"})


def test_keep_going_finishes_then_reports_every_failure(registry, target, tmp_path, cache_dir, capsys):
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/single-gzip:v1", f"{registry.host}/test/single-none:v1"])
    doc = json.loads(lock.read_text())
    doc["images"][0]["imageDigest"] = "sha256:" + "0" * 64  # pinned, but gone from the source
    lock.write_text(json.dumps(doc, indent=2))
    out_lock = tmp_path / "mirror.json"
    code, _, err = run(capsys, "sync", str(lock), "--to", target.host, "--keep-going", "-o", str(out_lock))
    assert code != 0
    assert f"{lock}:4: " in err and "1 of 2 images failed" in err  # the entry starts on line 4
    assert not out_lock.exists()
    assert subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{target.host}/test/single-none:v1"], capture_output=True).returncode == 0


@pytest.mark.parametrize("entry,message", [
    ({"imageName": 5}, "imageName is missing or not a string"),
    ({"imageDigest": "sha256:xyz"}, "digest"),
    ({"imageName": "a/b:1"}, "must name a repository only"),
    ({"platform": ["linux"]}, "platform must be a string"),
])
def test_a_malformed_lock_entry_is_named_by_its_line(registry, target, tmp_path, cache_dir, capsys, entry, message):
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/single-gzip:v1", f"{registry.host}/test/single-none:v1"])
    doc = json.loads(lock.read_text())
    doc["images"][1].update(entry)
    lock.write_text(json.dumps(doc, indent=2))
    mark = target.log_offset()
    code, out, err = run(capsys, "sync", str(lock), "--to", target.host)
    line = [i + 1 for i, text in enumerate(lock.read_text().splitlines()) if text == "    {"][1]
    assert code == 2 and f"{lock}:{line}: " in err and message in err and out == ""
    assert target.requests_since(mark) == []


@pytest.mark.parametrize("to,message", [("notahost", "registry host"), ("localhost:5000/x:1", "no tag or digest"),
                                        ("localhost:5000/UPPER", "not a registry")])
def test_a_bad_mirror_target_is_refused(registry, tmp_path, cache_dir, capsys, to, message):
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/single-gzip:v1"])
    code, _, err = run(capsys, "sync", str(lock), "--to", to)
    assert code == 2 and message in err


def test_two_images_onto_one_mirror_path_is_refused(registry, tmp_path, cache_dir, capsys):
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/single-gzip:v1"])
    doc = json.loads(lock.read_text())
    other = dict(doc["images"][0], imageName="ghcr.io/test/single-gzip")
    doc["images"].append(other)
    lock.write_text(json.dumps(doc, indent=2))
    code, _, err = run(capsys, "sync", str(lock), "--to", "localhost:5000", "--dry-run")
    assert code == 2 and "would both be mirrored" in err


def test_prefetch_check_and_update(registry, target, tmp_path, cache_dir, capsys):
    for name in ("img", "other"):
        assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{target.host}/drift/{name}:v1")[0] == 0
    listing, lock = make_lock(capsys, tmp_path, [f"{target.host}/drift/img:v1", f"{target.host}/drift/other:v1"])
    before = json.loads(lock.read_text())["images"]
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--check", str(lock))
    assert code == 0 and out == "" and "is current" in err
    # The tag moves: single-none is copied over img:v1.
    assert run(capsys, "copy", f"{registry.host}/test/single-none:v1", f"{target.host}/drift/img:v1")[0] == 0
    mark = target.log_offset()
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--check", str(lock))
    assert code == 1
    assert out.splitlines() == [f"{listing}:1: {target.host}/drift/img:v1: locked {before[0]['imageDigest']}, "
                                f"now {out.split('now ')[1].strip()}"]
    assert all(m == "HEAD" for m, _ in not_ping(target.requests_since(mark)))
    code, _, err = run(capsys, "prefetch", "--from", str(listing), "--update", str(lock))
    assert code == 0, err
    after = json.loads(lock.read_text())["images"]
    assert after[1] == before[1]
    assert after[0]["imageDigest"] != before[0]["imageDigest"] and after[0]["hash"] != before[0]["hash"]
    assert run(capsys, "prefetch", "--from", str(listing), "--check", str(lock))[0] == 0


class _Terminal(__import__("io").StringIO):
    def isatty(self) -> bool:
        return True


def test_sync_progress_draws_bars_on_a_terminal_and_plain_lines_otherwise():
    from registry_tools.progress import SyncProgress

    plain = __import__("io").StringIO()
    p = SyncProgress(2, stream=plain)
    child = p.image(0, "reg.example/a")
    child.start(100, 1)
    child.advance(50)
    p.done(0, "mirrored a")
    p.done(1, "up to date b")
    p.close()
    assert plain.getvalue() == "mirrored a\nup to date b\n"

    term = _Terminal()
    p = SyncProgress(2, stream=term)
    child = p.image(0, "reg.example/a")
    child.start(2_000_000, 1)
    child.advance(1_000_000)
    p.bars.refresh()
    drawn = term.getvalue()
    p.done(0, "mirrored a")
    p.close()
    assert "reg.example/a" in drawn and "1.0/2.0 MB" in drawn and "0/2 images" in drawn
    assert "mirrored a" in term.getvalue()

    quiet = _Terminal()
    p = SyncProgress(1, quiet=True, stream=quiet)
    p.image(0, "x").advance(5)
    p.done(0, "mirrored x")
    p.close()
    assert quiet.getvalue() == ""


def test_the_mirror_is_given_as_dest_or_as_to(registry, target, tmp_path, cache_dir, capsys):
    """`sync LOCK DEST`, as skopeo sync's SOURCE DESTINATION; --to stays the same."""
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/single-gzip:v1"])
    code, by_dest, err = run(capsys, "sync", str(lock), f"{target.host}/m")
    assert code == 0, err
    code, by_to, err = run(capsys, "sync", str(lock), "--to", f"{target.host}/m")
    assert code == 0 and by_to == by_dest and "up to date" in err
    code, same, err = run(capsys, "sync", str(lock), f"{target.host}/m", "--to", f"{target.host}/m")
    assert code == 0 and same == by_dest
    for argv, message in (([f"{target.host}/m", "--to", f"{target.host}/n"], "not both"),
                          ([], "name the mirror")):
        code, out, err = run(capsys, "sync", str(lock), *argv)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_a_shards_dry_run_lists_its_own_images(registry, target, tmp_path, cache_dir, capsys):
    import jsonschema

    from .helpers import ROOT
    _, lock = make_lock(capsys, tmp_path, [f"{registry.host}/test/{name}:v1" for name in
                                           ("single-gzip", "single-zstd", "single-none", "docker-types")])
    schema = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
    whole = json.loads(run(capsys, "sync", str(lock), target.host, "--dry-run", "--json")[1])
    seen = []
    for i in range(3):
        code, out, err = run(capsys, "sync", str(lock), target.host, "--shard", f"{i}/3", "--dry-run", "--json")
        assert code == 0, err
        doc = json.loads(out)
        jsonschema.validate(doc, {**schema, "$ref": "#/$defs/sync"})
        assert doc["shard"] == {"index": i, "count": 3}
        seen += doc["images"]
    assert sorted(seen, key=json.dumps) == sorted(whole["images"], key=json.dumps)


def test_a_blob_two_images_share_is_sent_once_and_mounted_for_the_other(registry, own_registry, target, tmp_path,
                                                                         cache_dir, capsys):
    """Images copied at once that share blobs: the second waits for the first's transfer and
    mounts it, instead of sending the same bytes again (sync runs its images concurrently)."""
    names = [f"{own_registry.host}/team{i}/app:v1" for i in range(4)]
    for name in names:  # one image under four names: every blob shared
        assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", name)[0] == 0
    _, lock = make_lock(capsys, tmp_path, names)
    mark = target.log_offset()
    code, _, err = run(capsys, "sync", str(lock), "--to", target.host, "--jobs", "4")
    assert code == 0, err
    sent = target.requests_since(mark)
    puts = [uri.partition("digest=")[2] for method, uri in sent if method == "PUT" and "/blobs/uploads/" in uri]
    mounts = [uri for method, uri in sent if method == "POST" and "mount=" in uri]
    blobs = len(set(puts))
    assert blobs >= 2 and len(puts) == blobs, sent  # each blob's bytes went once
    assert len(mounts) == 3 * blobs, sent  # and the three other repositories mounted it
    for i in range(4):  # every image is whole at the mirror
        assert subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{target.host}/team{i}/app:v1"],
                              capture_output=True).returncode == 0
