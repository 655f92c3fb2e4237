"""export: an image's root filesystem as one tar, layers applied with whiteouts and opaque
directories, compared with `podman export` of a container made from the same image."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest


from .support import imagegen
from .helpers import run


def raw_tar(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info, data = e if isinstance(e, tuple) else (e, b"")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def entry(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, link="", data=b"", mtime=1000):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname, info.mtime = kind, mode, uid, gid, link, mtime
    return (info, data) if kind == tarfile.REGTYPE else info


def layer(lay: imagegen.Layout, entries) -> tuple[imagegen.Blob, str]:
    raw = raw_tar(entries)
    return lay.add(imagegen.Blob(imagegen.LAYER_TYPES["gzip"], imagegen.compress(raw, "gzip"))), imagegen.sha(raw)


def whiteout_image(path) -> None:
    lay = imagegen.Layout()
    base = layer(lay, [entry("etc", tarfile.DIRTYPE, 0o755), entry("etc/a", data=b"a\n"), entry("etc/b", data=b"b\n"),
                       entry("etc/keep", data=b"keep\n", mode=0o600, uid=33, gid=44),
                       entry("opt", tarfile.DIRTYPE, 0o755), entry("opt/x", tarfile.DIRTYPE, 0o750),
                       entry("opt/x/old", data=b"old\n"), entry("bin", tarfile.DIRTYPE, 0o755),
                       entry("bin/tool", data=b"#!/bin/sh\n", mode=0o755),
                       entry("bin/alias", tarfile.SYMTYPE, 0o777, link="tool"),
                       entry("bin/hard", tarfile.LNKTYPE, 0o755, link="bin/tool"),
                       entry("var", tarfile.DIRTYPE, 0o755), entry("var/gone", tarfile.DIRTYPE, 0o755),
                       entry("var/gone/file", data=b"x"), entry("lib", tarfile.DIRTYPE, 0o755),
                       entry("lib/removed", data=b"removed\n"), entry("lib/stays", tarfile.LNKTYPE, link="lib/removed"),
                       entry("lib/replaced", data=b"first\n"), entry("lib/old", tarfile.LNKTYPE, link="lib/replaced")])
    top = layer(lay, [entry("etc", tarfile.DIRTYPE, 0o755), entry("etc/.wh.a"), entry("etc/b", data=b"b v2\n"),
                      entry("opt", tarfile.DIRTYPE, 0o755), entry("opt/x", tarfile.DIRTYPE, 0o755),
                      entry("opt/x/.wh..wh..opq"), entry("opt/x/new", data=b"new\n"),
                      entry("var", tarfile.DIRTYPE, 0o755), entry("var/.wh.gone"),
                      entry("etc/c", data=b"c\n", mode=0o640, uid=1000, gid=1000), entry("lib/.wh.removed"),
                      entry("lib/replaced", data=b"second\n")])
    lay.tag(lay.image([base, top]), "v1")
    lay.write(path)


def listing(tar_path) -> dict[str, tuple]:
    out = {}
    with tarfile.open(tar_path) as tf:
        for m in tf:
            name = m.name.lstrip("./").rstrip("/")
            if not name:
                continue
            data = tf.extractfile(m).read() if m.isreg() else b""
            kind = "hard" if m.islnk() else "sym" if m.issym() else "dir" if m.isdir() else "file"
            out[name] = (kind, m.mode & 0o7777, m.uid, m.gid, m.linkname.lstrip("/") if m.islnk() else m.linkname,
                         hashlib.sha256(data).hexdigest() if kind == "file" else "")
    return out


def resolved(entries: dict[str, tuple]) -> dict[str, tuple]:
    """Hard links as the file they share (tar writers differ in which name of a pair comes first)."""
    return {n: entries[e[4]] if e[0] == "hard" else e for n, e in entries.items()}


def test_export_applies_whiteouts_and_matches_podman_export(tmp_path, cache_dir, capsys):
    layout = tmp_path / "layout"
    whiteout_image(layout)
    out = tmp_path / "rootfs.tar"
    code, stdout, err = run(capsys, "export", f"oci:{layout}:v1", "-o", str(out), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    ours = listing(out)
    assert "etc/a" not in ours and "var/gone" not in ours and "var/gone/file" not in ours
    assert "opt/x/old" not in ours and ours["opt/x/new"][0] == "file" and ours["opt/x"][1] == 0o755
    assert ours["etc/b"][5] == hashlib.sha256(b"b v2\n").hexdigest()
    assert ours["etc/keep"][1:4] == (0o600, 33, 44) and ours["bin/alias"][:1] == ("sym",)
    assert ours["bin/hard"][0] == "hard" and ours["bin/hard"][4] == "bin/tool"
    # a hard link whose name went (a whiteout) or got new content (a later layer) keeps the file it
    # was made to, as the merged filesystem shows it: never a link to a name the output lacks
    assert "lib/removed" not in ours and ours["lib/stays"][::5] == ("file", hashlib.sha256(b"removed\n").hexdigest())
    assert ours["lib/old"][5] == hashlib.sha256(b"first\n").hexdigest()
    assert ours["lib/replaced"][5] == hashlib.sha256(b"second\n").hexdigest()
    # deterministic: again, from an empty cache, the same bytes and hash
    shutil.rmtree(cache_dir)
    code, again, _ = run(capsys, "export", f"oci:{layout}:v1", "-o", str(tmp_path / "again.tar"), "--json")
    assert json.loads(again)["hash"] == doc["hash"]
    assert (tmp_path / "again.tar").read_bytes() == out.read_bytes()
    # podman export of a container created from the same image
    if shutil.which("podman") is None:
        pytest.fail("podman is missing: run `bash .ci/run`")
    with tempfile.TemporaryDirectory(prefix="rt-", dir="/tmp") as short:
        base = ["podman", "--root", f"{short}/r", "--runroot", f"{short}/rr", "--storage-driver", "vfs"]
        subprocess.run(base + ["pull", "-q", f"oci:{layout}:v1"], check=True, capture_output=True)
        images = subprocess.run(base + ["images", "-q"], check=True, capture_output=True, text=True).stdout.split()
        cid = subprocess.run(base + ["create", images[0], "/bin/tool"], check=True, capture_output=True,
                             text=True).stdout.strip()
        subprocess.run(base + ["export", "-o", f"{short}/podman.tar", cid], check=True, capture_output=True)
        theirs = listing(f"{short}/podman.tar")
    # podman adds what a container needs (/dev, /proc, /etc/hosts, …): compare what the image has
    added = {n for n in theirs if n not in ours}
    assert all(n.split("/")[0] in ("dev", "proc", "sys", "run", "etc", "tmp") for n in added), added
    assert resolved({n: theirs[n] for n in ours}) == resolved(ours)


@pytest.mark.parametrize("bad, message", [
    ([entry("../etc/passwd", data=b"x")], "would leave the root"),
    ([entry("a", tarfile.LNKTYPE, link="../../etc/shadow")], "would leave the root"),
    ([entry("d", tarfile.DIRTYPE, 0o755), entry("d/link", tarfile.SYMTYPE, link="../../../etc")], "climbs out"),
])
def test_names_and_links_leaving_the_root_are_refused(tmp_path, cache_dir, capsys, bad, message):
    lay = imagegen.Layout()
    lay.tag(lay.image([layer(lay, bad)]), "v1")
    lay.write(tmp_path / "layout")
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:v1", "-o", str(tmp_path / "out.tar"))
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.tar").exists()


def test_export_from_a_registry_needs_a_digest(registry, facts, cache_dir, tmp_path, capsys):
    code, _, err = run(capsys, "export", f"{registry.host}/test/multi:v1", "-o", str(tmp_path / "x.tar"))
    assert code == 2 and "not pinned" in err
    code, out, err = run(capsys, "export", f"{registry.host}/test/multi@{facts['multi']['index']}",
                         "--platform", "linux/arm64", "-o", str(tmp_path / "x.tar"))
    assert code == 0, err
    assert tarfile.open(tmp_path / "x.tar").getnames()


def held_under_links(tar_path) -> list[str]:
    """Entries whose path passes through a symbolic link of the same tar, and hard links to names
    that are not (yet) in it: what extractors misread."""
    links: set[str] = set()
    seen: set[str] = set()
    bad = []
    with tarfile.open(tar_path) as tf:
        for m in tf:
            name = m.name.lstrip("./").rstrip("/")
            parts = name.split("/")
            if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                bad.append(name)
            if m.islnk() and m.linkname.lstrip("./") not in seen:
                bad.append(f"{name} -> {m.linkname}")
            (links.add if m.issym() else links.discard)(name)
            seen.add(name)
    return bad


def flat_layer(layout):
    """The uncompressed tar of the one layer of a flattened layout's image (written beside it)."""
    from registry_tools.model.compression import decompressed

    blobs = layout / "blobs" / "sha256"
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    (desc,) = json.loads((blobs / entry["digest"].split(":")[1]).read_bytes())["layers"]
    out = layout.parent / f"{layout.name}-layer.tar"
    with open(blobs / desc["digest"].split(":")[1], "rb") as f, open(out, "wb") as w:
        shutil.copyfileobj(decompressed(f)[0], w)
    return out


@pytest.fixture
def outside():
    where = tempfile.mkdtemp(prefix="rt-outside-", dir="/tmp")
    yield where
    shutil.rmtree(where)


def test_an_entry_under_a_lower_layers_symlink_replaces_the_link(tmp_path, cache_dir, capsys, outside):
    """`evil -> /elsewhere`, then `evil/cron.d/job` in a later layer: the output has a directory
    evil holding cron.d/job, as podman's overlay storage shows it, so extracting it writes
    nothing elsewhere. Under a link of its own layer (podman would follow it) it is refused."""
    first = [entry("etc", tarfile.DIRTYPE, 0o755), entry("evil", tarfile.SYMTYPE, 0o777, link=outside)]
    second = [entry("evil/cron.d", tarfile.DIRTYPE, 0o755), entry("evil/cron.d/job", data=b"job\n"),
              entry("etc/x", tarfile.SYMTYPE, 0o777, link="../evil")]
    for name, layers in (("later", [first, second]), ("same", [first + second])):
        lay = imagegen.Layout()
        lay.tag(lay.image([layer(lay, e) for e in layers]), "v1")
        lay.write(tmp_path / name)
        code, _, err = run(capsys, "export", f"oci:{tmp_path / name}:v1", "-o", str(tmp_path / f"{name}.tar"))
        flat = tmp_path / f"{name}-flat"
        flat_code, _, flat_err = run(capsys, "flatten", f"oci:{tmp_path / name}:v1", f"oci:{flat}:v1")
        if name == "same":
            for got, said in ((code, err), (flat_code, flat_err)):  # export and flatten alike
                assert got == 1 and "'evil/cron.d'" in said and "same layer" in said
                assert len(said.strip().splitlines()) == 1
            assert not (tmp_path / "same.tar").exists() and not flat.exists()
            continue
        assert code == 0 and flat_code == 0, err + flat_err
        out = tmp_path / "later.tar"
        assert held_under_links(out) == []
        assert flat_layer(flat).read_bytes() == out.read_bytes()  # flatten's one layer is export's tar
        ours = listing(out)
        assert "evil" not in ours and ours["evil/cron.d"][0] == "dir"
        assert ours["evil/cron.d/job"][5] == hashlib.sha256(b"job\n").hexdigest()
        (tmp_path / "x").mkdir()
        subprocess.run(["tar", "-xf", str(out), "-C", str(tmp_path / "x")], check=True)
        assert os.listdir(outside) == [] and (tmp_path / "x/evil/cron.d/job").read_text() == "job\n"


@pytest.mark.parametrize("entries", [
    [[entry("a", tarfile.LNKTYPE, link="nowhere")]],
    [[entry("t", data=b"t")], [entry(".wh.t"), entry("a", tarfile.LNKTYPE, link="t")]],
    [[entry("d", tarfile.DIRTYPE, 0o755), entry("a", tarfile.LNKTYPE, link="d")]],
    [[entry("s", tarfile.SYMTYPE, link="d"), entry("d", tarfile.DIRTYPE, 0o755), entry("d/t", data=b"t"),
      entry("a", tarfile.LNKTYPE, link="s/t")]],
], ids=["absent", "whited-out", "directory", "through-a-symlink"])
def test_a_hard_link_to_a_name_the_image_does_not_hold_is_refused(tmp_path, cache_dir, capsys, entries):
    lay = imagegen.Layout()
    lay.tag(lay.image([layer(lay, e) for e in entries]), "v1")
    lay.write(tmp_path / "layout")
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:v1", "-o", str(tmp_path / "out.tar"))
    assert code == 1 and "hard link" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.tar").exists()
    code, _, err = run(capsys, "flatten", f"oci:{tmp_path / 'layout'}:v1", f"oci:{tmp_path / 'flat'}:v1")
    assert code == 1 and "hard link" in err and len(err.strip().splitlines()) == 1, err  # flatten alike
    assert not (tmp_path / "flat").exists()
