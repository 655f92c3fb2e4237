"""Paths, data and helpers shared by the tests (a test module imports these, not another test module)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CORPUS = FIXTURES / "corpus"
IMAGES = FIXTURES / "images"
# What building needs of a checkout; the rest (.git, caches, an editable install's egg-info) stays.
JUNK = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
                              ".pytest_cache", ".venv", "result")
# What the flake and default.nix read of a checkout.
FLAKE_FILES = ("flake.nix", "default.nix", "pyproject.toml", "README.md", "registry_tools", "nix", "schemas",
               "man", "completions")

# The hashes of the committed test images pulled: any change of them changes a pin users made.
GOLDEN = {
    ("multi", "linux/amd64", "docker-archive"): "sha256-j6wr/q0SdSBIU1MgBq35uC2Ee8D6o00ELOX8NSLXL9I=",
    ("multi", "linux/arm64/v8", "docker-archive"): "sha256-E9+NXm+vnDHjQk0seWW+LI6IsBCe62xuj7WbVXRfFXA=",
    ("multi", "linux/arm/v7", "docker-archive"): "sha256-gvIURrmak2bJ4rRj1hZgWfkJGqj8vIqw3yumNN2cpiM=",
    ("multi", "linux/arm/v6", "docker-archive"): "sha256-1OSDJNMt9Jwx1vTIOGOpkVxVmyJu9rTfVuoIOiTB50g=",
    ("multi", "linux/amd64", "oci-archive"): "sha256-oY8pGIQBrH0OxmhmNYiIyjGcjfy3Y57ba8ZohyOd318=",
    ("multi", "linux/amd64", "oci"): "sha256-bZInOhrhj9Yi5ySqLuZiNqXXEF8+wKB76im+xiEuzZk=",
    ("single-gzip", "linux/amd64", "docker-archive"): "sha256-NwLG6539QDv3VXqPXB1yqrFXDmERC6xXXSs/Y95fb9s=",
    ("single-zstd", "linux/amd64", "docker-archive"): "sha256-r+kpiuKOQTD3P5e3Pl4k2N3eG1IS3NzBuBhaqZHmz8E=",
    ("single-none", "linux/amd64", "docker-archive"): "sha256-5hZukc8R7tw15INX4EcFj7wqhcNrG92MQMrTAoV26V0=",
    ("docker-types", "linux/amd64", "docker-archive"): "sha256-NwLG6539QDv3VXqPXB1yqrFXDmERC6xXXSs/Y95fb9s=",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing of this checkout's or this venv's on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return env | extra


def load(rel: str):
    return json.loads((CORPUS / rel).read_text())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The command line in this process: its exit code, stdout and stderr."""
    from registry_tools import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def touch_and_chown(work, i: int) -> None:
    """Other mtimes (and, for i > 0, another owner) on every input below `work`: a build's output
    must not depend on them."""
    import os

    for dirpath, dirnames, filenames in os.walk(work):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.utime(p, (1e9 + i * 12345, 1e9 + i * 12345))
                if i:
                    os.chown(p, 4242, 4242)


def umoci_tree(layout: Path, tag: str, where: Path) -> tuple[dict[str, str], dict]:
    """umoci's unpacking of the layout's image: {path: content (files) or '/' (directories)
    or '-> target' (links)}, and the runtime config it writes."""
    import os
    import subprocess

    bundle = where / f"bundle-{layout.name}"
    res = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rootfs = bundle / "rootfs"
    out = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(rootfs))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "/" if p.is_dir() else p.read_text()
    return out, json.loads((bundle / "config.json").read_text())


def validator():
    """The OCI image spec's schemas (the corpus's oci_validate module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("oci_validate", CORPUS / "oci-image-spec/oci_validate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_schema(doc, kind):
    """`doc` against the definition `kind` of the CLI's JSON Schema."""
    import jsonschema

    schema = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
    jsonschema.validate(doc, {**schema, "$ref": f"#/$defs/{kind}"})


def flake_files(dest: Path) -> Path:
    """The files the flake and default.nix read, copied to `dest` (a git checkout would hide untracked ones)."""
    dest.mkdir()
    for name in FLAKE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=JUNK)
        else:
            shutil.copy(ROOT / name, dest / name)
    return dest


def interrupt(proc, what: str) -> tuple[float, str]:
    """Ctrl-C to a running command: how long it took to end, and its stderr (a test failure if it
    runs on 15 s later)."""
    import signal
    import subprocess
    import time

    import pytest

    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {what} was still running 15 s after Ctrl-C")
    return time.monotonic() - sent, proc.stderr.read()
