"""Rough edges found by trying the commands as a new user would: each says what went wrong in one
line that names the user's own word (an option, a value, a file, a key), with the exit code of its
kind, and no command writes to a registry it was not named."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from .helpers import IMAGES, ROOT, run


@pytest.mark.parametrize("argv, line", [
    (["pull", "a.example/x@sha256:" + "a" * 64, "--format", "zip", "-o", "x.tar"],
     "registry-tools pull: error: --format 'zip' is not one of: docker-archive, oci-archive, oci"),
    (["pull", "a.example/x@sha256:" + "a" * 64, "--format", "ocii", "-o", "x.tar"],
     "registry-tools pull: error: --format 'ocii' is not one of: docker-archive, oci-archive, oci; "
     "did you mean 'oci'?"),
    (["completion", "tcsh"], "registry-tools completion: error: shell 'tcsh' is not one of: bash, zsh, fish"),
    (["cache", "empty"], "registry-tools cache: error: unknown action 'empty'; the actions are: info, prune, clear"),
    (["index", "creat", "a.example/x", "a.example/y@sha256:" + "a" * 64],
     "registry-tools index: error: unknown action 'creat'; did you mean 'create'?"),
])
def test_a_wrong_value_is_named_as_the_value_it_is_not_a_command(argv, line, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.strip() == line


@pytest.mark.parametrize("argv, line", [
    (["--versio"], "registry-tools: error: unknown option --versio; did you mean --version?"),
    (["pull", "--outptu", "x.tar", "a.example/x@sha256:" + "a" * 64],
     "registry-tools pull: error: unknown option --outptu; did you mean --output?"),
    (["copy", "--platfrom", "linux/amd64", "a.example/x:1", "b.example/x:1"],
     "registry-tools copy: error: unknown option --platfrom; did you mean --platform?"),
    (["tags", "--zzz", "a.example/x"],
     "registry-tools tags: error: unknown option --zzz; `registry-tools tags --help` lists them"),
])
def test_an_unknown_option_is_named_with_the_nearest_before_anything_it_left_missing(argv, line, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.strip() == line


def test_login_with_nothing_on_stdin_says_stdin_held_no_password(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "login", "localhost:5000", "-u", "ci", "--password-stdin")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "standard input held no password" in err and "give the password with" not in err


def test_prefetch_from_a_file_that_does_not_exist_is_bad_input(tmp_path, capsys):
    code, out, err = run(capsys, "prefetch", "--from", str(tmp_path / "missing.txt"))
    assert code == 2 and out == "" and err == f"registry-tools: --from {tmp_path / 'missing.txt'} does not exist\n"
    code, _, err = run(capsys, "prefetch", "--from", str(tmp_path))
    assert code == 2 and err == f"registry-tools: --from {tmp_path} is not a file\n"


def test_an_option_of_cache_prune_is_refused_by_the_other_actions(cache_dir, capsys):
    from registry_tools.model.digest import Digest
    from registry_tools.store.cache import BlobCache

    BlobCache(str(cache_dir)).put_bytes(Digest.of_bytes(b"kept"), b"kept")
    for argv in (["clear", "--older-than", "3"], ["info", "--max-size", "1G"]):
        code, out, err = run(capsys, "cache", *argv)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert f"{argv[1]} is an option of `cache prune`" in err
    code, out, _ = run(capsys, "cache", "info", "--json")
    assert code == 0 and json.loads(out)["blobs"] == 1  # nothing was cleared


def test_log_lines_speak_as_the_program_and_name_their_part_with_verbose(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"name": "vm", "diskSize": 1024}))  # a warning: no VM here
    env = dict(os.environ, PYTHONPATH=str(ROOT), REGISTRY_TOOLS_CACHE=str(tmp_path / "cache"))
    for extra, head in (([], "registry-tools: "), (["-v"], "registry-tools (build): ")):
        res = subprocess.run([sys.executable, "-m", "registry_tools", "build", str(tmp_path / "spec.json"), "-o",
                              str(tmp_path / f"out{len(extra)}.tar"), *extra], capture_output=True, text=True,
                             env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        warning = [line for line in res.stderr.splitlines() if "diskSize" in line]
        assert warning == [f"{head}build spec: diskSize configures nixpkgs' build VM; no VM is used here, so it "
                           "changes nothing"], res.stderr
        assert "registry_tools" not in res.stderr


@pytest.mark.parametrize("spec, line", [
    ({"name": "x", "fromImagee": "base.tar"}, "build spec: fromImagee: unknown key; did you mean 'fromImage'?"),
    ({"name": "x", "config": {"Entrypont": ["/app"]}},
     "build spec: config.Entrypont: unknown config key; did you mean 'Entrypoint'?"),
])
def test_a_mistyped_spec_key_names_the_key_it_is_near(spec, line, tmp_path, capsys):
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "-o", str(tmp_path / "x.tar"))
    assert code == 2 and err == f"registry-tools: {line}\n"
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x", "zzz": 1}))  # near nothing: what is known
    code, _, err = run(capsys, "build", str(tmp_path / "spec.json"), "-o", str(tmp_path / "x.tar"))
    assert code == 2 and "zzz: unknown key (known: annotations, " in err


def test_sign_asks_no_passphrase_of_a_key_without_one_and_looks_for_the_key_first(registry, target, facts, tmp_path,
                                                                                 monkeypatch, cache_dir, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal to ask on
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    assert run(capsys, "generate-key", str(tmp_path / "plain"), "--pkcs8")[0] == 0  # PKCS#8, not encrypted
    monkeypatch.delenv("COSIGN_PASSWORD")
    ref = f"{target.host}/signed/app:1"
    assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", ref)[0] == 0
    code, out, err = run(capsys, "sign", ref, "--key", str(tmp_path / "plain.key"))
    assert code == 0, err
    assert run(capsys, "verify", ref, "--key", str(tmp_path / "plain.pub"))[0] == 0
    code, _, err = run(capsys, "sign", ref, "--key", str(tmp_path / "missing.key"))
    assert code == 2 and err == f"registry-tools: key {tmp_path / 'missing.key'} is not a file\n"


def test_index_create_takes_a_tag_at_its_digest_and_says_so(registry, target, facts, cache_dir, capsys):
    single = f"{registry.host}/test/single-gzip:v1"
    code, out, err = run(capsys, "index", "create", f"{target.host}/made/app:1", single)
    assert code == 0, err
    assert err == (f"{target.host}/made/app:1: an index of 1 entry (linux/amd64); 1 image copied in; {single} taken "
                   f"as {facts['single-gzip']['manifest']} (an index names its images by digest: it will not follow "
                   "the tag)\n")
    # a tag naming an index: an entry that is an index itself, named as such
    multi = f"{registry.host}/test/multi:v1"
    code, out, err = run(capsys, "index", "create", f"{target.host}/made/app:2", multi)
    assert code == 0, err
    digest = facts["multi"]["index"]
    assert err.startswith(f"{target.host}/made/app:2: an index of 1 entry (the index {digest}); 1 image copied "
                          f"in; {multi} taken as {digest} ")
    # by digest: nothing to say about tags
    by_digest = f"{registry.host}/test/multi@{facts['multi']['platforms']['linux/arm64/v8']}"
    code, out, err = run(capsys, "index", "add", f"{target.host}/made/app:1", by_digest)
    assert code == 0 and err == (f"{target.host}/made/app:1: an index of 2 entries (linux/amd64, linux/arm64/v8); "
                                 "1 image copied in\n")


@pytest.mark.parametrize("action", ["create", "add", "remove"])
def test_each_index_action_help_ends_with_examples_of_it(action, capsys):
    code, out, _ = run(capsys, "index", action, "--help")
    lines = out.rstrip().splitlines()
    tail = lines[lines.index("examples:") + 1:]
    assert code == 0 and 2 <= len(tail) <= 3
    assert all(line.startswith(f"  registry-tools index {action} ") for line in tail)


NO_REGISTRY = "is not a reference naming its registry"


@pytest.mark.parametrize("argv", [
    ["push", str(IMAGES / "single-gzip"), "x"],
    ["copy", "{registry}/test/single-gzip:v1", "x"],
    ["mutate", "{registry}/test/single-gzip:v1", "x", "--env", "A=1"],
    ["index", "create", "x", "{registry}/test/single-gzip:v1"],
    ["tag", "x", "v2"],
    ["tag", "x:1", "v2"],
    ["delete", "x@sha256:" + "a" * 64],
    ["attach", "x:1", "--artifact-type", "application/spdx+json", str(ROOT / "README.md")],
    ["sign", "library/x:1", "--key", "release.key"],
])
def test_every_command_that_writes_to_a_registry_refuses_one_not_named(argv, registry, tmp_path, cache_dir,
                                                                       monkeypatch, capsys):
    """`x` is Docker Hub's only when written docker://x: a command that writes never picks it for itself."""
    monkeypatch.setenv("COSIGN_PASSWORD", "")
    monkeypatch.chdir(tmp_path)  # `x` is no path here
    code, out, err = run(capsys, *[a.format(registry=registry.host) for a in argv])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert NO_REGISTRY in err or "neither a path nor a reference naming its registry" in err, err
    word = next(a for a in argv[1:] if a.startswith(("x", "library/x")))
    assert f"docker://{word}" in err


def test_build_push_refuses_a_destination_not_naming_its_registry(tmp_path, cache_dir, capsys):
    (tmp_path / "spec.json").write_text(json.dumps({"name": "app"}))
    code, out, err = run(capsys, "build", str(tmp_path / "spec.json"), "--push", "x")
    assert code == 2 and out == "" and "docker://x for Docker Hub" in err
