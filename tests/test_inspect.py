"""inspect and digest against the real registry."""
from __future__ import annotations

import hashlib
import json

from registry_tools import cli


def run(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_digest_of_a_tag_and_of_a_platform(registry, facts, cache_dir, capsys):
    code, out, _ = run(capsys, "digest", f"{registry.host}/test/multi:v1", "-q")
    assert code == 0 and out.strip() == facts["multi"]["index"]
    code, out, _ = run(capsys, "digest", f"{registry.host}/test/multi:v1", "--platform", "linux/arm/v6", "-q")
    assert out.strip() == facts["multi"]["platforms"]["linux/arm/v6"]


def test_inspect_index_and_platform(registry, facts, cache_dir, capsys):
    code, out, _ = run(capsys, "inspect", f"{registry.host}/test/multi:v1", "-q")
    info = json.loads(out)
    assert info["digest"] == facts["multi"]["index"]
    assert info["platforms"] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6"]
    code, out, _ = run(capsys, "inspect", f"{registry.host}/test/multi:v1", "--platform", "linux/arm64", "-q")
    info = json.loads(out)
    assert info["manifestDigest"] == facts["multi"]["platforms"]["linux/arm64/v8"]
    assert info["platform"] == "linux/arm64/v8" and len(info["layers"]) == 2 and info["cmd"] == ["/bin/sh"]


def test_inspect_raw_is_the_exact_bytes(registry, facts, cache_dir, capsysbinary):
    assert cli.main(["inspect", "--raw", f"{registry.host}/test/multi:v1", "-q"]) == 0
    raw = capsysbinary.readouterr().out
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == facts["multi"]["index"]
    assert cli.main(["inspect", "--raw", f"{registry.host}/test/multi:v1", "--platform", "linux/amd64", "-q"]) == 0
    raw = capsysbinary.readouterr().out
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == facts["multi"]["platforms"]["linux/amd64"]


def test_inspect_unknown_tag(registry, cache_dir, capsys):
    code, out, err = run(capsys, "inspect", f"{registry.host}/test/multi:nope", "-q")
    assert code == 1 and out == "" and "no tag 'nope'" in err
