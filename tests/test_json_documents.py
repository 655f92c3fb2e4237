"""Every `--json` document: each command that takes --json has a definition in
schemas/cli-output.schema.json, every definition is complete (each key typed, the required ones
listed, no other key allowed in a document of ours), and every command's document, run for
real, is one of its definition."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema
import pytest

from registry_tools.cli.parser import build_parser

from .helpers import ROOT, run
from .support.buildinputs import make_store, spec_file

SCHEMA = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
DEFS: dict[str, Any] = SCHEMA["$defs"]
# documents a command prints in another mode than its own document's: prefetch --from, --check, --update
MODES = {"lock": "prefetch", "prefetch-check": "prefetch", "prefetch-update": "prefetch"}
NOT_OURS = {"referrers.referrers[]"}  # a registry's descriptors, every field kept as it listed them
NEEDS_NIX = {"build-shell"}  # its document is build's; tests/test_build_shell.py checks it with a Nix store


def commands_with_json() -> dict[str, str]:
    """Each command (and action) that takes --json, and the definition of its document."""
    parser = build_parser()
    out = {}
    for name, p in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        actions = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        for action, q in (actions[0].choices.items() if actions else [(None, p)]):
            if "--json" in q._option_string_actions:
                own = f"{name}-{action}"
                out[f"{name} {action}" if action else name] = own if own in DEFS else name
    return out


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"].rsplit("/", 1)[1]
        for v in node.values():
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_every_command_with_json_has_a_definition_and_every_definition_a_use():
    documents = commands_with_json()
    assert "copy" in documents and documents["lock merge"] == "lock-merge" and documents["index remove"] == "index"
    missing = {cmd: kind for cmd, kind in documents.items() if kind not in DEFS}
    assert not missing, f"no definition for {missing}"
    used = set(documents.values()) | set(MODES)
    parts = {r for kind in used for r in refs(DEFS[kind])}
    while more := {r for p in parts for r in refs(DEFS[p])} - parts:
        parts |= more
    assert set(DEFS) == used | parts, f"defined, never printed: {set(DEFS) - used - parts}"


def _untyped(schema: dict) -> bool:
    return not any(k in schema for k in ("type", "$ref", "anyOf", "oneOf", "const", "enum"))


def incomplete(node: Any, where: str) -> Iterator[str]:
    """Each object of a definition that does not list its keys' types, which keys it requires and
    that it allows no other (a map: the type of its values)."""
    if isinstance(node, list):
        for v in node:
            yield from incomplete(v, where)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        extra = node.get("additionalProperties")
        if "properties" in node:
            if "required" not in node:
                yield f"{where}: no required"
            if extra is not False and where not in NOT_OURS:
                yield f"{where}: other keys allowed"
            yield from (f"{where}.{k}: untyped" for k, v in node["properties"].items() if _untyped(v))
        elif not isinstance(extra, dict) or _untyped(extra):
            yield f"{where}: neither its keys nor its values typed"
    if node.get("type") == "array" and (not isinstance(node.get("items"), dict) or _untyped(node["items"])):
        yield f"{where}: items untyped"
    for key, value in node.items():
        if key == "properties":
            for k, v in value.items():
                yield from incomplete(v, f"{where}.{k}")
        elif key == "items":
            yield from incomplete(value, f"{where}[]")
        elif key in ("anyOf", "oneOf", "allOf", "additionalProperties"):  # not if/then/else: refinements
            yield from incomplete(value, where)


def test_every_definition_is_complete():
    found = [problem for kind, schema in DEFS.items() for problem in incomplete(schema, kind)]
    assert not found, "\n".join(found)
    assert list(incomplete({"type": "object"}, "inspect"))  # the check itself: what inspect had is not


@pytest.fixture
def documents(capsys) -> Callable[..., Any]:
    """Runs a command with --json, checks it printed one document of `kind`, and notes the kind."""
    seen: set[str] = set()

    def doc(kind: str, *argv: str, code: int = 0) -> Any:
        got, out, err = run(capsys, *argv, "--json")
        assert got == code, (argv, err)
        value = json.loads(out)  # one document, nothing else on stdout
        jsonschema.validate(value, {**SCHEMA, "$ref": f"#/$defs/{kind}"})
        seen.add(kind)
        return value
    doc.seen = seen  # type: ignore[attr-defined]
    return doc


def _pins_and_locks(doc, registry, facts, tmp_path: Path) -> None:
    src = f"{registry.host}/test/multi"
    pin = doc("prefetch", "prefetch", f"{src}:v1", "--platform", "linux/arm64")
    (tmp_path / "pin.json").write_text(json.dumps(pin))
    doc("prefetch", "prefetch", f"{src}:v1", "--platform", "linux/arm64", "--layers")
    doc("pull", "pull", f"{src}@{facts['multi']['index']}", "-o", str(tmp_path / "a.tar"), "--platform", "linux/arm64")
    doc("assemble", "assemble", str(tmp_path / "pin.json"), "-o", str(tmp_path / "b.tar"))
    single = f"{registry.host}/test/single-gzip"
    doc("fetch-blob", "fetch-blob", f"{single}@{facts['single-gzip']['layers'][0]}", "-o", str(tmp_path / "blob"))
    doc("export", "export", f"{single}@{facts['single-gzip']['manifest']}", "-o", str(tmp_path / "root.tar"))
    (tmp_path / "list.txt").write_text(f"{src}:v1 linux/amd64\n")
    lock = doc("lock", "prefetch", "--from", str(tmp_path / "list.txt"))
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    assert doc("prefetch-check", "prefetch", "--from", str(tmp_path / "list.txt"), "--check",
               str(tmp_path / "lock.json"))["current"]
    assert doc("prefetch-update", "prefetch", "--from", str(tmp_path / "list.txt"), "--update",
               str(tmp_path / "lock.json"))["updated"] == []


def _writes(doc, registry, target, facts, tmp_path: Path) -> None:
    src = f"{registry.host}/test/multi:v1"
    make_store(tmp_path)
    (tmp_path / "app" / "bin").mkdir(parents=True)
    (tmp_path / "app" / "bin" / "tool").write_bytes(b"tool" * 1000)
    spec = spec_file(tmp_path, contents=[], config={"Cmd": ["/bin/app"]})
    doc("build", "build", str(spec), "--oci", str(tmp_path / "layout"))
    pushed = doc("push", "push", str(tmp_path / "layout"), f"{target.host}/built/app:1")
    doc("copy", "copy", src, f"{target.host}/c/multi:v1")
    assert doc("copy", "copy", src, f"{target.host}/c/multi:v1")["upToDate"]
    doc("sync", "sync", str(tmp_path / "lock.json"), f"{target.host}/m", "--dry-run")
    doc("sync", "sync", str(tmp_path / "lock.json"), f"{target.host}/m", "-o", str(tmp_path / "mirror.json"))
    doc("lock-merge", "lock", "merge", str(tmp_path / "mirror.json"), "-o", str(tmp_path / "merged.json"))
    amd64 = facts["multi"]["platforms"]["linux/amd64"]
    doc("index", "index", "create", f"{target.host}/i/app:1", f"{registry.host}/test/multi@{amd64}")
    arm = facts["multi"]["platforms"]["linux/arm/v7"]
    doc("index", "index", "add", f"{target.host}/i/app:1", f"{registry.host}/test/multi@{arm}")
    doc("index", "index", "remove", f"{target.host}/i/app:1", "--platform", "linux/arm/v7")
    doc("inspect", "inspect", src)
    doc("inspect", "inspect", src, "--platform", "linux/arm64")
    doc("digest", "digest", src)
    doc("tags", "tags", f"{target.host}/c/multi")
    doc("tag", "tag", f"{target.host}/c/multi@{facts['multi']['index']}", "v2")
    doc("delete", "delete", f"{target.host}/built/app@{pushed['digest']}")
    doc("diff", "diff", f"{registry.host}/test/single-gzip:v1", f"{target.host}/m/test/multi:v1", "--platform",
        "linux/amd64", "--files=false", code=1)


def _surgery_and_keys(doc, registry, target, tmp_path: Path, monkeypatch) -> None:
    single = f"{registry.host}/test/single-gzip:v1"
    doc("mutate", "mutate", single, f"oci:{tmp_path / 'mutated'}:v1", "--env", "A=1")
    (tmp_path / "overlay" / "etc").mkdir(parents=True)
    (tmp_path / "overlay" / "etc" / "motd").write_text("appended\n")
    doc("append", "append", single, f"oci:{tmp_path / 'appended'}:v1", "--layer", str(tmp_path / "overlay"))
    doc("flatten", "flatten", single, f"oci:{tmp_path / 'flat'}:v1")
    base = doc("copy", "copy", single, f"{target.host}/base:v1")["digest"]
    spec = tmp_path / "on-base.json"
    spec.write_text(json.dumps({"name": "example/app", "tag": "1", "architecture": "amd64",
                                "fromImage": f"{target.host}/base:v1@{base}", "contents": [str(tmp_path / "overlay")]}))
    doc("push", "build", str(spec), "--push", f"{target.host}/app:v1")
    assert not doc("check-base", "check-base", f"{target.host}/app:v1")["moved"]
    doc("rebase", "rebase", f"{target.host}/app:v1", f"oci:{tmp_path / 'rebased'}:v1", "--new-base", single)
    doc("attach", "attach", f"{target.host}/app:v1", "--artifact-type", "application/vnd.example.note",
        str(tmp_path / "overlay" / "etc" / "motd"))
    doc("referrers", "referrers", f"{target.host}/app:v1")
    monkeypatch.setenv("COSIGN_PASSWORD", "correct horse")
    keys = doc("generate-key", "generate-key", str(tmp_path / "release"))
    doc("sign", "sign", f"{target.host}/app:v1", "--key", keys["privateKey"])
    doc("verify", "verify", f"{target.host}/app:v1", "--key", keys["publicKey"])


def _machine(doc, registry, tmp_path: Path) -> None:
    doc("cache", "cache", "info")
    doc("cache", "cache", "prune", "--max-size", "0")
    doc("cache", "cache", "clear")
    import io
    import sys

    auth = tmp_path / "auth.json"
    sys.stdin, saved = io.StringIO("secret\n"), sys.stdin
    try:
        doc("login", "login", registry.host, "-u", "ci", "--password-stdin", "--authfile", str(auth))
    finally:
        sys.stdin = saved
    doc("logout", "logout", registry.host, "--authfile", str(auth))


def test_every_command_prints_a_document_of_its_definition(documents, registry, target, facts, tmp_path, cache_dir,
                                                           monkeypatch):
    _pins_and_locks(documents, registry, facts, tmp_path)
    _writes(documents, registry, target, facts, tmp_path)
    _surgery_and_keys(documents, registry, target, tmp_path, monkeypatch)
    _machine(documents, registry, tmp_path)
    kinds = set(commands_with_json().values()) | set(MODES)
    assert kinds - NEEDS_NIX == documents.seen, f"not run: {kinds - NEEDS_NIX - documents.seen}"


def test_inspect_keys_are_camel_case(registry, cache_dir, capsys):
    code, out, err = run(capsys, "inspect", f"{registry.host}/test/multi:v1", "--platform", "linux/arm64")
    info = json.loads(out)
    assert set(info) == {"name", "tag", "digest", "mediaType", "platforms", "manifestDigest", "platform", "created",
                         "layers", "size", "env", "entrypoint", "cmd", "labels"}
    assert info["platform"] == "linux/arm64/v8" and info["cmd"] == ["/bin/sh"] and len(info["layers"]) == 2


def test_an_up_to_date_copy_names_the_platforms_it_holds(registry, target, cache_dir, capsys):
    src = f"{registry.host}/test/multi:v1"
    fresh = json.loads(run(capsys, "copy", src, f"{target.host}/c/multi:v1", "--json")[1])
    mark = target.log_offset()
    again = json.loads(run(capsys, "copy", src, f"{target.host}/c/multi:v1", "--json")[1])
    assert not fresh["upToDate"] and again["upToDate"] and again["digest"] == fresh["digest"]
    assert again["platforms"] == fresh["platforms"] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7",
                                                        "linux/arm/v6"]
    assert [m for m, u in target.requests_since(mark) if u != "/v2/"] == ["HEAD"]  # the destination: one HEAD


def test_index_remove_lists_what_it_took_out_under_removed(registry, target, facts, cache_dir, capsys):
    assert run(capsys, "copy", f"{registry.host}/test/multi:v1", f"{target.host}/c/multi:v1")[0] == 0
    code, out, err = run(capsys, "index", "remove", f"{target.host}/c/multi:v1", "--platform", "linux/arm/v6",
                         "--json")
    assert code == 0, err
    removed = json.loads(out)
    jsonschema.validate(removed, {**SCHEMA, "$ref": "#/$defs/index"})
    assert removed["removed"] == ["linux/arm/v6"] and "replaced" not in removed
    assert sorted(removed["platforms"]) == ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]
    arm = facts["multi"]["platforms"]["linux/arm/v6"]
    code, out, err = run(capsys, "index", "add", f"{target.host}/c/multi:v1", f"{target.host}/c/multi@{arm}",
                         "--json")
    assert code == 0 and json.loads(out)["replaced"] == [], err


def test_prefetch_check_json_lists_each_drift(registry, target, facts, tmp_path, cache_dir, capsys):
    """The exit status as before (1: a tag moved); the document lists the drift, or none."""
    assert run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{target.host}/d/img:v1")[0] == 0
    listing = tmp_path / "list.txt"
    listing.write_text(f"# pinned\n{target.host}/d/img:v1 linux/amd64\n")
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--json", "--layers")
    assert code == 0, err
    lock = tmp_path / "lock.json"
    lock.write_text(out)
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--check", str(lock), "--json")
    assert (code, json.loads(out)) == (0, {"lock": str(lock), "from": str(listing), "current": True, "drifts": []})
    assert err == ""
    assert run(capsys, "copy", f"{registry.host}/test/single-zstd:v1", f"{target.host}/d/img:v1")[0] == 0
    code, out, err = run(capsys, "prefetch", "--from", str(listing), "--check", str(lock), "--json")
    doc = json.loads(out)
    jsonschema.validate(doc, {**SCHEMA, "$ref": "#/$defs/prefetch-check"})
    assert code == 1 and not doc["current"]
    assert doc["drifts"] == [{"line": 2, "reference": f"{target.host}/d/img:v1", "platform": "linux/amd64",
                              "locked": facts["single-gzip"]["manifest"], "now": facts["single-zstd"]["manifest"],
                              "error": None}]

