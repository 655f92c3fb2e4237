"""Command-line conventions: --json everywhere (checked against the schema in the repository),
shell completion from the parser, help that teaches, -q and -v."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from registry_tools import cli
from registry_tools.cli.help import EXAMPLES, GROUPS

from .helpers import ROOT, run
from .support.buildinputs import make_store, spec_file

SCHEMA = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())


def check(kind: str, doc) -> None:
    jsonschema.validate(doc, {**SCHEMA, "$ref": f"#/$defs/{kind}"})


def json_of(capsys, kind: str, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    doc = json.loads(out)  # one document, nothing else on stdout
    check(kind, doc)
    return doc


def test_every_command_prints_one_json_document_of_its_schema(registry, target, facts, tmp_path, cache_dir, capsys):
    src = f"{registry.host}/test/multi"
    digest = facts["multi"]["index"]
    pin = json_of(capsys, "prefetch", "prefetch", src, "v1", "--platform", "linux/arm64")
    doc = json_of(capsys, "pull", "pull", f"{src}@{digest}", "-o", str(tmp_path / "a.tar"), "--platform",
                  "linux/arm64", "--final-image-tag", "v1")
    assert doc["hash"] == pin["hash"] and doc["manifestDigest"] == pin["manifestDigest"]  # the same keys mean the same
    (tmp_path / "list.txt").write_text(f"{src}:v1 linux/amd64\n")
    lock = json_of(capsys, "lock", "prefetch", "--from", str(tmp_path / "list.txt"))
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    make_store(tmp_path)
    (tmp_path / "app" / "bin").mkdir(parents=True)
    (tmp_path / "app" / "bin" / "tool").write_bytes(b"tool" * 1000)
    spec = spec_file(tmp_path, contents=[], config={"Cmd": ["/bin/app"]})
    built = json_of(capsys, "build", "build", str(spec), "--oci", str(tmp_path / "layout"))
    pushed = json_of(capsys, "push", "push", str(tmp_path / "layout"), f"{target.host}/built/app:1")
    assert pushed["digest"] == built["manifestDigest"]
    assert json_of(capsys, "push", "build", str(spec), "--push", f"{target.host}/built/app:2")["digest"] == \
        pushed["digest"]
    copied = json_of(capsys, "copy", "copy", f"{src}:v1", f"{target.host}/c/multi:v1")
    assert copied["digest"] == digest
    assert json_of(capsys, "sync", "sync", str(tmp_path / "lock.json"), "--to", f"{target.host}/m")["images"]
    made = json_of(capsys, "index", "index", "create", f"{target.host}/i/app:1",
                   f"{src}@{facts['multi']['platforms']['linux/amd64']}")
    assert made["platforms"] == ["linux/amd64"] and made["copied"] == 1
    whole = json_of(capsys, "pull", "pull", f"{src}@{digest}", "--all", "--format", "oci-archive",
                    "-o", str(tmp_path / "all.tar"))
    assert whole["platform"] == "all" and whole["manifestDigest"] == digest
    json_of(capsys, "inspect", "inspect", f"{src}:v1")
    assert json_of(capsys, "digest", "digest", f"{src}:v1")["digest"] == digest
    assert "v1" in json_of(capsys, "tags", "tags", f"{target.host}/c/multi")
    assert json_of(capsys, "tag", "tag", f"{target.host}/c/multi@{digest}", "v2")["changed"]
    assert json_of(capsys, "delete", "delete", f"{target.host}/built/app@{pushed['digest']}")["deleted"] == \
        pushed["digest"]
    info = json_of(capsys, "cache", "cache", "info")
    assert info["blobs"] > 0 and info["cacheSize"] > 0
    assert json_of(capsys, "cache", "cache", "prune", "--max-size", "0")["blobs"] == 0
    json_of(capsys, "cache", "cache", "clear")
    auth = tmp_path / "auth.json"
    sys.stdin, saved = __import__("io").StringIO("secret\n"), sys.stdin
    try:
        assert json_of(capsys, "login", "login", registry.host, "-u", "ci", "--password-stdin", "--authfile",
                       str(auth))["authFile"] == str(auth)
    finally:
        sys.stdin = saved
    assert json_of(capsys, "logout", "logout", registry.host, "--authfile", str(auth))["removed"]


@pytest.mark.parametrize("argv", [["pull", "127.0.0.1:1/x/y@sha256:" + "a" * 64, "-o", "x.tar"],
                                  ["digest", "Bad//Name"], ["copy", "a/b:1", "nowhere"]])
def test_errors_with_json_stay_one_line_on_stderr(argv, cache_dir, capsys):
    plain = run(capsys, *argv)
    code, out, err = run(capsys, *argv, "--json")
    assert code == plain[0] != 0 and out == "" and len(err.strip().splitlines()) == 1


def _on_path(tmp_path: Path) -> dict:
    """`registry-tools` on PATH running this checkout (as an installed console script does)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "registry-tools"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} -m registry_tools \"$@\"\n")
    script.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))


COMPLETE = r'''
source <(registry-tools completion bash)
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_python_argcomplete registry-tools "${COMP_WORDS[$COMP_CWORD]}" "${COMP_WORDS[$COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
'''


@pytest.mark.parametrize("line,expected", [
    ("registry-tools pu", {"pull", "push"}),
    ("registry-tools co", {"copy", "completion"}),
    ("registry-tools pull --fo", {"--format"}),
    ("registry-tools pull --format ", {"docker-archive", "oci-archive", "oci"}),
    ("registry-tools copy --platform linux/arm", {"linux/arm64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"}),
    ("registry-tools sync lock.json --dr", {"--dry-run"}),
    ("registry-tools pull --platform al", {"all"}),  # pull and prefetch take the whole index so
    ("registry-tools prefetch alpine --platform al", {"all"}),
    ("registry-tools inspect --platform al", set()),
])
def test_bash_completes_commands_flags_and_values(tmp_path, line, expected):
    res = subprocess.run(["bash", "-c", COMPLETE, "complete", line], capture_output=True, text=True,
                         env=_on_path(tmp_path), timeout=60)
    assert res.returncode == 0, res.stderr
    assert {c.strip() for c in res.stdout.split()} == expected


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_for_each_shell(shell, capsys):
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0 and "registry-tools" in out and "_ARGCOMPLETE" in out


def test_every_command_help_ends_with_examples_and_the_program_help_groups_them(capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {n for names in GROUPS.values() for n in names} == set(EXAMPLES)
    for name in commands:
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out.rstrip().splitlines()
        tail = text[text.index("examples:") + 1:]
        assert 2 <= len(tail) <= 3 and all(line.startswith("  registry-tools ") or line.startswith("  printf")
                                           for line in tail), name
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    for group in ("read:", "write:", "registry housekeeping:", "cache:"):
        assert f"  {group}\n" in text
    assert text.index("  read:") < text.index("    pull ") < text.index("  write:") < text.index("    copy ")


def test_a_mistyped_command_suggests_the_nearest(capsys):
    code, _, err = run(capsys, "prefech", "x")
    assert code == 2 and err.strip() == "registry-tools: error: unknown command 'prefech'; did you mean 'prefetch'?"


def test_quiet_prints_only_the_result_and_verbose_a_line_per_request_never_secrets(registry, facts, tmp_path,
                                                                                 cache_dir, capsys):
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    code, out, err = run(capsys, "pull", ref, "-o", str(tmp_path / "q.tar"), "-q")
    assert code == 0 and err == "" and out.startswith("sha256-")
    code, out2, err = run(capsys, "pull", ref, "-o", str(tmp_path / "d.tar"))
    assert out2 == out and len(err.strip().splitlines()) == 1 and err.startswith("wrote ")  # no progress off a tty
    res = subprocess.run([sys.executable, "-m", "registry_tools", "pull", ref, "-o", str(tmp_path / "v.tar"), "-v",
                          "--creds", "ci:hunter2-secret", "--cache-dir", str(tmp_path / "cold")],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    err = res.stderr
    assert res.returncode == 0 and res.stdout == out
    assert "hunter2" not in err and "Authorization" not in err
    requests = [line for line in err.splitlines() if " -> " in line and "/v2/" in line]
    assert len(requests) >= 4  # the manifest, the config and two layers at least
    assert sum("fetched sha256:" in line for line in err.splitlines()) == 3  # a line per blob


def test_quiet_leaves_stderr_empty_for_every_registry_command(registry, target, facts, tmp_path, cache_dir, capsys):
    src = f"{registry.host}/test/single-gzip:v1"
    digest = facts["single-gzip"]["manifest"]
    for argv in (["copy", src, f"{target.host}/q/img:v1"], ["tag", f"{target.host}/q/img@{digest}", "v2"],
                 ["tags", f"{target.host}/q/img"], ["digest", src], ["prefetch", src],
                 ["push", str(ROOT / "fixtures" / "images" / "single-gzip"), f"{target.host}/q/pushed:v1"],
                 ["delete", f"{target.host}/q/img@{digest}"], ["cache", "info"]):
        code, out, err = run(capsys, *argv, "-q")
        assert code == 0 and err == "", (argv, err)
        assert out or argv[0] == "delete", argv


def test_a_commands_own_parser_reads_help_and_errors_as_the_whole_one(capsys):
    """main builds only the parser of the command named (start-up time); nothing a user sees differs."""
    import contextlib

    from registry_tools.cli.parser import TABLE, build_parser

    def seen(parser, words):
        with contextlib.suppress(SystemExit):
            parser.parse_args(words)
        out = capsys.readouterr()
        return out.out, out.err

    for name in TABLE:
        for words in ([name, "--help"], [name], [name, "--no-such-option"]):
            assert seen(build_parser(name), words) == seen(build_parser(), words), words
