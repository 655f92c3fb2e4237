"""sync --shard and lock merge: stable shards of a lock, several writers into one mirror at once,
and the examples (a Kubernetes indexed Job, a GitHub Actions matrix) run as written."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from registry_tools.api.lock import LockEntry
from registry_tools.api.shards import Shard, parse_shard, shard_of

from .helpers import IMAGES, ROOT, run
from .support.registry import LocalRegistry, require_tools, skopeo_push_layout

EXAMPLES = ROOT / "examples"


def entry(name: str, n: int, line: int = 0) -> LockEntry:
    digest = "sha256:" + hashlib.sha256(f"{name}-{n}".encode()).hexdigest()
    return LockEntry(line, {"imageName": name, "imageDigest": digest})


def shards_of(entries: list[LockEntry], count: int) -> list[list[LockEntry]]:
    return [[e for e in entries if Shard(i, count).holds(e)] for i in range(count)]


def test_shards_are_disjoint_cover_the_lock_and_an_edit_moves_no_other_entry():
    entries = [entry(f"reg.example/team/app{i % 23}", i % 31, i) for i in range(200)]
    entries += [entry("reg.example/multi", 7, 300 + p) for p in range(4)]  # the platforms of one index
    for count in range(1, 9):
        parts = shards_of(entries, count)
        ids = [id(e) for part in parts for e in part]
        assert sorted(ids) == sorted(id(e) for e in entries)  # disjoint, and together the whole lock
        assert sum(any(e.image_name == "reg.example/multi" for e in part) for part in parts) == 1
        assert count == 1 or min(len(p) for p in parts) > 0
        before = {e.line: shard_of(e, count) for e in entries}
        edited = [entry(e.image_name, 999, e.line) if e.line == 17 else e for e in entries]  # a new pin for one
        edited = [e for e in edited if e.line != 40] + [entry("reg.example/new", 1, 500)]  # one gone, one new
        edited.reverse()  # and every position changed
        for e in edited:
            if e.line not in (17, 500):
                assert shard_of(e, count) == before[e.line]


@pytest.mark.parametrize("text,env,expected", [
    ("0/1", {}, (0, 1)),
    ("3/4", {}, (3, 4)),
    ("auto", {"JOB_COMPLETION_INDEX": "2", "REGISTRY_TOOLS_SHARDS": "4"}, (2, 4)),
    ("auto/5", {"JOB_COMPLETION_INDEX": "4"}, (4, 5)),
    ("auto", {"REGISTRY_TOOLS_SHARD": "1", "REGISTRY_TOOLS_SHARDS": "3", "JOB_COMPLETION_INDEX": "0"}, (1, 3)),
    ("auto", {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"}, (0, 2)),  # GitLab's parallel counts from 1
])
def test_shard_forms(text, env, expected):
    s = parse_shard(text, env)
    assert (s.index, s.count) == expected


@pytest.mark.parametrize("text,env,message", [
    ("4/4", {}, "0 to N-1"), ("1/0", {}, "0 to N-1"), ("-1/3", {}, "not a whole number"),
    ("x/4", {}, "not a whole number"), ("2", {}, "give I/N"),
    ("auto", {}, "none of REGISTRY_TOOLS_SHARD, JOB_COMPLETION_INDEX, CI_NODE_INDEX is set"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "give N as auto/N or REGISTRY_TOOLS_SHARDS"),
    ("auto/4", {"JOB_COMPLETION_INDEX": "1", "REGISTRY_TOOLS_SHARDS": "3"}, "REGISTRY_TOOLS_SHARDS says 3"),
    ("auto", {"JOB_COMPLETION_INDEX": "4", "REGISTRY_TOOLS_SHARDS": "4"}, "0 to N-1"),
    ("auto", {"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2"}, "counts from 1"),
])
def test_a_bad_shard_is_refused_in_one_line(tmp_path, cache_dir, capsys, monkeypatch, text, env, message):
    for name in ("REGISTRY_TOOLS_SHARD", "REGISTRY_TOOLS_SHARDS", "JOB_COMPLETION_INDEX", "CI_NODE_INDEX",
                 "CI_NODE_TOTAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"version": 1, "images": []}))
    code, out, err = run(capsys, "sync", str(lock), "localhost:5000", f"--shard={text}", "--dry-run")
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A registry of about ten small images under several names, and `source.lock`, eleven entries
    pinning them: two platforms and two tags of one index (one image to sync), the rest one each."""
    require_tools("docker-registry", "skopeo")
    root = tmp_path_factory.mktemp("source")
    reg = LocalRegistry(root / "registry").start()
    try:
        names = [("single-gzip", f"gzip-{i}") for i in range(3)] + [("single-zstd", f"zstd-{i}") for i in range(2)] \
            + [("single-none", "none"), ("docker-types", "docker")]
        for fixture, name in names:
            skopeo_push_layout(IMAGES / fixture, "v1", f"{reg.host}/src/{name}:v1", all_images=False)
        for tag in ("v1", "v2"):
            skopeo_push_layout(IMAGES / "multi", "v1", f"{reg.host}/src/multi:{tag}")
        lines = [f"{reg.host}/src/{name}:v1" for _, name in names]
        lines += [f"{reg.host}/src/multi:v1 linux/amd64", f"{reg.host}/src/multi:v1 linux/arm64",
                  f"{reg.host}/src/multi:v2 linux/amd64", f"{reg.host}/src/multi:v2 linux/arm/v7"]
        (root / "images.txt").write_text("".join(f"{line}\n" for line in lines))
        reg.lock = root / "images.lock.json"
        with open(reg.lock, "wb") as out:
            subprocess.run(rt("prefetch", "--from", str(root / "images.txt"), "--json", cache=root / "cache"),
                           stdout=out, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        yield reg
    finally:
        reg.stop()


def rt(*args: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "registry_tools", *args, "-q", "--cache-dir", str(cache)]


def pull_every_pin(capsys, lock: Path, tmp_path: Path, monkeypatch, source) -> None:
    """Each pin of `lock`, pulled from where it names with its hash and an empty cache; nothing read
    from `source`."""
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "fresh-cache"))
    mark = source.log_offset()
    for i, pin in enumerate(json.loads(lock.read_text())["images"]):
        platform = "/".join([pin["os"], pin["arch"], *([pin["variant"]] if pin.get("variant") else [])])
        code, out, err = run(capsys, "pull", f"{pin['imageName']}@{pin['imageDigest']}", "--hash", pin["hash"],
                             "--final-image-name", pin["finalImageName"], "--final-image-tag",
                             pin["finalImageTag"], "--platform", platform, "-o", str(tmp_path / f"pulled-{i}.tar"))
        assert code == 0 and out.strip() == pin["hash"], err
    assert source.requests_since(mark) == []


def test_four_shards_and_a_full_sync_at_once_into_one_mirror_lose_nothing(source, target, tmp_path, cache_dir,
                                                                         capsys, monkeypatch):
    dest = f"{target.host}/m"
    mark = target.log_offset()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [rt("sync", str(source.lock), dest, "--shard", f"{i}/4", "-o", str(tmp_path / f"shard-{i}.json"),
               cache=tmp_path / f"cache-{i}") for i in range(4)]
    runs.append(rt("sync", str(source.lock), "--to", dest, "-o", str(tmp_path / "full.json"), cache=tmp_path / "c"))
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for argv in runs]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out == b"" and err == b"", err.decode()
    # No request failed for good. Debian's docker-registry (distribution 2.8) truncates a link
    # file before writing it again, so a read racing a write of the same manifest or blob can
    # get HTTP 500 ("invalid checksum digest format"), and a manifest PUT 400 DIGEST_INVALID:
    # each such request was sent again and answered.
    answered = target.statuses_since(mark)
    for i, (method, uri, status) in enumerate(answered):
        if status >= 500 or status == 400:
            assert any((m, u) == (method, uri) and s < 500 for m, u, s in answered[i + 1:]), (method, uri)
    parts = [json.loads((tmp_path / f"shard-{i}.json").read_text()) for i in range(4)]
    assert sorted(p for part in parts for p in part["shard"]["positions"]) == list(range(11))
    assert sum(len(part["images"]) > 0 for part in parts) >= 2  # the work was shared
    code, out, err = run(capsys, "lock", "merge", *(str(tmp_path / f"shard-{i}.json") for i in (2, 0, 3, 1)),
                         "-o", str(tmp_path / "merged.json"))
    assert code == 0 and out == "" and "11 entries from 4 locks" in err
    assert (tmp_path / "merged.json").read_bytes() == (tmp_path / "full.json").read_bytes()
    pull_every_pin(capsys, tmp_path / "merged.json", tmp_path, monkeypatch, source)


def shard_run(capsys, lock: Path, dest: str, tmp_path: Path, count: int) -> list[Path]:
    out = []
    for i in range(count):
        path = tmp_path / f"part-{i}-of-{count}.json"
        code, _, err = run(capsys, "sync", str(lock), dest, "--shard", f"{i}/{count}", "-o", str(path))
        assert code == 0, err
        out.append(path)
    return out


def test_lock_merge_refuses_what_would_not_make_the_unsharded_lock(source, target, tmp_path, cache_dir, capsys):
    lock = source.lock
    dest = f"{target.host}/mirror"
    code, full, err = run(capsys, "sync", str(lock), dest)
    assert code == 0, err
    parts = shard_run(capsys, lock, dest, tmp_path, 3)
    code, merged, err = run(capsys, "lock", "merge", *map(str, parts))
    assert code == 0 and merged == full, err
    code, out, err = run(capsys, "lock", "merge", *map(str, parts), "-o", str(tmp_path / "m.json"), "--json")
    assert code == 0 and (tmp_path / "m.json").read_text() == full, err
    summary = json.loads(out)
    assert summary == {"output": str(tmp_path / "m.json"), "images": 11, "inputs": list(map(str, parts))}
    schema = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
    jsonschema.validate(summary, {**schema, "$ref": "#/$defs/lock-merge"})

    def refused(*paths, message):
        code, out, err = run(capsys, "lock", "merge", *map(str, paths), "-o", str(tmp_path / "refused.json"))
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "refused.json").exists()

    refused(parts[0], parts[2], message="shard 1/3 missing")
    refused(parts[0], parts[1], parts[2], parts[1], message="are both shard 1/3")
    (tmp_path / "four").mkdir()
    four = shard_run(capsys, lock, dest, tmp_path / "four", 4)
    refused(parts[0], parts[1], four[2], message="shards of different syncs")
    doc = json.loads(lock.read_text())
    doc["images"].reverse()
    (tmp_path / "reordered.json").write_text(json.dumps(doc, indent=2))
    (tmp_path / "other").mkdir()
    other = shard_run(capsys, tmp_path / "reordered.json", dest, tmp_path / "other", 3)
    refused(parts[0], other[1], other[2], message="shards of different syncs")  # of another lock
    a, b = [i for i, part in enumerate(parts) if json.loads(part.read_text())["images"]][:2]
    tampered = json.loads(parts[b].read_text())
    tampered["shard"]["positions"][0] = json.loads(parts[a].read_text())["shard"]["positions"][0]
    (tmp_path / "tampered.json").write_text(json.dumps(tampered, indent=2))  # claims an entry of shard a
    refused(*[tmp_path / "tampered.json" if i == b else part for i, part in enumerate(parts)],
            message="conflict: both entry")
    refused(parts[0], parts[1], parts[2], lock, message="merge the shards of one sync")
    for bad in ({"positions": "0"}, {"index": 3}, {"count": True}, {"lock": "sha256:xyz"}):
        broken = json.loads(parts[1].read_text())
        broken["shard"].update(bad)
        (tmp_path / "broken.json").write_text(json.dumps(broken))
        refused(parts[0], tmp_path / "broken.json", parts[2], message="a shard header of the wrong shape")
    # locks without shards: each pin once; the same image and platform pinned otherwise is refused
    code, out, err = run(capsys, "lock", "merge", str(lock), str(lock))
    assert code == 0 and out == lock.read_text(), err
    moved = dict(json.loads(lock.read_text())["images"][3], imageDigest="sha256:" + "1" * 64)
    (tmp_path / "moved.json").write_text(json.dumps({"version": 1, "images": [moved]}, indent=2))
    refused(lock, tmp_path / "moved.json", message="conflict")
    code, out, err = run(capsys, "lock", "merge", *map(str, parts), "--json")
    assert code == 2 and out == "" and "give -o FILE" in err


def on_path(tmp_path: Path, **tools: str) -> dict:
    """The environment with `registry-tools` (this checkout) and `tools` (name: shell script) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scripts = {"registry-tools": f'exec {sys.executable} -m registry_tools "$@"', **tools}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_TOOLS_SHARD", "JOB_COMPLETION"))}
    return dict(env, PATH=f"{bin_dir}:{env['PATH']}", PYTHONPATH=str(ROOT))


# kubectl as examples/kubernetes/collect.sh calls it, answered from the pods' logs in $PODS
KUBECTL = r'''case "$1 $2" in
  "get job") echo "$COMPLETIONS" ;;
  "get pods") echo "pod/mirror-sync-$(echo "$4" | sed 's/.*job-completion-index=//')" ;;
  "logs "*) cat "$PODS/${2#pod/}.log" ;;
  *) echo "kubectl: unexpected $*" >&2; exit 1 ;;
esac'''


def test_the_kubernetes_indexed_job_example_run_locally(source, target, tmp_path, cache_dir, capsys):
    """Each pod of examples/kubernetes/sync-job.yaml, as Kubernetes would start it (its command, its
    env, JOB_COMPLETION_INDEX), all at once; then collect.sh over their logs."""
    import yaml

    lock = source.lock
    dest = f"{target.host}/k8s"
    job = yaml.safe_load((EXAMPLES / "kubernetes" / "sync-job.yaml").read_text())
    assert job["spec"]["completionMode"] == "Indexed"
    count = job["spec"]["completions"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    given = {e["name"]: e["value"] for e in container["env"]}
    assert given["REGISTRY_TOOLS_SHARDS"] == str(count)
    given.update(LOCK=str(lock), MIRROR=dest, REGISTRY_TOOLS_CACHE=str(tmp_path / "pod-cache"))
    del given["REGISTRY_AUTH_FILE"]  # the registry here asks for no credentials
    argv = [re.sub(r"\$\((\w+)\)", lambda m: given[m.group(1)], word) for word in container["command"]]
    pods = tmp_path / "pods"
    pods.mkdir()
    env = on_path(tmp_path, kubectl=KUBECTL)
    procs = []
    for i in range(count):
        log = open(pods / f"mirror-sync-{i}.log", "wb")
        procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.PIPE,
                                       env=dict(env, **given, JOB_COMPLETION_INDEX=str(i))), log))
    for proc, log in procs:
        _, err = proc.communicate(timeout=240)
        log.close()
        assert proc.returncode == 0 and err == b"", err.decode()
    collected = subprocess.run([str(EXAMPLES / "kubernetes" / "collect.sh"), "mirror-sync"], capture_output=True,
                               env=dict(env, PODS=str(pods), COMPLETIONS=str(count)), timeout=120)
    assert collected.returncode == 0, collected.stderr.decode()
    code, full, err = run(capsys, "sync", str(lock), dest)
    assert code == 0 and "up to date" in err
    assert collected.stdout.decode() == full


def test_the_github_actions_matrix_example_run_locally(source, target, tmp_path, cache_dir, capsys):
    """The `run:` of examples/github-actions/mirror.yml's sync step in each job of the matrix (all at
    once, with the job's env as GitHub would evaluate it), then its merge step."""
    import yaml

    lock = source.lock
    dest = f"{target.host}/gha"
    flow = yaml.safe_load((EXAMPLES / "github-actions" / "mirror.yml").read_text())
    sync_job, merge_job = flow["jobs"]["sync"], flow["jobs"]["merge"]
    count = len(sync_job["strategy"]["matrix"]["shard"])
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "images.lock.json").write_bytes(lock.read_bytes())

    def evaluated(env: dict, context: dict) -> dict:
        return {k: re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: str(context[m.group(1)]), str(v))
                for k, v in env.items()}

    def step(job: dict, name: str) -> str:
        return next(s["run"] for s in job["steps"] if s.get("name") == name)

    base = on_path(tmp_path)
    context = {"vars.MIRROR": dest, "vars.REGISTRY_TOOLS_PACKAGE": "unused"}
    procs = []
    for i, shard in enumerate(sync_job["strategy"]["matrix"]["shard"]):
        job_context = {**context, "strategy.job-index": i, "strategy.job-total": count, "matrix.shard": shard}
        env = dict(base, **evaluated(flow["env"], job_context), **evaluated(sync_job["env"], job_context),
                   REGISTRY_TOOLS_CACHE=str(tmp_path / f"job-cache-{i}"))
        procs.append(subprocess.Popen(["bash", "-e", "-c", step(sync_job, "sync a shard")], cwd=work, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
    assert len(list(work.glob("mirror-*.lock.json"))) == count
    merged = subprocess.run(["bash", "-e", "-c", step(merge_job, "merge the mirror locks")], cwd=work,
                            env=dict(base, **evaluated(flow["env"], context)), capture_output=True, timeout=120)
    assert merged.returncode == 0, merged.stderr.decode()
    code, full, err = run(capsys, "sync", str(lock), dest)
    assert code == 0 and "up to date" in err
    assert (work / "mirror.lock.json").read_text() == full


def test_a_manifest_put_answered_digest_invalid_for_its_own_digest_is_sent_again(httpserver, registry, cache_dir,
                                                                                   capsys):
    """What docker-registry answers now and then to writers at once (a blob's link read while
    another writer rewrites it), made to happen every time by a scripted registry: the first
    manifest PUTs are answered 400 DIGEST_INVALID; the PUT is sent again, at most 5 times."""
    from .support.ociregistry import OciRegistry

    oci = OciRegistry(httpserver)
    invalid = {"errors": [{"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"}]}

    def refuse(times: int) -> None:
        for _ in range(times):
            httpserver.expect_oneshot_request(re.compile(r"^/v2/.+/manifests/.+$"), method="PUT") \
                .respond_with_json(invalid, status=400)

    refuse(2)
    code, _, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{oci.host}/a/img:1")
    assert code == 0, err
    assert ("a/img", "1") in oci.manifests
    refuse(5)
    code, _, err = run(capsys, "copy", f"{registry.host}/test/single-none:v1", f"{oci.host}/a/other:1")
    assert code == 1 and "DIGEST_INVALID" in err and len(err.strip().splitlines()) == 1
    assert ("a/other", "1") not in oci.manifests
