"""build: every spec key, the closure formats, layering, outputs read by podman/skopeo/umoci, reproducibility."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from registry_tools import cli
from registry_tools.builder.plan import plan_build
from registry_tools.builder.closure import Graph, auto_layers, by_popularity, parse_graph, popularity, popularity_layers
from registry_tools.errors import UsageError
from registry_tools.session import Session
from registry_tools.builder.spec import parse_spec

from .helpers import touch_and_chown
from .support.buildinputs import GRAPH, make_store, spec_file, write_graph
from .support.peakmem import PeakWatcher

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.fixture
def workdir(tmp_path, cache_dir):
    make_store(tmp_path)
    (tmp_path / "app" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, tmp_path / "app" / "bin" / "busybox")
    (tmp_path / "root1" / "etc").mkdir(parents=True)
    (tmp_path / "root1" / "etc" / "motd").write_text("hello\n")
    return tmp_path


def run(*args: str) -> tuple[int, str, str]:
    res = subprocess.run([sys.executable, "-m", "registry_tools", *args], capture_output=True, timeout=300)
    return res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")


def layer_tars(archive: Path) -> list[tarfile.TarFile]:
    tf = tarfile.open(archive)
    manifest = json.load(tf.extractfile("manifest.json"))
    return [tarfile.open(fileobj=io.BytesIO(tf.extractfile(n).read())) for n in manifest[0]["Layers"]]


def config_of(archive: Path) -> dict:
    tf = tarfile.open(archive)
    manifest = json.load(tf.extractfile("manifest.json"))
    return json.load(tf.extractfile(manifest[0]["Config"]))


# --- the layering algorithms ------------------------------------------------------------------

def letters() -> Graph:
    g = Graph()
    for p, r in [("A", ["B", "G"]), ("B", ["C", "E"]), ("C", ["D", "E"]), ("D", ["F"]), ("E", ["F"]),
                 ("F", []), ("G", [])]:
        g.add(p, r)
    return g


def test_popularity_scores_match_nixpkgs():
    """A-B-C-D-F, C-E-F, B-E, A-G."""
    assert popularity(letters()) == {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 9, "G": 2}
    assert by_popularity(letters())[:2] == ["F", "E"]


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 7, 20])
def test_every_path_in_exactly_one_layer(budget):
    g = letters()
    sizes = {p: (ord(p) * 37) % 101 for p in g.paths}
    for layers in (popularity_layers(g, budget), auto_layers(g, budget, sizes)):
        flat = [p for layer in layers for p in layer]
        assert sorted(flat) == g.paths and len(flat) == len(set(flat))
        assert 1 <= len(layers) <= budget


def test_more_paths_than_layers():
    g = letters()
    layers = popularity_layers(g, 3)
    assert layers[:2] == [["F"], ["E"]] and sorted(layers[2]) == ["A", "B", "C", "D", "G"]


def test_auto_owners_and_shared_sets():
    g = letters()
    sizes = {"A": 10, "B": 50, "C": 40, "D": 5, "E": 30, "F": 100, "G": 20}
    assert auto_layers(g, 3, sizes) == [["A", "G"], ["F"], ["B", "C", "D", "E"]]
    # with room for them, C and B own layers and E, reached by both, gets a layer of its own
    five = auto_layers(g, 5, sizes)
    assert ["E"] in five and ["C", "D"] in five and ["B"] in five


@pytest.mark.parametrize("form", ["list", "object", "export-json", "registration"])
def test_graph_formats(tmp_path, form):
    g = parse_graph(write_graph(tmp_path, form).read_text())
    assert {p: g.refs[p] for p in g.paths} == {p: sorted(r) for p, r in GRAPH.items()}
    assert g.roots() == ["/nix/store/dddd-app"]


def test_budget_counts_base_and_final_layers(workdir, registry, facts):
    base = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"  # 2 layers
    spec = parse_spec(json.loads(spec_file(workdir, fromImage=base, maxLayers=5).read_text()), workdir)
    with Session() as s:
        plan = plan_build(spec, s)
        # 5 = 2 base + 2 for the store paths and /opt/app + 1 final
        assert len(plan.base.layers) == 2 and len(plan.layers) == 3
    spec = parse_spec(json.loads(spec_file(workdir, fromImage=base, maxLayers=3).read_text()), workdir)
    with Session() as s, pytest.raises(UsageError, match="maxLayers"):
        plan_build(spec, s)


# --- outputs -----------------------------------------------------------------------------------

def test_docker_archive_loads_in_podman_and_reads_in_skopeo(workdir, tmp_path):
    code, out, err = run("build", str(spec_file(workdir)), "-o", str(tmp_path / "img.tar"), "-q")
    assert code == 0, err
    assert out.strip() == "example/app:1.0"
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{tmp_path / 'img.tar'}"],
                                     capture_output=True, check=True).stdout)
    assert info["Architecture"] == "amd64"
    store = Path(tempfile.mkdtemp(prefix="rtb-", dir="/tmp"))
    try:
        base = ["podman", "--storage-driver", "vfs", "--root", str(store / "r"), "--runroot", str(store / "rr")]
        res = subprocess.run(base + ["load", "-i", str(tmp_path / "img.tar")], capture_output=True, text=True)
        assert res.returncode == 0 and "example/app:1.0" in res.stdout, res.stderr
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_layer_contents_and_metadata(workdir, tmp_path):
    spec_file(workdir, uid=1000, gid=100, uname="app", gname="users", mtime="2020-05-06T07:08:09Z",
              created="2021-01-01T00:00:00Z")
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "img.tar"), "-q"]) == 0
    layers = layer_tars(tmp_path / "img.tar")
    names = [m.name for t in layers for m in t.getmembers()]
    # each store path at its own path, in exactly one layer
    for p in GRAPH:
        assert sum(1 for n in names if n.rstrip("/") == p.lstrip("/")) == 1
    for t in layers:
        members = t.getmembers()
        assert [m.name for m in members] == sorted((m.name for m in members), key=lambda n: n.encode())
        for m in members:
            assert m.mtime == 1588748889
            if m.name.rstrip("/") in ("nix", "nix/store"):
                assert m.isdir() and m.mode == 0o755
            if not (m.name.startswith("etc")):  # the final layer is checked below
                assert (m.uid, m.gid, m.uname, m.gname) == (1000, 100, "app", "users")
    link = next(m for t in layers for m in t.getmembers() if m.name.endswith("share/link"))
    assert link.issym() and link.linkname == "../lib/libfoo.so"
    cfg = config_of(tmp_path / "img.tar")
    assert cfg["created"] == "2021-01-01T00:00:00Z"
    assert cfg["config"]["Cmd"][0] == "/opt/app/bin/busybox" and cfg["config"]["Env"] == ["A=1"]
    assert len(cfg["rootfs"]["diff_ids"]) == len(layers) == len(cfg["history"])


def test_fakeroot_chown_shows_in_tar_header(workdir, tmp_path):
    spec_file(workdir, extraCommands="mkdir -p var/lib/app && echo made > var/lib/app/state",
              fakeRootCommands="chown -R 1000:1000 var/lib/app && chmod 0700 var/lib/app")
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "img.tar"), "-q"]) == 0
    final = layer_tars(tmp_path / "img.tar")[-1]
    by_name = {m.name.rstrip("/"): m for m in final.getmembers()}
    assert (by_name["var/lib/app"].uid, by_name["var/lib/app"].gid) == (1000, 1000)
    assert by_name["var/lib/app"].mode == 0o700
    assert (by_name["var/lib/app/state"].uid, by_name["var/lib/app/state"].gid) == (1000, 1000)
    assert by_name["etc/motd"].uid == 0  # untouched files stay root's
    assert final.extractfile("var/lib/app/state").read() == b"made\n"


def test_contents_merge_and_dirlinks(workdir, tmp_path):
    (workdir / "root2" / "usr" / "bin").mkdir(parents=True)
    os.symlink("usr/bin", workdir / "root2" / "bin")
    (workdir / "root3" / "bin").mkdir(parents=True)
    (workdir / "root3" / "bin" / "tool").write_text("tool")
    for keep, expect_link in ((True, True), (False, False)):
        spec_file(workdir, contents=["root1", "root2", "root3"], keepContentsDirlinks=keep)
        assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / f"{keep}.tar"), "-q"]) == 0
        final = {m.name.rstrip("/"): m for m in layer_tars(tmp_path / f"{keep}.tar")[-1].getmembers()}
        assert final["bin"].issym() == expect_link
        assert ("usr/bin/tool" in final) == expect_link and ("bin/tool" in final) == (not expect_link)


def test_oci_layout_reads_with_skopeo_and_runs_busybox(workdir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    code, out, err = run("build", str(spec_file(workdir)), "--oci", str(tmp_path / "layout"), "-q")
    assert code == 0, err
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{tmp_path / 'layout'}:1.0"],
                                     capture_output=True, check=True).stdout)
    assert len(info["Layers"]) >= 3
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:1.0", str(bundle)], check=True,
                   capture_output=True)
    args = json.loads((bundle / "config.json").read_text())["process"]["args"]
    res = subprocess.run(["chroot", str(bundle / "rootfs")] + args, capture_output=True, text=True)
    assert res.stdout.strip() == "hello from the image", res.stderr


def test_stream_starts_before_the_last_layer_and_stays_small(workdir, tmp_path):
    big = workdir / "big"
    big.mkdir()
    with open(big / "blob", "wb") as f:  # 300 MB of real bytes the packer must read
        chunk = os.urandom(1 << 20)
        for _ in range(300):
            f.write(chunk)
    spec_file(workdir, paths=[{"source": "big", "target": "/big"}])
    proc = subprocess.Popen([sys.executable, "-m", "registry_tools", "build", str(workdir / "spec.json"),
                             "--stream", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watcher = PeakWatcher(proc.pid)
    first = proc.stdout.read(512)
    still_running = proc.poll() is None
    out = tmp_path / "streamed.tar"
    with open(out, "wb") as f:
        f.write(first)
        shutil.copyfileobj(proc.stdout, f, 1 << 20)
    peak_kb = watcher.stop()
    assert proc.wait() == 0, proc.stderr.read().decode()
    assert first and still_running  # bytes flowed while layers were still being packed
    assert 0 < peak_kb // 1024 < 120  # MB: the 300 MB layer never sat in memory
    names = tarfile.open(out).getnames()
    assert names[-2:] == ["manifest.json", "repositories"]
    store = Path(tempfile.mkdtemp(prefix="rts-", dir="/tmp"))
    try:
        base = ["podman", "--storage-driver", "vfs", "--root", str(store / "r"), "--runroot", str(store / "rr")]
        with open(out, "rb") as f:  # as `… --stream | podman load` would
            res = subprocess.run(base + ["load"], stdin=f, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    finally:
        shutil.rmtree(store, ignore_errors=True)


@pytest.mark.parametrize("compressor,magic", [("gz", b"\x1f\x8b"), ("zstd", b"\x28\xb5\x2f\xfd"), ("none", b"")])
def test_compressors(workdir, tmp_path, compressor, magic):
    spec_file(workdir, compressor=compressor)
    assert cli.main(["build", str(workdir / "spec.json"), "--oci", str(tmp_path / "layout"), "-q"]) == 0
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    manifest = json.loads((tmp_path / "layout" / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    for layer in manifest["layers"]:
        data = (tmp_path / "layout" / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        if magic:
            assert data.startswith(magic)
        else:
            assert layer["mediaType"].endswith(".tar") and tarfile.open(fileobj=io.BytesIO(data))
        if compressor == "gz":
            assert data[4:8] == b"\0\0\0\0" and data[3] & 0x08 == 0  # gzip mtime 0, no file name


def test_from_image_docker_archive_and_layout_and_registry(workdir, tmp_path, registry, facts):
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    assert cli.main(["pull", ref, "-o", str(tmp_path / "base.tar"), "-q"]) == 0
    assert cli.main(["pull", ref, "--format", "oci", "-o", str(tmp_path / "base-layout"), "-q"]) == 0
    diffs = []
    for base in (str(tmp_path / "base.tar"), str(tmp_path / "base-layout"), ref):
        spec_file(workdir, fromImage=base, config={"Env": ["B=2"], "Cmd": ["/bin/sh"]})
        out = tmp_path / "from.tar"
        assert cli.main(["build", str(workdir / "spec.json"), "-o", str(out), "-q"]) == 0
        cfg = config_of(out)
        assert cfg["rootfs"]["diff_ids"][:2] == facts["single-gzip"]["diff_ids"]  # base layers come first
        assert cfg["config"]["Env"] == ["PATH=/usr/bin:/bin", "B=2"]  # only Env is inherited
        assert "User" not in cfg["config"]
        diffs.append(cfg["rootfs"]["diff_ids"])
    assert diffs[0] == diffs[1] == diffs[2]


def test_inherit_config(workdir, tmp_path, registry, facts):
    ref = f"{registry.host}/test/single-gzip@{facts['single-gzip']['manifest']}"
    spec_file(workdir, fromImage=ref, inheritConfig=True, config={"Env": ["PATH=/opt/bin"]})
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"]) == 0
    cfg = config_of(tmp_path / "x.tar")["config"]
    assert cfg["Cmd"] == ["/bin/sh"] and cfg["Env"] == ["PATH=/opt/bin"]


def test_default_tag_is_a_content_hash(workdir, tmp_path):
    spec_file(workdir, tag=None)
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "a.tar"), "-q"]) == 0
    tags = json.load(tarfile.open(tmp_path / "a.tar").extractfile("manifest.json"))[0]["RepoTags"]
    name, tag = tags[0].rsplit(":", 1)
    assert name == "example/app" and len(tag) == 32 and all(c in "0123456789abcdef" for c in tag)
    (workdir / "app" / "extra").write_text("changed")
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "b.tar"), "-q"]) == 0
    tags2 = json.load(tarfile.open(tmp_path / "b.tar").extractfile("manifest.json"))[0]["RepoTags"]
    assert tags2 != tags


def test_platform_and_now(workdir, tmp_path):
    spec_file(workdir, architecture="arm64", variant="v8", os="linux", created="now")
    before = time.time()
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"]) == 0
    cfg = config_of(tmp_path / "x.tar")
    assert (cfg["architecture"], cfg["os"], cfg["variant"]) == ("arm64", "linux", "v8")
    import datetime
    created = datetime.datetime.fromisoformat(cfg["created"].replace("Z", "+00:00")).timestamp()
    assert before - 2 <= created <= time.time() + 1


def test_popularity_layering_and_max_layers(workdir, tmp_path):
    spec_file(workdir, layering="popularity", maxLayers=3)
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"]) == 0
    layers = layer_tars(tmp_path / "x.tar")
    assert len(layers) == 3  # 1 most popular path, 1 with the rest, 1 final
    assert any(m.name.rstrip("/") == "nix/store/aaaa-base" for m in layers[0].getmembers())


@pytest.mark.parametrize("change,message", [
    ({"bogus": 1}, "bogus: unknown key"),
    ({"name": 5}, "name: must be a string"),
    ({"maxLayers": 126}, "maxLayers: must be between"),
    ({"maxLayers": "10"}, "maxLayers: must be a whole number"),
    ({"config": {"Cmd": "echo"}}, "config.Cmd: must be a list"),
    ({"config": {"Nope": 1}}, "config.Nope: unknown config key"),
    ({"uid": -1}, "uid: must be between"),
    ({"compressor": "xz"}, "compressor: must be one of"),
    ({"layering": "random"}, "layering: must be one of"),
    ({"created": "last tuesday"}, "created:"),
    ({"paths": [{"source": "missing", "target": "/x"}]}, "paths[0].source"),
    ({"paths": [{"source": "app", "target": "relative"}]}, "paths[0].target"),
    ({"closure": {"graph": "graph-list", "extra": 1}}, "closure.extra: unknown key"),
    ({"keepContentsDirlinks": "yes"}, "keepContentsDirlinks: must be true or false"),
])
def test_bad_specs_name_the_key(workdir, tmp_path, capsys, change, message):
    spec_file(workdir, **change)
    code = cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.tar").exists()


def test_failing_extra_commands(workdir, tmp_path, capsys):
    spec_file(workdir, extraCommands="echo oops >&2; exit 3")
    code = cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"])
    assert code == 1 and "extraCommands failed: oops" in capsys.readouterr().err
    assert not (tmp_path / "x.tar").exists()


@pytest.mark.parametrize("change,message", [
    ({"contents": None, "copyToRoot": 5}, "copyToRoot: must be a path or a list of paths"),
    ({"contents": None, "copyToRoot": ["missing"]}, "copyToRoot: "),
    ({"contents": 5}, "contents: must be a path or a list of paths"),
    ({"closure": "missing-graph"}, "closure: "),
])
def test_errors_name_the_alias_the_spec_wrote(workdir, tmp_path, capsys, change, message):
    """buildImage's copyToRoot is contents under another name, and a closure may be given as the path
    of its graph alone: an error names the key as written."""
    spec_file(workdir, **change)
    code = cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and f"build spec: {message}" in err and len(err.strip().splitlines()) == 1, err


def test_a_tree_error_while_building_names_copy_to_root(workdir, tmp_path, capsys):
    os.mkfifo(workdir / "root1" / "fifo")
    spec_file(workdir, contents=None, copyToRoot=["root1"])
    code = cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("registry-tools: copyToRoot: ") and "is a device, socket or FIFO" in err, err


FAKECHROOT_COMMANDS = """mkdir -p /usr/share/made
echo made > /etc/made
ln -s /etc/made /made-link
ln -s / /top
chown 1000:1000 /etc/made
cat /etc/motd > /etc/motd-copy
if command -v busybox >/dev/null; then echo found > /etc/busybox-found; fi
"""


def test_enable_fakechroot_runs_this_machines_tools_in_an_image_without_a_shell(workdir, tmp_path):
    """As nixpkgs runs them (its store excluded from the chroot): the commands' tools are this machine's,
    and every path they name is in the image's root, which has no shell."""
    if shutil.which("fakechroot") is None:
        pytest.fail("fakechroot is missing: run `bash .ci/run` (Debian's fakechroot)")
    spec_file(workdir, enableFakechroot=True, fakeRootCommands=FAKECHROOT_COMMANDS)
    assert not os.path.lexists(workdir / "root1" / "bin")
    code, _, err = run("build", str(workdir / "spec.json"), "-o", str(tmp_path / "img.tar"), "-q")
    assert code == 0, err
    final = {m.name.rstrip("/"): m for m in layer_tars(tmp_path / "img.tar")[-1].getmembers()}
    assert final["usr/share/made"].isdir() and (final["etc/made"].uid, final["etc/made"].gid) == (1000, 1000)
    assert final["made-link"].linkname == "/etc/made" and final["top"].linkname == "/"  # as the commands said
    assert layer_tars(tmp_path / "img.tar")[-1].extractfile("etc/motd-copy").read() == b"hello\n"
    assert "etc/busybox-found" not in final  # a static program would act on this machine: not on the PATH
    assert not os.path.lexists("/made-link") and not os.path.lexists("/usr/share/made")


def test_enable_fakechroot_refuses_a_static_shell(workdir, tmp_path, capsys, monkeypatch):
    static = tmp_path / "static"
    static.mkdir()
    os.symlink(BUSYBOX, static / "sh")
    monkeypatch.setenv("PATH", f"{static}:{os.environ['PATH']}")
    spec_file(workdir, enableFakechroot=True, fakeRootCommands="echo made > /etc/made")
    code = cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "this machine's sh, and it is not a dynamically linked program" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x.tar").exists()


# --- reproducibility ------------------------------------------------------------------------------

def test_same_spec_same_digests_anywhere(tmp_path):
    """Two copies of the inputs, touched and chowned differently, built under another umask,
    TZ, locale and temp dir, with a cold cache: the same manifest digest and archive bytes."""
    results = []
    for i, (umask, tz, lang) in enumerate([(0o022, "UTC", "C.UTF-8"), (0o077, "Asia/Kathmandu", "POSIX")]):
        work = tmp_path / f"w{i}"
        work.mkdir()
        make_store(work)
        (work / "app").mkdir()
        shutil.copy(BUSYBOX, work / "app" / "busybox")
        (work / "root1" / "etc").mkdir(parents=True)
        (work / "root1" / "etc" / "motd").write_text("hello\n")
        spec_file(work, paths=[{"source": "app", "target": "/opt/app"}],
                  extraCommands="mkdir -p var/empty && touch var/empty/.keep")
        touch_and_chown(work, i)
        (work / "tmp").mkdir()
        env = dict(os.environ, TZ=tz, LC_ALL=lang, LANG=lang, TMPDIR=str(work / "tmp"),
                   REGISTRY_TOOLS_CACHE=str(work / "cache"))
        out = {}
        for args, _key in ((["--oci", str(work / "layout")], "oci"), (["-o", str(work / "img.tar")], "tar")):
            res = subprocess.run([sys.executable, "-m", "registry_tools", "build", str(work / "spec.json"), *args],
                                 capture_output=True, text=True, env=env, cwd=work,
                                 preexec_fn=lambda u=umask: os.umask(u))
            assert res.returncode == 0, res.stderr
        out["manifest"] = json.loads((work / "layout" / "index.json").read_text())["manifests"][0]["digest"]
        out["tar"] = hashlib.sha256((work / "img.tar").read_bytes()).hexdigest()
        results.append(out)
    assert results[0] == results[1]


def test_mtime_now(workdir, tmp_path):
    spec_file(workdir, mtime="now")
    before = int(time.time())
    assert cli.main(["build", str(workdir / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"]) == 0
    for t in layer_tars(tmp_path / "x.tar"):
        for m in t.getmembers():
            assert before - 2 <= m.mtime <= time.time() + 1


def test_default_max_layers_is_100(tmp_path, cache_dir):
    store = tmp_path / "store"
    graph = []
    for i in range(150):  # a chain, so every path is in the closure of the first
        name = f"{i:04d}aaaa-pkg{i}"
        (store / name).mkdir(parents=True)
        (store / name / "f").write_bytes(b"x" * (i + 1))
        refs = [f"/nix/store/{i + 1:04d}aaaa-pkg{i + 1}"] if i < 149 else []
        graph.append({"path": f"/nix/store/{name}", "references": refs, "narSize": 1000 - i})
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "spec.json").write_text(json.dumps({"name": "many", "tag": "t", "layering": "popularity",
                                                     "closure": {"graph": "graph.json", "realStoreDir": "store"}}))
    assert cli.main(["build", str(tmp_path / "spec.json"), "-o", str(tmp_path / "x.tar"), "-q"]) == 0
    layers = layer_tars(tmp_path / "x.tar")
    assert len(layers) == 100  # 99 for the 150 store paths (the last holds 52 of them) and the final layer
    stored = [m.name for t in layers for m in t.getmembers() if m.name.count("/") == 2 and m.isdir()]
    assert len(stored) == len(set(stored)) == 150
