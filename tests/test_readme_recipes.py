"""The README's three recipes, run as written: each shell block of "Three recipes", in order, in one
directory, with a local registry in place of registry.example.com, the command on the PATH, and
Debian's Nix over a stand-in for nixpkgs (tests/support/nixpkgs-standin) for `nix-build`."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, clean_env, flake_files, run

NIX_CONFIG = "\n".join(["build-users-group =", "sandbox = false", "substituters =",
                        "experimental-features = nix-command"])


def recipe_blocks() -> list[str]:
    """The ```sh blocks of the README's "Three recipes" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Three recipes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```", section, re.S | re.M)


def file_sri(path: Path) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def test_the_readme_has_three_recipes_naming_the_example_registry():
    blocks = recipe_blocks()  # the three, and the layer pin's example beside the first
    assert len(blocks) == 4 and all("registry.example.com" in b for b in blocks)


def test_the_three_recipes_work_as_written(registry, target, tmp_path, capsys):
    if shutil.which("nix-build") is None:
        pytest.fail("nix-build is missing: run ./scripts/setup (Debian's nix-bin)", pytrace=False)
    # the registry holds what the recipes name: an alpine (a multi-arch index) under library/
    code, _, err = run(capsys, "copy", f"{registry.host}/test/multi:v1", f"{target.host}/library/alpine:3.20",
                       "--all")
    assert code == 0, err
    work = tmp_path / "work"
    work.mkdir()
    flake_files(work / "registry-tools")  # "./registry-tools is the clone": what the flake and default.nix read
    # a nixpkgs for <nixpkgs>: the suite's stand-in, with this machine's Python
    nixpkgs = tmp_path / "nixpkgs"
    shutil.copytree(ROOT / "tests/support/nixpkgs-standin", nixpkgs)
    (nixpkgs / "default.nix").write_text(
        f'{{ ... }}: import ./packages.nix {{ system = builtins.currentSystem; python = "{sys.executable}"; }}\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "registry-tools").write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" '
                                            f'-m registry_tools "$@"\n')
    (bin_dir / "registry-tools").chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}:{clean_env()['PATH']}", REGISTRY_TOOLS_CACHE=str(tmp_path / "cache"),
                    NIX_PATH=f"nixpkgs={nixpkgs}", NIX_CONFIG=NIX_CONFIG)

    outputs = []
    for block in recipe_blocks():
        script = block.replace("registry.example.com", target.host)
        res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, f"{script}\nexit {res.returncode}\n{res.stderr[-3000:]}"
        outputs.append(res.stdout)

    # 1: the pin, and the pull that wrote exactly its bytes; then the layer pin, from which assemble
    # wrote them again
    pin = json.loads((work / "alpine.pin.json").read_text())
    assert pin["imageName"] == f"{target.host}/library/alpine" and file_sri(work / "alpine.tar") == pin["hash"]
    layers = json.loads((work / "alpine.layers.json").read_text())
    assert "hash" not in layers and layers["imageDigest"] == pin["imageDigest"]
    # 2: the image is in the registry, on the pulled base, with the recipe's file and command
    code, out, err = run(capsys, "inspect", f"{target.host}/team/app:1.0", "--json")
    assert code == 0, err
    assert "/app/hello" in json.dumps(json.loads(out))
    # 3: a lock of two layer pins, and Nix assembled both images: the first is the bytes recipe 1 pulled
    lock = json.loads((work / "images.lock.json").read_text())
    assert [e["imageName"] for e in lock["images"]] == [f"{target.host}/library/alpine", f"{target.host}/team/app"]
    paths = [Path(p) for p in outputs[-1].split()]
    assert len(paths) == 2 and all(str(p).startswith("/nix/store/") for p in paths)
    assert file_sri(paths[0]) == pin["hash"]
