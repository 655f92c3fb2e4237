"""The Nix fetcher with a real Nix (Debian's nix-bin, no nixpkgs): fixed-output derivations built
from our pins against the local registry, Nix's own hash check, and the prefetch output as Nix."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from registry_tools.model.digest import parse_output_hash, sri

from .helpers import ROOT, run

# allow-import-from-derivation off: every fetcher here evaluates without building anything first (a
# lock is read at evaluation time, as a file), as Hydra and nixpkgs' own evaluation require.
NIX_CONFIG = "\n".join(["build-users-group =", "sandbox = false", "substituters =",
                        "experimental-features = nix-command", "allow-import-from-derivation = false"])


@pytest.fixture
def nix(monkeypatch):
    if shutil.which("nix-build") is None:
        pytest.fail("nix-build is missing: run `bash .ci/run` (Debian's nix-bin)", pytrace=False)
    monkeypatch.setenv("NIX_CONFIG", NIX_CONFIG)
    return monkeypatch


def fetchers() -> str:
    """A Nix expression of the fetchers over registry-tools built from this checkout."""
    return (f"(import {ROOT}/nix/fetcher.nix {{ registry-tools = import {ROOT}/nix/local-package.nix "
            f"{{ python = \"{sys.executable}\"; src = {ROOT}; }}; }})")


def nix_build(expr: str, tmp_path, name: str = "result") -> subprocess.CompletedProcess:
    return subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive", "oci"])
def test_pull_image_builds_the_pin_prefetch_printed(registry, nix, fmt, cache_dir, tmp_path, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", "linux/arm64",
                         "--format", fmt)
    assert code == 0, err
    (tmp_path / "pin.nix").write_text(out)
    code, out_json, _ = run(capsys, "prefetch", f"{registry.host}/test/multi:v1", "--platform", "linux/arm64",
                            "--format", fmt, "--json")
    pin = json.loads(out_json)
    # the Nix form evaluates to exactly the JSON form
    ev = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", str(tmp_path / "pin.nix")],
                        capture_output=True, text=True, check=True)
    assert json.loads(ev.stdout) == pin
    res = nix_build(f"{fetchers()}.pullImage (import {tmp_path}/pin.nix)", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    path = res.stdout.strip().splitlines()[-1]
    if fmt == "oci":
        got = subprocess.run(["nix", "hash", "path", path], capture_output=True, text=True, check=True).stdout.strip()
        assert got == pin["hash"]  # our hash of a layout is Nix's own hash of the directory
        assert (json.loads(open(os.path.join(path, "index.json")).read())["manifests"][0]["digest"] ==
                pin["manifestDigest"])
    else:
        assert sri(hashlib.sha256(open(path, "rb").read()).digest()) == pin["hash"]


def test_a_changed_hash_fails_with_nixs_own_error(registry, nix, facts, cache_dir, tmp_path, capsys):
    code, out, err = run(capsys, "prefetch", f"{registry.host}/test/single-gzip:v1", "--json")
    pin = json.loads(out)
    raw = bytearray(parse_output_hash(pin["hash"]))
    raw[0] ^= 1
    pin["hash"] = sri(bytes(raw))
    (tmp_path / "pin.json").write_text(json.dumps(pin))
    res = nix_build(f"{fetchers()}.pullImage (builtins.fromJSON (builtins.readFile {tmp_path}/pin.json))", tmp_path)
    assert res.returncode != 0
    assert "hash mismatch in fixed-output derivation" in res.stderr, res.stderr[-2000:]


def test_images_from_lock_builds_every_entry(registry, nix, facts, cache_dir, tmp_path, capsys):
    (tmp_path / "images.txt").write_text(f"{registry.host}/test/single-gzip:v1\n"
                                         f"{registry.host}/test/multi:v1 linux/arm/v7\n"
                                         f"{registry.host}/test/multi:v1 all\n")
    code, out, err = run(capsys, "prefetch", "--from", str(tmp_path / "images.txt"), "--format", "oci-archive",
                         "--json")
    assert code == 0, err
    (tmp_path / "images.lock.json").write_text(out)
    res = nix_build(f"{fetchers()}.imagesFromLock {tmp_path}/images.lock.json", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    paths = res.stdout.split()
    pins = json.loads(out)["images"]
    assert len(paths) == len(pins) == 3
    for path, pin in zip(paths, pins, strict=True):
        assert sri(hashlib.sha256(open(path, "rb").read()).digest()) == pin["hash"]


def test_the_build_wrapper_pushes_store_paths_without_a_tarball_in_the_store(registry, nix, cache_dir, tmp_path,
                                                                              capsys):
    """buildLayeredImage-style arguments: the spec from exportReferencesGraph, and an app pushing it."""
    from .support.registry import LocalRegistry

    pkgs = tmp_path / "pkgs.nix"
    pkgs.write_text('''
let
  mk = name: script: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh";
                                  PATH = "/usr/bin:/bin"; args = [ "-c" script ]; };
  lib = mk "libgreet-1.2" "mkdir -p $out/lib; echo greetings > $out/lib/greet.txt";
  app = mk "hello-2.12.1" "mkdir -p $out/bin; printf '#!/bin/sh\\\\ncat ${lib}/lib/greet.txt\\\\n' > $out/bin/hello; chmod +x $out/bin/hello";
  tool = mk "entry-0.1" "mkdir -p $out/bin; echo tool > $out/bin/entry";
in { inherit lib app tool; }
''')
    expr = (f"let p = import {pkgs}; b = import {ROOT}/nix/build.nix {{ registry-tools = import "
            f"{ROOT}/nix/local-package.nix {{ python = \"{sys.executable}\"; src = {ROOT}; }}; }}; in "
            f"b {{ name = \"example/nixapp\"; tag = \"1\"; contents = [ p.app ]; "
            f"config = {{ Cmd = [ \"${{p.app}}/bin/hello\" ]; Entrypoint = [ \"${{p.tool}}/bin/entry\" ]; }}; "
            f"architecture = \"amd64\"; }}")
    res = subprocess.run(["nix-build", "--no-out-link", "-E", f"({expr}).push"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    push = res.stdout.strip().splitlines()[-1] + "/bin/push-image"
    spec_dir = subprocess.run(["nix-build", "--no-out-link", "-E", f"({expr}).spec"], capture_output=True,
                              text=True, cwd=tmp_path, check=True).stdout.strip()
    spec = json.loads(open(os.path.join(spec_dir, "spec.json")).read())
    app, lib, tool = (subprocess.run(["nix-instantiate", "--eval", "--json", "-E", f"toString (import {pkgs}).{n}"],
                                     capture_output=True, text=True, check=True).stdout.strip().strip('"')
                      for n in ("app", "lib", "tool"))
    assert spec["config"]["Cmd"] == [f"{app}/bin/hello"] and spec["contents"] == [app]
    graph = open(os.path.join(spec_dir, "graph")).read()
    assert app in graph and lib in graph and tool in graph  # what only the config names is in the closure too
    (config_file,) = spec["closure"]["exclude"]
    reg = LocalRegistry(tmp_path / "reg").start()
    try:
        out = subprocess.run([push, f"{reg.host}/nixapp/img:1", "--json"], capture_output=True, text=True,
                             env=dict(os.environ, REGISTRY_TOOLS_CACHE=str(cache_dir)))
        assert out.returncode == 0, out.stderr
        layout = tmp_path / "pulled"
        code, _, err = run(capsys, "copy", f"{reg.host}/nixapp/img:1", f"oci:{layout}:x")
        assert code == 0, err
        names = subprocess.run(["sh", "-c", f"for f in {layout}/blobs/sha256/*; do tar -tzf $f 2>/dev/null; done"],
                               capture_output=True, text=True).stdout
        assert app.lstrip("/") + "/bin/hello" in names and lib.lstrip("/") + "/lib/greet.txt" in names
        assert tool.lstrip("/") + "/bin/entry" in names and config_file.lstrip("/") not in names
    finally:
        reg.stop()
    # no image tarball went into the store
    assert not [p for p in os.listdir("/nix/store") if p.endswith(".tar") and "nixapp" in p]


def test_credentials_reach_the_fetcher_through_impure_environment_variables(registry, nix, cache_dir, tmp_path,
                                                                              capsys):
    """As nixpkgs' fetchers do: REGISTRY_AUTH_FILE from the caller's environment (impureEnvVars)."""
    import base64

    from .support.registry import LocalRegistry
    from .support.tokenserver import htpasswd_config

    reg = LocalRegistry(tmp_path / "auth-reg",
                        extra_config=htpasswd_config(tmp_path / "htpasswd", {"ci": "pw-for-nix"})).start()
    try:
        code, _, err = run(capsys, "copy", f"{registry.host}/test/single-gzip:v1", f"{reg.host}/private/app:1",
                           "--creds", "ci:pw-for-nix")
        assert code == 0, err
        code, out, err = run(capsys, "prefetch", f"{reg.host}/private/app:1", "--creds", "ci:pw-for-nix")
        assert code == 0, err
        (tmp_path / "pin.nix").write_text(out)
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"ci:pw-for-nix").decode()}}}))
        expr = f"{fetchers()}.pullImage (import {tmp_path}/pin.nix)"
        env = dict(os.environ, REGISTRY_AUTH_FILE=str(tmp_path / "missing.json"))
        res = subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=600)
        assert res.returncode != 0 and "registry-tools login" in res.stderr  # no credentials: refused
        env["REGISTRY_AUTH_FILE"] = str(auth)
        res = subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
    finally:
        reg.stop()


def test_a_ca_directory_reaches_the_fetcher_through_ssl_cert_dir(nix, cache_dir, tmp_path, capsys):
    """A registry whose CA only a hashed directory holds (as /etc/ssl/certs does): the fetcher
    trusts it through the caller's SSL_CERT_DIR (impureEnvVars), and refuses it without."""
    from .support.certs import make_ca_and_server
    from .support.imagegen import single_arch_layout
    from .support.registry import LocalRegistry, skopeo_push_layout_tls
    from .test_tls import _subject_hash

    ca, cert, key = make_ca_and_server(tmp_path / "certs")
    reg = LocalRegistry(tmp_path / "tls-registry",
                        extra_config=f"  tls:\n    certificate: {cert}\n    key: {key}\n").start(scheme="https", ca=ca)
    try:
        single_arch_layout(tmp_path / "layout")
        skopeo_push_layout_tls(tmp_path / "layout", "v1", f"{reg.host}/tls/app:v1", ca)
        code, out, err = run(capsys, "prefetch", f"{reg.host}/tls/app:v1", "--ca-file", str(ca))
        assert code == 0, err
        (tmp_path / "pin.nix").write_text(out)
        hashed, empty = tmp_path / "hashed", tmp_path / "empty"
        hashed.mkdir()
        empty.mkdir()
        shutil.copy(ca, hashed / f"{_subject_hash(ca)}.0")
        expr = f"{fetchers()}.pullImage (import {tmp_path}/pin.nix)"
        env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "NIX_SSL_CERT_FILE")}
        for listed, ok in ((str(empty), False), (f"{empty}:{hashed}", True)):
            env["SSL_CERT_DIR"] = listed
            res = subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True, text=True,
                                 env=env, cwd=tmp_path, timeout=600)
            if ok:
                assert res.returncode == 0, res.stderr[-2000:]
            else:
                assert res.returncode != 0 and "certificate" in res.stderr.lower(), res.stderr[-2000:]
    finally:
        reg.stop()


def test_include_nix_db_is_read_back_by_nix(nix, cache_dir, tmp_path, capsys):
    """includeNixDB: `nix path-info` on the unpacked root lists every path with its NAR hash, and
    `nix-store --verify --check-contents` on it passes."""
    from registry_tools.formats.nar import nar_sha256
    from registry_tools.model.digest import nix32_encode

    names = {"app": "a" * 32 + "-app-1.0", "lib": "b" * 32 + "-lib-2.1", "data": "c" * 32 + "-data"}
    files = {"app": {"bin/app": (b"#!/bin/sh\necho app\n", 0o755)}, "lib": {"lib/libx.so": (b"x" * 3000, 0o444)},
             "data": {"share/d.bin": (bytes(range(256)), 0o444)}}
    store = {}
    for key, name in names.items():
        for rel, (data, mode) in files[key].items():
            f = tmp_path / "store" / name / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
            f.chmod(mode)
        store[name] = tmp_path / "store" / name
    p = {k: f"/nix/store/{n}" for k, n in names.items()}
    GRAPH = {p["app"]: [p["lib"], p["data"]], p["lib"]: [], p["data"]: []}
    graph = [{"path": path, "references": refs} for path, refs in GRAPH.items()]
    graph[0]["narHash"] = "sha256:" + nix32_encode(nar_sha256(str(store[names["app"]])))
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "spec.json").write_text(json.dumps({
        "name": "example/nixdb", "tag": "1", "architecture": "amd64", "includeNixDB": True,
        "closure": {"graph": "graph.json", "realStoreDir": "store"}}))
    code, out, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "layout"), "--json")
    assert code == 0, err
    first = json.loads(out)["manifestDigest"]
    code, _, err = run(capsys, "export", f"oci:{tmp_path / 'layout'}:1", "-o", str(tmp_path / "rootfs.tar"))
    assert code == 0, err
    root = tmp_path / "rootfs"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "rootfs.tar"), "-C", str(root)], check=True)
    store_uri = f"local?root={root}"
    res = subprocess.run(["nix", "path-info", "--store", store_uri, "--json", "--all"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    infos = {i["path"]: i for i in json.loads(res.stdout)}
    assert set(infos) == set(GRAPH)
    for p in GRAPH:
        expected = sri(nar_sha256(str(store[p.rsplit("/", 1)[1]])))
        assert infos[p]["narHash"] == expected
        assert sorted(infos[p]["references"]) == sorted(GRAPH[p])
    res = subprocess.run(["nix-store", "--store", store_uri, "--verify", "--check-contents"], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "hash mismatch" not in res.stderr, res.stderr
    # the same spec again: the same image (the database is written deterministically)
    code, out, err = run(capsys, "build", str(tmp_path / "spec.json"), "--oci", str(tmp_path / "again"), "--json")
    assert json.loads(out)["manifestDigest"] == first


# --- layer pins: a fixed-output derivation a blob, the image assembled from them -------------------

def nix_eval(expr: str, tmp_path):
    res = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr], capture_output=True,
                         text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def fresh_image(tmp_path, dest: str, shared=None, creds: str | None = None):
    """An image of bytes no earlier run made (so no store path holds its blobs yet), pushed to `dest`;
    `shared`: a layer it has below its own. Returns (the layout, its own layer)."""
    from .support import imagegen
    from .support.registry import skopeo_push_layout

    lay = imagegen.Layout()
    own = lay.layer({"data/fresh": os.urandom(30000)}, "gzip")
    layers = [own]
    if shared is not None:
        lay.add(shared[0])
        layers = [shared, own]
    img = lay.image(layers)
    lay.tag(img, "v1")
    where = tmp_path / dest.replace("/", "_").replace(":", "_")
    skopeo_push_layout(lay.write(where), "v1", dest, all_images=False, creds=creds)
    return lay, own


def both_pins(capsys, ref: str, *args: str) -> tuple[dict, dict]:
    code, full, err = run(capsys, "prefetch", ref, *args, "--json", "-q")
    assert code == 0, err
    code, layers, err = run(capsys, "prefetch", ref, *args, "--layers", "--json", "-q")
    assert code == 0, err
    return json.loads(full), json.loads(layers)


def file_sri(path: str) -> str:
    return sri(hashlib.sha256(open(path, "rb").read()).digest())


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_assemble_image_builds_the_bytes_of_the_full_pin(registry, nix, fmt, cache_dir, tmp_path, capsys):
    ref = f"{registry.host}/test/multi:v1"
    full, layers = both_pins(capsys, ref, "--platform", "linux/arm/v7", "--format", fmt)
    code, out, err = run(capsys, "prefetch", ref, "--platform", "linux/arm/v7", "--format", fmt, "--layers", "-q")
    assert code == 0, err
    (tmp_path / "pin.nix").write_text(out)
    assert nix_eval(f"import {tmp_path}/pin.nix", tmp_path) == layers  # the Nix form is the JSON form
    res = nix_build(f"{fetchers()}.assembleImage (import {tmp_path}/pin.nix)", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    path = res.stdout.strip().splitlines()[-1]
    if fmt == "oci":
        got = subprocess.run(["nix", "hash", "path", path], capture_output=True, text=True, check=True).stdout.strip()
    else:
        got = file_sri(path)
    assert got == full["hash"]  # the same sha256 as the full pin: the two kinds agree
    blobs = nix_eval(f"({fetchers()}.assembleImage (import {tmp_path}/pin.nix)).blobList", tmp_path).split()
    m = layers["manifests"][0]
    names = [m["digest"], m["config"]["digest"]] + [b["digest"] for b in m["layers"]]
    assert [p.split("-", 1)[1] for p in blobs] == ["sha256-" + d.split(":")[1] for d in names]  # named by digest


def test_images_from_lock_takes_both_kinds_of_pin(registry, nix, cache_dir, tmp_path, capsys):
    (tmp_path / "images.txt").write_text(f"{registry.host}/test/single-zstd:v1\n"
                                         f"{registry.host}/test/multi:v1 all\n")
    code, full, err = run(capsys, "prefetch", "--from", str(tmp_path / "images.txt"), "--format", "oci-archive",
                          "--json")
    assert code == 0, err
    code, layers, err = run(capsys, "prefetch", "--from", str(tmp_path / "images.txt"), "--format", "oci-archive",
                            "--json", "--layers")
    assert code == 0, err
    full_pins, layer_pins = json.loads(full)["images"], json.loads(layers)["images"]
    mixed = [layer_pins[0], full_pins[1], layer_pins[1]]
    (tmp_path / "mixed.lock.json").write_text(json.dumps({"version": 1, "images": mixed}))
    res = nix_build(f"{fetchers()}.imagesFromLock {tmp_path}/mixed.lock.json", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    paths = res.stdout.split()
    assert [file_sri(p) for p in paths] == [full_pins[0]["hash"], full_pins[1]["hash"], full_pins[1]["hash"]]


def test_two_images_sharing_a_layer_share_its_store_path(registry, target, nix, cache_dir, tmp_path, capsys):
    from .support import imagegen

    base = imagegen.Layout().layer({"data/base": os.urandom(30000)}, "gzip")
    for name in ("one", "two"):
        fresh_image(tmp_path, f"{target.host}/share/{name}:v1", shared=base)
    hexd = base[0].digest.split(":")[1]
    store_paths = []
    for name in ("one", "two"):
        _, layers = both_pins(capsys, f"{target.host}/share/{name}:v1")
        (tmp_path / f"{name}.json").write_text(json.dumps(layers))
        expr = f"{fetchers()}.assembleImage (builtins.fromJSON (builtins.readFile {tmp_path}/{name}.json))"
        mark = target.log_offset()
        res = nix_build(expr, tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        fetched = [u for m, u in target.requests_since(mark) if m == "GET" and u.endswith(base[0].digest)]
        assert len(fetched) == (1 if name == "one" else 0)  # the second image's build fetches it no more
        store_paths.append([p for p in nix_eval(f"({expr}).blobList", tmp_path).split()
                            if p.endswith(f"-sha256-{hexd}")])
    assert store_paths[0] == store_paths[1] and len(store_paths[0]) == 1
    assert os.path.isfile(store_paths[0][0])
    assert [p for p in os.listdir("/nix/store") if p.endswith(f"-sha256-{hexd}")] == \
        [os.path.basename(store_paths[0][0])]  # one store path for the layer both images list


def test_a_damaged_blob_fails_with_nixs_own_hash_mismatch(target, nix, cache_dir, tmp_path, capsys):
    _, own = fresh_image(tmp_path, f"{target.host}/dmg/app:v1")
    _, layers = both_pins(capsys, f"{target.host}/dmg/app:v1")
    hexd = own[0].digest.split(":")[1]
    stored = target.root / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    (tmp_path / "pin.json").write_text(json.dumps(layers))
    expr = f"{fetchers()}.assembleImage (builtins.fromJSON (builtins.readFile {tmp_path}/pin.json))"
    res = nix_build(expr, tmp_path)
    assert res.returncode != 0
    assert "hash mismatch in fixed-output derivation" in res.stderr, res.stderr[-2000:]
    assert f"sha256-{hexd}.drv" in res.stderr  # the derivation Nix names is the blob's
    assert not os.path.exists(nix_eval(f"({expr}).outPath", tmp_path))  # nothing was assembled


def test_layer_pin_credentials_reach_the_blob_fetches_through_impure_variables(nix, cache_dir, tmp_path, capsys):
    import base64

    from .support.registry import LocalRegistry
    from .support.tokenserver import htpasswd_config

    reg = LocalRegistry(tmp_path / "auth-reg",
                        extra_config=htpasswd_config(tmp_path / "htpasswd", {"ci": "pw-for-nix"})).start()
    try:
        fresh_image(tmp_path, f"{reg.host}/private/app:v1", creds="ci:pw-for-nix")
        full, layers = both_pins(capsys, f"{reg.host}/private/app:v1", "--creds", "ci:pw-for-nix")
        (tmp_path / "pin.json").write_text(json.dumps(layers))
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {reg.host: {"auth": base64.b64encode(b"ci:pw-for-nix").decode()}}}))
        expr = f"{fetchers()}.assembleImage (builtins.fromJSON (builtins.readFile {tmp_path}/pin.json))"
        env = dict(os.environ, REGISTRY_AUTH_FILE=str(tmp_path / "missing.json"))
        res = subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=600)
        assert res.returncode != 0 and "registry-tools login" in res.stderr  # no credentials: refused
        env["REGISTRY_AUTH_FILE"] = str(auth)
        res = subprocess.run(["nix-build", "--no-out-link", "-E", expr], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        assert file_sri(res.stdout.strip().splitlines()[-1]) == full["hash"]
    finally:
        reg.stop()
