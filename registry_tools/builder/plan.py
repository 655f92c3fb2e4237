"""Planning a build: which files go in which layer, owned by whom, identified by their inputs.

Inputs are store paths of a reference graph (each directly in the store), `paths`
entries, and the final layer: `contents` trees merged at `/` (links resolved as in a
chroot, never leading outside the build root; devices, sockets and FIFOs refused),
then `extraCommands` and `fakeRootCommands` run there. A failure while planning
removes the temporary root it made.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from registry_tools.builder import confinement, fakechroot
from registry_tools.builder.base import BaseImage, load_base
from registry_tools.builder.closure import Graph, auto_layers, parse_graph, popularity_layers
from registry_tools.builder.contents import merge_tree
from registry_tools.builder.pack import Entry, Owner, collect, owned, tar_size, with_parents
from registry_tools.builder.spec import BuildSpec
from registry_tools.errors import RegistryToolsError, UsageError
from registry_tools.session import Session
from registry_tools.store.layers import CACHE_FORMAT


class BuildError(RegistryToolsError):
    pass


@dataclass
class LayerPlan:
    """One layer to pack: its entries, who owns them, and what identifies its inputs."""

    entries: list[Entry]
    owner: Owner
    comment: str
    key: str  # a hash of everything the layer's bytes depend on

    def size(self, mtime: int) -> int:
        """The exact size of the layer's tar (it builds every header: for streaming)."""
        return tar_size(self.entries, self.owner, mtime)

    @property
    def portable(self) -> bool:
        """The key names the bytes on any machine: no file's identity came from its mtime or inode
        (store paths are content-named and immutable), so another machine may reuse the layer."""
        return all(e.stamp == 0 for e in self.entries)

    @property
    def weight(self) -> int:
        """Bytes of file content: enough to order the work by."""
        return sum(e.size for e in self.entries)


@dataclass
class Plan:
    spec: BuildSpec
    base: BaseImage | None
    layers: list[LayerPlan] = field(default_factory=list)
    workdir: Path | None = None  # holds the final layer's files; removed by close()
    closure: Graph | None = None  # the store paths of the closure (for includeNixDB)

    def close(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


# --- planning -------------------------------------------------------------------------------

def _input_key(plan_entries: list[Entry], owner: Owner, mtime: int) -> str:
    """What the layer's bytes depend on: names, kinds, modes, sizes, links, owners, mtime, and
    for files that are not in an immutable store, their modification times (Entry.stamp)."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, owner.uid, owner.gid, owner.uname, owner.gname, mtime]).encode())
    for e in plan_entries:
        o = e.owner or owner
        h.update(json.dumps([e.name, e.kind, e.mode, e.size, e.link, o.uid, o.gid, e.stamp]).encode())
    return h.hexdigest()


def plan_build(spec: BuildSpec, session: Session) -> Plan:
    """The layers to pack; a failure while planning leaves no temporary files behind."""
    base = load_base(spec.from_image, spec.platform, spec.compressor, session) if spec.from_image else None
    plan = Plan(spec, base)
    try:
        return _plan(spec, plan, session)
    except BaseException:
        plan.close()
        raise


def _store_name(path: str, store_dir: str) -> str:
    """The name of a path directly in the store ('..', '.', hidden and nested names refused)."""
    name = path[len(store_dir) + 1:] if path.startswith(store_dir + "/") else ""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise UsageError(f"build spec: closure: {path!r} is not a path directly in {store_dir}")
    return name


def _plan(spec: BuildSpec, plan: Plan, session: Session) -> Plan:
    base = plan.base
    owner = Owner(spec.uid, spec.gid, spec.uname, spec.gname)
    budget = spec.max_layers - (len(base.layers) if base else 0) - 1
    if budget < 1:
        raise UsageError(f"build spec: maxLayers: {spec.max_layers} leaves no room: the base image has "
                         f"{len(base.layers) if base else 0} layers and the final layer needs one")

    # Nodes to layer: store paths of the closure, and each `paths` entry.
    graph = Graph()
    sources: dict[str, tuple[str, str, bool]] = {}  # node -> (source, target, immutable)
    roots: list[str] | None = None
    if spec.closure:
        c = spec.closure
        try:
            text = c.graph.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"build spec: closure.graph: {e.strerror}") from None
        g = parse_graph(text, str(c.graph)).without(c.exclude)
        for path in g.paths:
            real = str(c.real_store_dir / _store_name(path, c.store_dir))
            if not os.path.lexists(real):
                raise UsageError(f"build spec: closure: {path} is not on this machine (looked for {real})")
            sources[path] = (real, path, True)
        plan.closure = Graph({p: list(r) for p, r in g.refs.items()}, dict(g.sizes), dict(g.nar_hashes))
        if spec.include_store_paths:
            graph = g
            roots = list(c.roots) if c.roots is not None else None
        else:  # includeStorePaths = false: the closure is known (includeNixDB), not put in the image
            sources.clear()
    for p in spec.paths:
        node = f"path:{p.target}"
        graph.add(node, [], None)
        sources[node] = (str(p.source), p.target, False)
        if roots is not None:
            roots.append(node)
    if sources:
        # Each input is walked once: its entries give its size too (unless the graph records it).
        collected = {n: collect(src, target, stamps=not immutable) for n, (src, target, immutable) in sources.items()}
        sizes = {n: graph.sizes.get(n) or sum(e.size for e in collected[n]) for n in sources}
        if spec.layering == "single":
            groups = [sorted(sources)]
        elif spec.layering == "popularity":
            groups = popularity_layers(graph, budget, roots)
        else:
            groups = auto_layers(graph, budget, sizes)
        for group in groups:
            entries = with_parents([e for node in group for e in collected[node]])
            more = f" and {len(group) - 3} more" if len(group) > 3 else ""
            label = ", ".join(sources[n][1] for n in group[:3]) + more
            plan.layers.append(LayerPlan(entries, owner, label, _input_key(entries, owner, spec.mtime)))
    plan.layers.append(_final_layer(spec, owner, plan))
    if spec.layering == "single":  # buildImage: everything in one layer (the final layer's files last)
        entries = with_parents([e for lp in plan.layers for e in lp.entries])
        plan.layers = [LayerPlan(entries, owner, "single layer", _input_key(entries, owner, spec.mtime))]
    if spec.run_as_root:
        plan.layers.append(_run_as_root(spec, plan, owner, session))
    return plan


def _run_as_root(spec: BuildSpec, plan: Plan, owner: Owner, session: Session) -> LayerPlan:
    from registry_tools.builder.runasroot import run_as_root

    if plan.workdir is None:
        plan.workdir = Path(tempfile.mkdtemp(prefix="registry-tools-build-"))
    entries = run_as_root(spec.run_as_root, plan.base.layers if plan.base else [],
                          [(lp.entries, lp.owner) for lp in plan.layers], session.cache, plan.workdir)
    # what the script made is new each time (its inodes and times): the key changes, the bytes do not
    return LayerPlan(entries, owner, "runAsRoot", _input_key(entries, owner, spec.mtime))


def _final_layer(spec: BuildSpec, owner: Owner, plan: Plan) -> LayerPlan:
    """contents merged at /, then extraCommands and fakeRootCommands run in it."""
    helpers = spec.fake_nss or spec.ca_certificates or spec.bin_sh or spec.usr_bin_env or spec.include_nix_db
    if not spec.contents and not spec.extra_commands and not spec.fake_root_commands and not helpers:
        return LayerPlan([], owner, "final layer", _input_key([], owner, spec.mtime))
    plan.workdir = Path(tempfile.mkdtemp(prefix="registry-tools-build-"))
    root = plan.workdir / "root"
    root.mkdir()
    if spec.include_nix_db and plan.closure is not None and spec.closure is not None:
        from registry_tools.builder.nixdb import write_nix_db

        c = spec.closure
        write_nix_db(root, plan.closure, lambda p: str(c.real_store_dir / _store_name(p, c.store_dir)))
    write_helpers(spec, root)  # first: the contents' own files win
    for tree in spec.contents:
        merge_tree(tree, root, root, spec.keep_contents_dirlinks, spec.contents_key)
    if spec.extra_commands:
        _run(["sh", "-ec", spec.extra_commands], root, "extraCommands", confined=True)
    # contents are copied with their times kept: with no commands run, the same contents give the
    # same key (the layer is found in the cache, not packed again; the platforms of a build share it)
    commands = bool(spec.extra_commands or spec.fake_root_commands)
    if spec.fake_root_commands:
        return _fake_root(spec, owner, plan, root)
    entries = with_parents(collect(str(root), "/", inodes=commands))
    return _layer(_with_owners(entries, spec.owners), owner, spec.mtime)


def _fake_root(spec: BuildSpec, owner: Owner, plan: Plan, root: Path) -> LayerPlan:
    """fakeRootCommands under fakeroot (with enableFakechroot, chrooted into the root by fakechroot),
    and the owners and modes they gave."""
    if shutil.which("fakeroot") is None:
        raise BuildError("fakeRootCommands need fakeroot (Debian's fakeroot package)")
    assert plan.workdir is not None
    state = plan.workdir / "fakeroot.state"
    command: list[str] = ["sh", "-ec", spec.fake_root_commands]
    env: dict[str, str] = {}
    if spec.enable_fakechroot:  # the commands see the image's root as /, using this machine's tools
        if shutil.which("fakechroot") is None:
            raise BuildError("enableFakechroot needs fakechroot (Debian's fakechroot package)")
        c = spec.closure
        store = c.store_dir if c is not None and c.real_store_dir == Path(c.store_dir) else None
        command, env = fakechroot.chrooted(root, plan.workdir, spec.fake_root_commands, store)
    _run(["fakeroot", "-s", str(state), "--", *command], root, "fakeRootCommands", confined=True, env=env)
    if spec.enable_fakechroot:
        fakechroot.unprefix_links(root)
    listing = _run(["fakeroot", "-i", str(state), "--", sys.executable, "-c", _LIST_OWNERS, str(root)],
                   root, "fakeroot listing")
    made = with_parents(collect(str(root), "/", inodes=True))  # what the commands made too
    entries = owned(made, {k: tuple(v) for k, v in json.loads(listing).items()}, owner)
    return _layer(_with_owners(entries, spec.owners), owner, spec.mtime)


def _layer(entries: list[Entry], owner: Owner, mtime: int) -> LayerPlan:
    return LayerPlan(entries, owner, "final layer", _input_key(entries, owner, mtime))


def _with_owners(entries: list[Entry], owners: dict[str, Owner]) -> list[Entry]:
    """Entries at the paths of `owners` (and below them) given to those owners."""
    if not owners:
        return entries
    out = []
    for e in entries:
        parts = e.name.split("/")
        given = next((owners[p] for p in ("/".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in owners),
                     None)
        out.append(replace(e, owner=given) if given is not None else e)
    return out


FAKE_PASSWD = "root:x:0:0:root user:/var/empty:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/sh\n"
FAKE_GROUP = "root:x:0:\nnobody:x:65534:\n"
NSSWITCH = "hosts: files dns\n"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
CA_LINKS = ("etc/ssl/certs/ca-bundle.crt", "etc/pki/tls/certs/ca-bundle.crt")  # where nixpkgs' cacert links it


def write_helpers(spec: BuildSpec, root: Path) -> None:
    """fakeNss, caCertificates, binSh and usrBinEnv as nixpkgs writes them, into the final layer's root."""
    def put(rel: str, data: bytes, mode: int = 0o644) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chmod(p, mode)

    def link(rel: str, target: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, p)

    if spec.fake_nss:
        put("etc/passwd", FAKE_PASSWD.encode())
        put("etc/group", FAKE_GROUP.encode())
        put("etc/nsswitch.conf", NSSWITCH.encode())
        (root / "var" / "empty").mkdir(parents=True, exist_ok=True)
    if spec.ca_certificates is not None:
        put(CA_BUNDLE, spec.ca_certificates.read_bytes())
        for rel in CA_LINKS:
            link(rel, "/" + CA_BUNDLE)
    if spec.bin_sh:
        link("bin/sh", spec.bin_sh)
    if spec.usr_bin_env:
        link("usr/bin/env", spec.usr_bin_env)
    for d in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):  # the same modes whatever the umask,
        if d.is_dir() and not d.is_symlink():                        # and fixed times: the layer's key holds
            os.chmod(d, 0o755)
        os.utime(d, (1, 1), follow_symlinks=False)


_LIST_OWNERS = """
import json, os, stat, sys
root = sys.argv[1]
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    for n in dirnames + filenames:
        p = os.path.join(dirpath, n)
        st = os.lstat(p)
        out[os.path.relpath(p, root)] = [st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)]
print(json.dumps(out))
"""


def _run(cmd: list[str], root: Path, what: str, confined: bool = False, env: dict[str, str] | None = None) -> str:
    """A command in `root` (with `env` added to ours). extraCommands and fakeRootCommands run as root
    are `confined` as runAsRoot is (builder.confinement): the host read-only, the work directory
    (root's parent) theirs."""
    env = dict(os.environ, LC_ALL="C", TZ="UTC", **(env or {}))

    def pre() -> None:
        os.umask(0o022)  # files the commands make get the same modes whatever the caller's umask

    if confined and os.geteuid() == 0:
        confinement.lend(root.parent, confinement.ids(), what)
        res = confinement.run("host", root.parent, cmd, env, what, cwd=root.name)  # umask 022 too
    else:
        res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, preexec_fn=pre)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
        raise BuildError(f"{what} failed: {detail[0]}")
    return res.stdout
