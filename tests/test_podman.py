"""podman:NAME[:TAG] as a destination: the image streamed into `podman load`, read back by podman
(`podman images`, `podman image inspect`); podman's failures and Ctrl-C are one line, and
nothing is left on disk."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .helpers import IMAGES, ROOT, run


@pytest.fixture
def storage():
    """podman's storage of the test's own: vfs, and paths short enough for its runroot."""
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:
        yield ["--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """TMPDIR for this test alone: what podman (and we) leave there shows."""
    d = tmp_path / "tmpdir"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    return d


def flags(args: list[str]) -> list[str]:
    """podman's options as --podman-arg=… words."""
    return [f"--podman-arg={a}" for a in args]


def podman_json(storage: list[str], *argv: str):
    res = subprocess.run(["podman", *storage, *argv], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def config_digest(name: str, manifest: str) -> str:
    raw = (IMAGES / name / "blobs" / "sha256" / manifest.split(":")[1]).read_text()
    return json.loads(raw)["config"]["digest"]


def check_loaded(storage: list[str], name: str, config: str) -> dict:
    """podman lists the image under `name`, its ID the config's digest; returns its inspection."""
    listed = [i for i in podman_json(storage, "images", "--format", "json", "--no-trunc") if name in i["Names"]]
    assert len(listed) == 1 and f"sha256:{listed[0]['Id']}" == config
    [inspected] = podman_json(storage, "image", "inspect", name)
    assert inspected["RepoTags"] == [name] and f"sha256:{inspected['Id']}" == config
    return inspected


def test_a_registry_image_loads_with_its_config_digest_as_id(registry, facts, storage, scratch, cache_dir, capsys):
    src = f"{registry.host}/test/single-gzip:v1"
    code, out, err = run(capsys, "copy", src, "podman:localhost/reg/app:1", *flags(storage), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["loaded"] == "localhost/reg/app:1" and doc["digest"] == facts["single-gzip"]["manifest"]
    inspected = check_loaded(storage, "localhost/reg/app:1", config_digest("single-gzip", doc["digest"]))
    assert inspected["RootFS"]["Layers"] == facts["single-gzip"]["diff_ids"]
    assert list(scratch.iterdir()) == []  # podman's copy of its input went with the directory we gave it


def test_a_layouts_platform_loads_with_options_from_the_environment(facts, storage, scratch, cache_dir, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv("REGISTRY_TOOLS_PODMAN_ARGS", " ".join(storage))
    code, out, err = run(capsys, "copy", f"oci:{IMAGES / 'multi'}:v1", "podman:localhost/multi", "--platform",
                         "linux/arm64")
    assert code == 0, err
    digest = facts["multi"]["platforms"]["linux/arm64/v8"]
    assert out.strip() == digest
    assert err.strip() == f"loaded oci:{IMAGES / 'multi'}:v1 into podman as localhost/multi:v1 (linux/arm64/v8, " \
                          f"manifest {digest})"
    inspected = check_loaded(storage, "localhost/multi:v1", config_digest("multi", digest))
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "arm64")
    assert list(scratch.iterdir()) == []


def test_a_docker_archive_loads(tmp_path, storage, scratch, cache_dir, capsys):
    archive = tmp_path / "img.tar"
    assert run(capsys, "copy", f"oci:{IMAGES / 'single-none'}:v1", f"docker-archive:{archive}:my/img:2")[0] == 0
    code, out, err = run(capsys, "copy", f"docker-archive:{archive}", "podman:localhost/from/archive:3",
                         *flags(storage), "--json")
    assert code == 0, err
    with open(IMAGES / "single-none" / "index.json") as f:
        manifest = json.load(f)["manifests"][0]["digest"]
    check_loaded(storage, "localhost/from/archive:3", config_digest("single-none", manifest))


def test_a_layer_whose_gzip_misstates_its_size_loads(tmp_path, target, storage, scratch, cache_dir, capsys):
    """A multi-member gzip records only its last member's size: a stream planned from that record
    would be wrong, and a stream cannot be written again. The sizes are measured first."""
    import gzip

    from .support import imagegen

    lay = imagegen.Layout()
    raw = imagegen.tar_of({f"f{i}": bytes([i]) * 5000 for i in range(8)})
    members = gzip.compress(raw[:10240]) + gzip.compress(raw[10240:])
    image = lay.image([(lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], members)), imagegen.sha(raw))])
    lay.tag(image, "v1")
    lay.write(tmp_path / "lay")
    assert run(capsys, "copy", f"oci:{tmp_path / 'lay'}:v1", f"{target.host}/members:v1")[0] == 0
    code, _, err = run(capsys, "copy", f"{target.host}/members:v1", "podman:localhost/members:1", *flags(storage),
                       "--cache-dir", str(tmp_path / "cold"))  # nothing measured yet
    assert code == 0, err
    check_loaded(storage, "localhost/members:1", json.loads(image.data)["config"]["digest"])


def test_a_failing_podman_is_one_line(storage, scratch, cache_dir, capsys):
    bad = ["--root", "/proc/no-such-storage", *storage[2:]]
    code, out, err = run(capsys, "copy", f"oci:{IMAGES / 'single-gzip'}:v1", "podman:localhost/x:1", *flags(bad))
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("registry-tools: podman load failed (exit 125): ") and "/proc/no-such-storage" in err
    assert list(scratch.iterdir()) == []


def test_podman_missing_and_misused_options_are_one_line(tmp_path, cache_dir, capsys, monkeypatch):
    src = f"oci:{IMAGES / 'single-gzip'}:v1"
    code, _, err = run(capsys, "copy", src, f"oci:{tmp_path / 'lay'}", "--podman-arg=--root=/x")
    assert code == 2 and err.strip() == "registry-tools: --podman-arg applies to a podman: destination"
    code, _, err = run(capsys, "copy", src, f"podman:localhost/x@{'sha256:' + 'a' * 64}")
    assert code == 2 and "not by digest" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run(capsys, "copy", src, "podman:localhost/x:1")
    assert code == 1 and err.strip() == "registry-tools: podman: destination: podman is not on PATH"


SLOW_PODMAN = """#!/bin/sh
# podman that takes its input, then never finishes loading, and ignores SIGTERM
trap '' TERM
cat > "$TMPDIR/input"
echo "$$ $TMPDIR" > "$SEEN.tmp" && mv "$SEEN.tmp" "$SEEN"
while :; do sleep 0.1; done
"""


def test_ctrl_c_while_podman_loads_stops_it_and_leaves_nothing(tmp_path, cache_dir):
    """A podman that will not stop on SIGTERM is killed a second later; its TMPDIR is removed and the
    command ends at once with one line (podman runs in a session of its own, so the terminal's
    Ctrl-C reaches the command alone)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(SLOW_PODMAN)
    (bin_dir / "podman").chmod(0o755)
    scratch, seen = tmp_path / "tmpdir", tmp_path / "seen"
    scratch.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(scratch), SEEN=str(seen),
               PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "registry_tools", "copy", f"oci:{IMAGES / 'single-gzip'}:v1",
                             "podman:localhost/x:1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not seen.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    pid, podman_tmp = seen.read_text().split()
    assert Path(podman_tmp).parent == scratch and (Path(podman_tmp) / "input").stat().st_size > 0
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - interrupted < 4
    assert proc.returncode == 130 and out == b""
    assert err.decode().splitlines() == ["registry-tools: interrupted; the destination was left untouched"]
    assert list(scratch.iterdir()) == []
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
