"""build-shell and nix/shell.nix (buildNixShellImage, streamNixShellImage) with Debian's Nix 2.8 and
no nixpkgs: derivations written with builtins.derivation, their builder busybox-static copied
into the store. Each image is unpacked (umoci, or our export) and its Cmd run as its User in
its WorkingDir, confined as root of its own namespaces (builder.confinement): containers
cannot start on every machine, and a bare chroot does not contain root."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

import jsonschema
import pytest

from registry_tools.builder import confinement

from .helpers import ROOT, run

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
NIX_CONFIG = "\n".join(["build-users-group =", "sandbox = false", "substituters =",
                        "experimental-features = nix-command"])
PKGS = r'''
let
  system = builtins.currentSystem;
  bb = builtins.path { path = ./bb; name = "busybox"; };
  greeting = derivation { name = "greeting-1.0"; inherit system; builder = "${bb}/bin/sh";
                          args = [ "-c" "mkdir $out; echo hello > $out/greeting" ]; };
  app = derivation {
    name = "app-1.0"; inherit system; builder = "${bb}/bin/sh";
    args = [ "-c" "mkdir -p $out/share; cat ${greeting}/greeting $notePath > $out/share/msg; echo $message >> $out/share/msg" ];
    message = "built in the image";
    note = "passed as a file\n";
    passAsFile = [ "note" ];
    shellHook = "echo hook ran; export FROM_HOOK=yes";
  };
  viaBusybox = derivation { name = "via-busybox"; inherit system; builder = "${bb}/bin/busybox";
                            args = [ "sh" "-c" "echo > $out" ]; };
  structured = derivation { name = "structured"; inherit system; builder = "${bb}/bin/sh";
                            __structuredAttrs = true; args = [ ]; };
  unbuilt = derivation { name = "unbuilt-1.0"; inherit system; builder = "${bb}/bin/sh"; args = [ "-c" ":" ];
                         dep = derivation { name = "never-built"; inherit system; builder = "${bb}/bin/sh";
                                            args = [ "-c" "exit 1" ]; }; };
in { inherit bb greeting app viaBusybox structured unbuilt; }
'''


@pytest.fixture
def nix(monkeypatch, tmp_path):
    if shutil.which("nix-instantiate") is None:
        pytest.skip("nix-instantiate is missing (Debian's nix-bin): shell images are built from Nix derivations")
    monkeypatch.setenv("NIX_CONFIG", NIX_CONFIG)
    (tmp_path / "bb" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, tmp_path / "bb" / "bin" / "busybox")
    os.symlink("busybox", tmp_path / "bb" / "bin" / "sh")
    (tmp_path / "pkgs.nix").write_text(PKGS)
    return tmp_path / "pkgs.nix"


def nix_out(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.strip().splitlines()[-1]


def instantiate(pkgs, attr: str) -> str:
    return nix_out("nix-instantiate", str(pkgs), "-A", attr)


def store_path(pkgs, attr: str) -> str:
    return json.loads(nix_out("nix-instantiate", "--eval", "--json", "-E", f"toString (import {pkgs}).{attr}"))


def built_app(pkgs) -> str:
    """The app's derivation, its input derivation built (as nix-shell builds it)."""
    nix_out("nix-build", "--no-out-link", str(pkgs), "-A", "greeting")
    return instantiate(pkgs, "app")


def config_of(layout):
    index = json.loads((layout / "index.json").read_text())
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / index["manifests"][0]["digest"].split(":")[1]).read_text())
    return manifest, json.loads((blob / manifest["config"]["digest"].split(":")[1]).read_text())


def exported(capsys, source: str, root):
    """The image's root filesystem, through our export."""
    code, _, err = run(capsys, "export", source, "-o", str(root) + ".tar")
    assert code == 0, err
    root.mkdir()
    with tarfile.open(str(root) + ".tar") as tf:
        tf.extractall(root, filter="tar" if os.geteuid() != 0 else "fully_trusted")
    return root


def start(root, config, cmd=None) -> subprocess.CompletedProcess:
    """The image's Cmd (or `cmd`), as its User in its WorkingDir with its Env, confined. Debian's
    busybox has no setpriv --reuid: start-stop-daemon -c changes the user."""
    env = dict(e.split("=", 1) for e in config["Env"])
    argv = cmd or config["Cmd"]
    ids = confinement.ids()
    if ids.count > 1:  # root: the namespace maps the build user's ids
        (busybox,) = [p for p in (root / "nix" / "store").iterdir() if p.name.endswith("-busybox")]
        argv = [f"/nix/store/{busybox.name}/bin/busybox", "start-stop-daemon", "-S", "-c", config["User"],
                "-x", argv[0], "--", *argv[1:]]
    confinement.lend(root, ids, "test")
    return confinement.run("image", root, argv, env, "the image's Cmd", cwd=config["WorkingDir"])


def outside(uid: int) -> int:
    ids = confinement.ids()
    return ids.uid + uid if ids.count > 1 else os.geteuid()


def test_build_derivation_in_the_image_makes_its_output_at_its_store_path(nix, tmp_path, cache_dir, capsys):
    drv = built_app(nix)
    out = store_path(nix, "app")
    code, stdout, err = run(capsys, "build-shell", drv, "--run", "buildDerivation", "--oci", str(tmp_path / "layout"),
                            "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    schema = json.loads((ROOT / "schemas" / "cli-output.schema.json").read_text())
    jsonschema.validate(doc, {**schema, "$ref": "#/$defs/build-shell"})
    assert doc["reference"].startswith("app-1.0-env:") and doc["format"] == "oci"
    manifest, config = config_of(tmp_path / "layout")
    cfg = config["config"]
    assert cfg["User"] == "1000:1000" and cfg["WorkingDir"] == "/build" and config["architecture"] == "amd64"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["out"] == out and env["NIX_BUILD_TOP"] == env["TMPDIR"] == "/build"
    assert env["HOME"] == "/build" and env["NIX_STORE"] == "/nix/store" and env["message"] == "built in the image"
    assert "note" not in env and env["notePath"].startswith("/build/.attr-")
    # umoci reads the layout and applies the layers: the user, its home and the writable directories
    if shutil.which("umoci") is None:
        pytest.fail("umoci is missing: run `bash .ci/run`")
    tag = doc["reference"].split(":")[1]
    res = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:{tag}",
                          str(tmp_path / "bundle")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    unpacked = tmp_path / "bundle" / "rootfs"
    assert "nixbld:x:1000:1000:Build user:/build:" in (unpacked / "etc" / "passwd").read_text()
    assert "nixbld:!:1000:" in (unpacked / "etc" / "group").read_text()
    assert (unpacked / "nix-shell" / "rc").is_file() and os.access(unpacked / "nix-shell/bin/buildDerivation", os.X_OK)
    assert not os.path.exists(str(unpacked) + out)  # built in the image, not before
    # run as the image says: buildDerivation runs the builder, which writes $out into the image's store
    root = exported(capsys, f"oci:{tmp_path / 'layout'}:{tag}", tmp_path / "rootfs")
    assert oct((root / "tmp").stat().st_mode & 0o7777) == "0o1777"
    assert oct((root / "nix" / "store").stat().st_mode & 0o7777) == "0o1777"
    res = start(root, cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hook ran\n"
    made = root / out.lstrip("/")
    assert (made / "share" / "msg").read_text() == "hello\npassed as a file\nbuilt in the image\n"
    assert made.stat().st_uid == outside(1000)  # the build user made it
    # the inputs' closure, layered: busybox and the greeting in layers of their own, the rc file last
    names = []
    for layer in manifest["layers"]:
        with tarfile.open(tmp_path / "layout" / "blobs" / "sha256" / layer["digest"].split(":")[1]) as tf:
            names.append({m.name for m in tf})
    greeting = store_path(nix, "greeting").lstrip("/")
    assert any(f"{greeting}/greeting" in n for n in names[:-1]) and "nix-shell/rc" in names[-1]
    assert len(manifest["layers"]) == 3


def test_command_and_run_behave_as_nix_shells(nix, tmp_path, cache_dir, capsys):
    """--command runs in the interactive shell (its prompt set), --run in a non-interactive one; both
    after shellHook, and the shell's exit status is theirs."""
    drv = built_app(nix)
    probe = 'echo "flags=$-"; echo "prompt=$PS1"; echo "hook=$FROM_HOOK"; touch /tmp/t /build/b && echo wrote; exit 3'
    seen = {}
    for flag in ("--command", "--run"):
        layout = tmp_path / flag.strip("-")
        code, out, err = run(capsys, "build-shell", drv, flag, probe, "--oci", str(layout), "--tag", "t")
        assert code == 0, err
        _, config = config_of(layout)
        root = exported(capsys, f"oci:{layout}:t", tmp_path / f"root-{flag.strip('-')}")
        res = start(root, config["config"])
        assert res.returncode == 3, res.stderr
        seen[flag] = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        assert "wrote" in res.stdout.splitlines() and seen[flag]["hook"] == "yes"
    assert "i" in seen["--command"]["flags"] and "[nix-shell:" in seen["--command"]["prompt"]
    assert "i" not in seen["--run"]["flags"] and "nix-shell" not in seen["--run"]["prompt"]


def test_the_same_derivation_gives_the_same_image(nix, tmp_path, cache_dir, capsys, monkeypatch, target):
    drv = built_app(nix)
    digests = []
    for i in range(2):
        monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / f"cache{i}"))
        code, out, err = run(capsys, "build-shell", drv, "--oci", str(tmp_path / f"l{i}"), "--json")
        assert code == 0, err
        digests.append(json.loads(out)["manifestDigest"])
    assert digests[0] == digests[1]
    # pushed straight to a registry: the same manifest
    code, out, err = run(capsys, "build-shell", drv, "--push", f"{target.host}/shells/app:1", "--json")
    assert code == 0, err
    assert json.loads(out)["digest"] == digests[0]
    # the graph given instead of the store read: the same image; paths it holds beyond the inputs are left out
    graph = json.loads(nix_out("nix", "path-info", "--json", "--recursive", store_path(nix, "greeting"),
                               store_path(nix, "bb")))
    extra = tmp_path / "extra"
    (tmp_path / "graph.json").write_text(json.dumps(graph + [{"path": "/nix/store/" + "z" * 32 + "-unrelated",
                                                              "references": []}]))
    code, out, err = run(capsys, "build-shell", drv, "--graph", str(tmp_path / "graph.json"), "--oci",
                         str(extra), "--json")
    assert code == 0, err
    assert json.loads(out)["manifestDigest"] == digests[0]
    (tmp_path / "short.json").write_text(json.dumps([g for g in graph if "greeting" not in g["path"]]))
    code, out, err = run(capsys, "build-shell", drv, "--graph", str(tmp_path / "short.json"), "--oci",
                         str(tmp_path / "x"))
    assert code == 2 and "does not hold" in err and "greeting-1.0" in err and len(err.strip().splitlines()) == 1


def test_the_nix_functions_build_and_stream_the_image(nix, tmp_path, cache_dir, capsys):
    """buildNixShellImage: a docker-archive in the store, tagged as imageTag says; streamNixShellImage:
    a program streaming the same image; built from exportReferencesGraph inside a Nix build."""
    package = f'import {ROOT}/nix/local-package.nix {{ python = "{sys.executable}"; src = {ROOT}; }}'
    expr = (f"let p = import {nix}; s = import {ROOT}/nix/shell.nix {{ registry-tools = {package}; }}; in "
            f'{{ image = s.buildNixShellImage {{ drv = p.app; run = "buildDerivation"; }}; '
            f'stream = s.streamNixShellImage {{ drv = p.app; run = "buildDerivation"; }}; }}')
    (tmp_path / "images.nix").write_text(expr)
    archive = nix_out("nix-build", "--no-out-link", str(tmp_path / "images.nix"), "-A", "image")
    name, tag = (json.loads(nix_out("nix-instantiate", "--eval", "--json", str(tmp_path / "images.nix"), "-A",
                                    f"image.{a}")) for a in ("imageName", "imageTag"))
    assert name == "app-1.0-env" and len(tag) == 32
    with tarfile.open(archive) as tf:
        assert json.loads(tf.extractfile("manifest.json").read())[0]["RepoTags"] == [f"{name}:{tag}"]
    root = exported(capsys, f"docker-archive:{archive}", tmp_path / "rootfs")
    code, _, err = run(capsys, "copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'l'}:x")
    assert code == 0, err
    _, config = config_of(tmp_path / "l")
    res = start(root, config["config"])
    assert res.returncode == 0, res.stderr
    assert (root / store_path(nix, "app").lstrip("/") / "share" / "msg").read_text().startswith("hello\n")
    # the stream: the same image, uncompressed
    program = nix_out("nix-build", "--no-out-link", str(tmp_path / "images.nix"), "-A", "stream")
    streamed = tmp_path / "streamed.tar"
    with open(streamed, "wb") as f:
        res = subprocess.run([program], stdout=f, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, REGISTRY_TOOLS_CACHE=str(cache_dir)))
    assert res.returncode == 0, res.stderr
    with tarfile.open(streamed) as a, tarfile.open(archive) as b:
        ma, mb = (json.loads(t.extractfile("manifest.json").read())[0] for t in (a, b))
        assert a.extractfile(ma["Config"]).read() == b.extractfile(mb["Config"]).read()


def test_the_nix_function_passes_the_build_user_the_home_the_shell_and_the_command(nix, tmp_path, cache_dir,
                                                                                   capsys):
    """uid, gid, homeDirectory, shell and command given to buildNixShellImage reach the image: the user it
    runs as, its passwd and group entries, HOME (the working directory stays /build, as in nixpkgs),
    the shell that starts and the command the interactive shell runs."""
    package = f'import {ROOT}/nix/local-package.nix {{ python = "{sys.executable}"; src = {ROOT}; }}'
    expr = (f"let p = import {nix}; s = import {ROOT}/nix/shell.nix {{ registry-tools = {package}; }}; in "
            f's.buildNixShellImage {{ drv = p.app; uid = 4242; gid = 4343; homeDirectory = "/home/dev"; '
            f'shell = "${{p.bb}}/bin/sh"; command = "echo home=$HOME; echo dir=$(pwd); id -u; id -g"; }}')
    (tmp_path / "image.nix").write_text(expr)
    archive = nix_out("nix-build", "--no-out-link", str(tmp_path / "image.nix"))
    code, _, err = run(capsys, "copy", f"docker-archive:{archive}", f"oci:{tmp_path / 'l'}:x")
    assert code == 0, err
    _, config = config_of(tmp_path / "l")
    cfg = config["config"]
    assert cfg["User"] == "4242:4343" and cfg["WorkingDir"] == "/build"  # as nixpkgs: the sandbox's build dir
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["HOME"] == "/home/dev" and env["NIX_BUILD_TOP"] == "/build"
    assert cfg["Cmd"][0] == f"{store_path(nix, 'bb')}/bin/sh"
    root = exported(capsys, f"docker-archive:{archive}", tmp_path / "rootfs")
    assert "nixbld:x:4242:4343:Build user:/home/dev:" in (root / "etc" / "passwd").read_text()
    assert "nixbld:!:4343:" in (root / "etc" / "group").read_text()
    res = start(root, cfg)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "home=/home/dev" in lines and "dir=/build" in lines
    assert (root / "home" / "dev").is_dir()
    if confinement.ids().count > 1:  # as root the namespace maps the build user's ids; else they are ours
        assert lines[-2:] == ["4242", "4343"]


@pytest.mark.parametrize("case, code, words", [
    ("structured", 2, "__structuredAttrs"),
    ("unbuilt", 1, "is not in the store: build the inputs first"),
    ("not-a-drv", 2, "is not a derivation"),
    ("both", 2, "not allowed with argument"),
    ("no-shell", 2, "is not a shell: give the shell"),
    ("host-shell", 2, "is not in /nix/store"),
    ("bad-name", 2, "give another with --name"),
])
def test_bad_input_is_one_line(nix, tmp_path, cache_dir, capsys, case, code, words):
    argv = {"structured": [instantiate(nix, "structured")],
            "unbuilt": [instantiate(nix, "unbuilt")],
            "not-a-drv": [str(nix)],
            "both": [instantiate(nix, "greeting"), "--command", "a", "--run", "b"],
            "no-shell": [instantiate(nix, "viaBusybox")],
            "host-shell": [instantiate(nix, "greeting"), "--shell", "/bin/sh"],
            "bad-name": [instantiate(nix, "greeting"), "--name", "Not A Name"]}[case]
    got, _, err = run(capsys, "build-shell", *argv, "--oci", str(tmp_path / "o"))
    assert got == code and words in err and len(err.strip().splitlines()) == 1, err
