"""The summary line on stderr: every command says what it did (digest, inspect, tags, tag and
prefetch too), in English (`1 layer`, `2 entries`) and sizes a person reads (`512 B`,
`3.3 kB`, never `0.0 MB`); the result on stdout stays what scripts read, and -q or --json
leave stderr empty."""
from __future__ import annotations

import json
import re

import pytest

from registry_tools.words import count, size

from .helpers import IMAGES, run

WRONG = re.compile(r"\(s\)|\b0\.0 [kMG]B\b|\b1 (layers|entries|blobs|images|tags|platforms|locks|manifests|files)\b")


@pytest.mark.parametrize("n,noun,said", [(0, "layer", "0 layers"), (1, "layer", "1 layer"), (2, "entry", "2 entries"),
                                         (1, "entry", "1 entry"), (3, "key", "3 keys")])
def test_count(n, noun, said):
    assert count(n, noun) == said


@pytest.mark.parametrize("n,said", [(0, "0 B"), (512, "512 B"), (999, "999 B"), (1000, "1.0 kB"), (1234, "1.2 kB"),
                                    (999_950, "1.0 MB"), (12_345_678, "12.3 MB"), (5e9, "5.0 GB"), (3e12, "3.0 TB")])
def test_size(n, said):
    assert size(n) == said


def said(capsys, *argv: str, json_too: bool = True) -> tuple[str, str]:
    """stdout and the one summary line; -q (and --json) leave stderr empty, -q with the same stdout."""
    code, out, err = run(capsys, *argv)
    assert code == 0 and len(err.splitlines()) == 1, (argv, err)
    quiet = run(capsys, *argv, "-q")
    assert quiet == (0, out, ""), argv
    assert not json_too or run(capsys, *argv, "--json")[2] == "", argv
    assert not WRONG.search(err), err
    return out, err.rstrip("\n")


def test_digest_says_what_the_reference_names(registry, facts, cache_dir, capsys):
    src = f"{registry.host}/test/multi:v1"
    index = facts["multi"]["index"]
    everything = "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6"
    assert said(capsys, "digest", src) == (f"{index}\n", f"{src}: an index of 4 platforms ({everything}); "
                                                         "--platform gives one's manifest")
    arm = facts["multi"]["platforms"]["linux/arm64/v8"]
    assert said(capsys, "digest", src, "--platform", "linux/arm64") == \
        (f"{arm}\n", f"{src}: the linux/arm64/v8 entry of index {index}")


def test_inspect_says_what_it_found(registry, facts, cache_dir, capsys):
    src = f"{registry.host}/test/multi:v1"
    index = facts["multi"]["index"]
    everything = "linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6"
    out, err = said(capsys, "inspect", src)
    assert json.loads(out)["digest"] == index and err == f"{src}: an index of 4 platforms ({everything})"
    out, err = said(capsys, "inspect", src, "--platform", "linux/arm64")
    layers = json.loads(out)["size"]
    assert err == f"{src}: a linux/arm64/v8 image, 2 layers, {size(layers)} compressed"
    out, err = said(capsys, "inspect", src, "--raw", json_too=False)
    assert err.startswith(f"{src}: manifest {index}, ") and err.endswith(" bytes as served")


def test_tag_and_tags_say_what_they_did(registry, target, facts, cache_dir, capsys):
    src = f"{registry.host}/test/multi:v1"
    index = facts["multi"]["index"]
    assert run(capsys, "copy", src, f"{target.host}/r/multi:v1")[0] == 0
    out, err = said(capsys, "tag", f"{target.host}/r/multi@{index}", "v2")
    assert (out, err) == (f"{target.host}/r/multi:v2@{index}\n", f"{target.host}/r/multi:v2 now names {index}")
    assert said(capsys, "tags", f"{target.host}/r/multi") == ("v1\nv2\n", f"2 tags in {target.host}/r/multi")


def test_prefetch_says_what_it_pinned(registry, facts, tmp_path, cache_dir, capsys):
    src = f"{registry.host}/test/multi:v1"
    index = facts["multi"]["index"]
    out, err = said(capsys, "prefetch", src, "--platform", "linux/arm64")
    assert out.startswith("{\n") and err == f"pinned {registry.host}/test/multi@{index} (linux/arm64/v8; the hash " \
                                             "of its docker-archive)"
    out, err = said(capsys, "prefetch", src, "--platform", "linux/arm64", "--layers")
    assert err.endswith("(linux/arm64/v8; a layer pin: no layer downloaded)")
    (tmp_path / "list.txt").write_text(f"{src} linux/amd64\n")
    out, err = said(capsys, "prefetch", "--from", str(tmp_path / "list.txt"))
    assert out.startswith("[") and err == f"pinned 1 image from {tmp_path / 'list.txt'}"


def test_counts_and_sizes_read_as_a_person_writes_them(registry, target, facts, tmp_path, cache_dir, capsys):
    amd64 = facts["multi"]["platforms"]["linux/amd64"]
    code, out, err = run(capsys, "index", "create", f"{target.host}/i/app:1", f"{registry.host}/test/multi@{amd64}")
    assert code == 0 and err == f"{target.host}/i/app:1: an index of 1 entry (linux/amd64); 1 image copied in\n"
    code, out, err = run(capsys, "push", str(IMAGES / "single-gzip"), f"{target.host}/p/img:v1")
    assert code == 0 and re.search(r": 3 blobs sent \(\d+(\.\d)? kB\), 0 mounted, 0 already there, 2 manifests "
                                   r"written$", err.strip()), err
    code, out, err = run(capsys, "copy", f"{target.host}/p/img:v1", f"{target.host}/p/other:v1")
    assert code == 0 and ": 0 blobs sent (0 B), 3 mounted, 0 already there, " in err, err
    code, _, err = run(capsys, "cache", "prune", "--max-size", "0")
    assert code == 0 and re.fullmatch(r"removed \d+ blobs, \d+(\.\d)? kB\n", err), err
