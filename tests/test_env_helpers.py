"""dockerTools' environment helpers from a build spec (fakeNss, caCertificates, binSh, usrBinEnv),
checked by running a busybox image built with them under chroot; and the buildImage keys that
are accepted as nixpkgs has them (copyToRoot, the VM-only keys)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from registry_tools.builder.plan import FAKE_GROUP, FAKE_PASSWD
from .helpers import run

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def busybox_spec(tmp_path, **keys):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "id")
    bundle = tmp_path / "bundle.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n")
    spec = {"name": "example/env", "tag": "1", "architecture": "amd64", "contents": ["root"], **keys}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json", bundle


def test_helpers_work_under_chroot(tmp_path, cache_dir, capsys):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root (CI runs as root)")
    spec, bundle = busybox_spec(tmp_path, fakeNss=True, caCertificates="bundle.crt", binSh="/bin/busybox",
                                usrBinEnv="/bin/busybox")
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:1", "-o", str(tmp_path / "rootfs.tar"))
    assert code == 0, err
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "rootfs.tar"), "-C", str(rootfs)], check=True)
    assert (rootfs / "etc/passwd").read_text() == FAKE_PASSWD and (rootfs / "etc/group").read_text() == FAKE_GROUP
    assert (rootfs / "etc/nsswitch.conf").read_text() == "hosts: files dns\n" and (rootfs / "var/empty").is_dir()

    def chroot(*argv: str) -> str:
        res = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(rootfs), *argv],
                             capture_output=True, text=True,
                             env={"PATH": "/bin:/usr/bin"})
        assert res.returncode == 0, res.stderr
        return res.stdout

    assert chroot("/bin/id", "nobody").startswith("uid=65534(nobody) gid=65534(nobody)")
    assert chroot("/bin/sh", "-c", "echo from sh") == "from sh\n"
    assert "PATH=/bin:/usr/bin" in chroot("/usr/bin/env")
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-bundle.crt",
                 "/etc/pki/tls/certs/ca-bundle.crt"):
        assert chroot("/bin/sh", "-c", f"/bin/busybox cat {path}") == bundle.read_text()


def test_helper_layer_is_reused_and_contents_win(tmp_path, cache_dir, capsys):
    spec, _ = busybox_spec(tmp_path, fakeNss=True)
    (tmp_path / "root" / "etc").mkdir()
    (tmp_path / "root" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    code, out, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "a"), "--json")
    assert code == 0, err
    code, out2, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "b"), "--json")
    assert json.loads(out)["manifestDigest"] == json.loads(out2)["manifestDigest"]
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'a'}:1", "-o", str(tmp_path / "r.tar"))
    import tarfile

    with tarfile.open(tmp_path / "r.tar") as tf:
        assert tf.extractfile("etc/passwd").read() == b"root:x:0:0::/root:/bin/sh\n"  # the contents' own file
        assert tf.extractfile("etc/group").read().decode() == FAKE_GROUP


@pytest.mark.parametrize("change, message", [
    ({"fakeNss": "yes"}, "fakeNss: must be true or false"),
    ({"caCertificates": "missing.crt"}, "caCertificates:"),
    ({"binSh": "bin/busybox"}, "binSh: must be an absolute path"),
    ({"usrBinEnv": 3}, "usrBinEnv: must be the absolute path"),
    ({"copyToRoot": ["root"]}, "copyToRoot: is buildImage's name for contents"),
    ({"diskSize": "big"}, "diskSize: must be a whole number"),
])
def test_bad_helper_keys_name_the_key(tmp_path, cache_dir, capsys, change, message):
    spec, _ = busybox_spec(tmp_path, **change)
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "o"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_copy_to_root_and_vm_keys(tmp_path, cache_dir, capsys, caplog):
    spec, _ = busybox_spec(tmp_path)
    doc = json.loads(spec.read_text())
    doc["copyToRoot"] = doc.pop("contents")
    doc["diskSize"] = 1024
    doc["buildVMMemorySize"] = 512
    spec.write_text(json.dumps(doc))
    import logging

    with caplog.at_level(logging.WARNING, logger="registry_tools.build"):
        code, out, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "o"))
    assert code == 0, err
    notices = [r.getMessage() for r in caplog.records if "no VM is used" in r.getMessage()]
    assert len(notices) == 2 and all("\n" not in n for n in notices)
    assert out.strip() == "example/env:1"  # the tag it chose is printed (nixpkgs' imageTag)


def layers_of(layout) -> list[list[tuple[str, int, int]]]:
    import tarfile

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    out = []
    for layer in manifest["layers"]:
        with tarfile.open(layout / "blobs/sha256" / layer["digest"].split(":")[1]) as tf:
            out.append([(m.name, m.uid, m.gid) for m in tf])
    return out


def test_single_layer_and_include_store_paths(tmp_path, cache_dir, capsys):
    from .support.buildinputs import make_store, write_graph

    make_store(tmp_path)
    spec, _ = busybox_spec(tmp_path, closure={"graph": write_graph(tmp_path, "list").name, "realStoreDir": "store"},
                           layering="single")
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "single"))
    assert code == 0, err
    (only,) = layers_of(tmp_path / "single")
    names = {n for n, _, _ in only}
    assert "nix/store/dddd-app/bin/app" in names and "bin/busybox" in names
    doc = json.loads(spec.read_text())
    doc.pop("layering")
    doc["includeStorePaths"] = False
    spec.write_text(json.dumps(doc))
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "nostore"))
    assert code == 0, err
    assert not any(n.startswith("nix/store/") for layer in layers_of(tmp_path / "nostore") for n, _, _ in layer)


def test_enable_fakechroot_runs_the_commands_inside_the_image_root(tmp_path, cache_dir, capsys):
    """fakechroot confines dynamically linked programs: the commands run with this machine's shell,
    whatever the image's /bin/sh is (here a dynamically linked dash, then a static busybox)."""
    if shutil.which("fakechroot") is None:
        pytest.fail("fakechroot is missing: run `bash .ci/run` (Debian's fakechroot)")
    marker = f"/made-in-chroot-{os.getpid()}"
    spec, _ = busybox_spec(tmp_path, enableFakechroot=True,
                           fakeRootCommands=f"echo inside > {marker}")
    root = tmp_path / "root"
    libs = subprocess.run(["ldd", "/bin/dash"], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"(/\S+\.so[.\d]*)", libs):
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(lib), target)
    shutil.copy("/bin/dash", root / "bin" / "sh")
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    assert not os.path.exists(marker)  # this machine's root was not touched
    final = layers_of(tmp_path / "layout")[-1]
    assert any(n == marker.lstrip("/") for n, _, _ in final)
    # the image's static shell is not what runs the commands: confined all the same
    (root / "bin" / "sh").unlink()
    os.symlink("busybox", root / "bin" / "sh")
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "static"))
    assert code == 0, err
    assert any(n == marker.lstrip("/") for n, _, _ in layers_of(tmp_path / "static")[-1])
    assert not os.path.exists(marker)


def test_from_image_tag_picks_the_base(tmp_path, cache_dir, capsys):
    from .support import imagegen

    lay = imagegen.Layout()
    for tag in ("v1", "v2"):
        lay.tag(lay.image([lay.layer({f"etc/{tag}": tag.encode()})]), tag)
    lay.write(tmp_path / "base")
    spec, _ = busybox_spec(tmp_path, fromImage="base", fromImageTag="v2")
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "layout"))
    assert code == 0, err
    assert [n for n, _, _ in layers_of(tmp_path / "layout")[0]] == ["etc/v2"]
    (tmp_path / "base.tar").write_bytes(b"")
    doc = json.loads(spec.read_text())
    doc["fromImage"] = "base.tar"
    spec.write_text(json.dumps(doc))
    code, _, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "x"))
    assert code == 2 and "fromImageTag: picks an image of a docker-archive with fromImageName" in err
