"""build: layered images from directories and Nix reference graphs (buildLayeredImage).

The builder is a source like any other: it plans layers (which files, which owner), and
then either streams them uncompressed into a docker-archive as they are packed
(streamLayeredImage), or packs and compresses them, two at a time, into the blob cache,
from where the OCI layout writer (and push) take them. A layer whose inputs did not
change since the last build is found in the cache by its inputs and not packed again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from registry_tools.model import manifest as mf
from registry_tools.formats.docker_archive import ArchiveLayer, docker_archive_entries
from registry_tools.formats.tar import Entry as ArchiveEntry, canonical_json, write_stream
from registry_tools.builder.base import BaseImage, load_base
from registry_tools.builder.closure import Graph, auto_layers, parse_graph, popularity_layers
from registry_tools.model.image import Image, Layer
from registry_tools.model.digest import Digest
from registry_tools.errors import RegistryToolsError, UsageError
from registry_tools.builder.pack import Compressor, Entry, Owner, PackError, collect, owned, tar_size
from registry_tools.builder.pack import with_parents, write_tar
from registry_tools.session import Session
from registry_tools.builder.spec import BuildSpec

MEDIA_TYPES = {"gz": mf.OCI_LAYER_GZIP, "zstd": mf.OCI_LAYER_ZSTD, "none": mf.OCI_LAYER}
CACHE_FORMAT = 1  # bump when packing changes, so old cache entries are not reused
Write = Callable[[bytes], object]


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
    def weight(self) -> int:
        """Bytes of file content: enough to order the work by."""
        return sum(e.size for e in self.entries)


@dataclass
class Plan:
    spec: BuildSpec
    base: BaseImage | None
    layers: list[LayerPlan] = field(default_factory=list)
    workdir: Path | None = None  # holds the final layer's files; removed by close()

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
    base = load_base(spec.from_image, spec.platform, session) if spec.from_image else None
    plan = Plan(spec, base)
    try:
        return _plan(spec, plan)
    except BaseException:
        plan.close()
        raise


def _store_name(path: str, store_dir: str) -> str:
    """The name of a path directly in the store ('..', '.', hidden and nested names refused)."""
    name = path[len(store_dir) + 1:] if path.startswith(store_dir + "/") else ""
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise UsageError(f"build spec: closure: {path!r} is not a path directly in {store_dir}")
    return name


def _plan(spec: BuildSpec, plan: Plan) -> Plan:
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
        g = parse_graph(text, str(c.graph))
        for path in g.paths:
            real = str(c.real_store_dir / _store_name(path, c.store_dir))
            if not os.path.lexists(real):
                raise UsageError(f"build spec: closure: {path} is not on this machine (looked for {real})")
            sources[path] = (real, path, True)
        graph = g
        roots = list(c.roots) if c.roots is not None else None
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
        if spec.layering == "popularity":
            groups = popularity_layers(graph, budget, roots)
        else:
            groups = auto_layers(graph, budget, sizes)
        for group in groups:
            entries = with_parents([e for node in group for e in collected[node]])
            more = f" and {len(group) - 3} more" if len(group) > 3 else ""
            label = ", ".join(sources[n][1] for n in group[:3]) + more
            plan.layers.append(LayerPlan(entries, owner, label, _input_key(entries, owner, spec.mtime)))
    plan.layers.append(_final_layer(spec, owner, plan))
    return plan


def _final_layer(spec: BuildSpec, owner: Owner, plan: Plan) -> LayerPlan:
    """contents merged at /, then extraCommands and fakeRootCommands run in it."""
    if not spec.contents and not spec.extra_commands and not spec.fake_root_commands:
        return LayerPlan([], owner, "final layer", _input_key([], owner, spec.mtime))
    plan.workdir = Path(tempfile.mkdtemp(prefix="registry-tools-build-"))
    root = plan.workdir / "root"
    root.mkdir()
    for tree in spec.contents:
        _merge_tree(tree, root, root, spec.keep_contents_dirlinks)
    if spec.extra_commands:
        _run(["sh", "-ec", spec.extra_commands], root, "extraCommands")
    entries = with_parents(collect(str(root), "/"))
    if spec.fake_root_commands:
        if shutil.which("fakeroot") is None:
            raise BuildError("fakeRootCommands need fakeroot (Debian's fakeroot package)")
        state = plan.workdir / "fakeroot.state"
        _run(["fakeroot", "-s", str(state), "--", "sh", "-ec", spec.fake_root_commands], root, "fakeRootCommands")
        listing = _run(["fakeroot", "-i", str(state), "--", sys.executable, "-c", _LIST_OWNERS, str(root)],
                       root, "fakeroot listing")
        entries = owned(entries, {k: tuple(v) for k, v in json.loads(listing).items()}, owner)
    return LayerPlan(entries, owner, "final layer", _input_key(entries, owner, spec.mtime))


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


def _run(cmd: list[str], cwd: Path, what: str) -> str:
    env = dict(os.environ, LC_ALL="C", TZ="UTC")

    def pre() -> None:
        os.umask(0o022)  # files the commands make get the same modes whatever the caller's umask

    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=pre)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
        raise BuildError(f"{what} failed: {detail[0]}")
    return res.stdout


MAX_LINK_HOPS = 40  # as the kernel's path walk


def resolve_in_root(root: Path, path: Path) -> Path:
    """Where `path` (inside `root`) leads, following symlinks as if `root` were `/`.

    Every component is looked at with lstat and every link target is read, so no chain
    of links, absolute or relative, can lead outside `root` (`..` at the top stays at
    the top, as in a chroot). The result may not exist yet.
    """
    parts = list(path.relative_to(root).parts)
    here: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if here:
                here.pop()
            continue
        candidate = root.joinpath(*here, name)
        if not candidate.is_symlink():
            here.append(name)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise BuildError(f"contents: too many levels of symbolic links at /{'/'.join(here + [name])}")
        link = os.readlink(candidate)
        if link.startswith("/"):
            here = []
        parts = [x for x in link.split("/") if x] + parts
    return root.joinpath(*here)


def _kind(path: Path) -> str:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    raise BuildError(f"contents: {path} is a device, socket or FIFO; only files, directories and "
                     "symlinks can be put in a layer")


def _merge_tree(src: Path, dest: Path, root: Path, keep_dirlinks: bool) -> None:
    """Copy src's tree into dest (symlinks kept, special files refused). Where dest has a
    symlink and src a directory: with keepContentsDirlinks, keep the link and merge through
    it when it leads to a directory (resolved inside the image's root, never outside);
    otherwise the directory replaces the link."""
    for name in sorted(os.listdir(src), key=os.fsencode):
        s, d = src / name, dest / name
        kind = _kind(s)
        if kind != "dir":
            if os.path.lexists(d):
                if _kind(d) == "dir":
                    shutil.rmtree(d)
                else:
                    d.unlink()
            if kind == "symlink":
                os.symlink(os.readlink(s), d)
            else:
                shutil.copy2(s, d, follow_symlinks=False)
            continue
        if os.path.lexists(d) and _kind(d) == "symlink":
            target = resolve_in_root(root, d) if keep_dirlinks else None
            if target is not None and os.path.lexists(target) and _kind(target) == "dir":
                _merge_tree(s, target, root, keep_dirlinks)
                continue
            d.unlink()
        elif os.path.lexists(d) and _kind(d) != "dir":
            d.unlink()
        if not os.path.lexists(d):
            d.mkdir()
            shutil.copystat(s, d)
        _merge_tree(s, d, root, keep_dirlinks)


# --- the image config ---------------------------------------------------------------------

def image_config(spec: BuildSpec, base: BaseImage | None, diff_ids: list[Digest],
                 comments: list[str]) -> dict[str, Any]:
    inherited: dict[str, Any] = {}
    base_history: list[Any] = []
    if base is not None:
        base_cfg = base.config.get("config") or {}
        if spec.inherit_config is True:
            inherited = dict(base_cfg)
        elif isinstance(spec.inherit_config, tuple):
            inherited = {k: base_cfg[k] for k in spec.inherit_config if k in base_cfg}
        if "Env" in base_cfg:
            inherited["Env"] = list(base_cfg["Env"])
        base_history = list(base.config.get("history") or [])
    cfg = dict(inherited)
    for k, v in spec.config.items():
        if k == "Env":
            merged = {e.split("=", 1)[0]: e for e in cfg.get("Env", [])}
            merged.update({e.split("=", 1)[0]: e for e in v})
            cfg["Env"] = list(merged.values())
        else:
            cfg[k] = v
    obj: dict[str, Any] = {"architecture": spec.platform.architecture, "os": spec.platform.os}
    if spec.platform.variant:
        obj["variant"] = spec.platform.variant
    obj.update({
        "created": spec.created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [str(d) for d in diff_ids]},
        "history": base_history + [{"created": spec.created, "created_by": "registry-tools build", "comment": c}
                                   for c in comments],
    })
    return obj


def default_tag(config_raw: bytes) -> str:
    return hashlib.sha256(config_raw).hexdigest()[:32]


# --- output 1: an uncompressed docker-archive, streamed -------------------------------------

def stream_docker_archive(plan: Plan, session: Session, write: Write) -> tuple[str, str]:
    """streamLayeredImage: layers are packed into the stream one after the other; nothing is
    held in memory and the first bytes leave before the last layer is packed. Returns the
    image's name:tag and config digest."""
    spec = plan.spec
    diff_ids: list[Digest] = []
    result: list[tuple[str, str]] = []

    def packed(lp: LayerPlan, size: int) -> Callable[[Write], None]:
        def produce(out: Write) -> None:
            h = hashlib.sha256()

            def emit(b: bytes) -> None:
                h.update(b)
                out(b)

            if write_tar(lp.entries, lp.owner, spec.mtime, emit) != size:
                raise PackError(f"{lp.comment}: the files changed while the layer was packed")
            diff_ids.append(Digest("sha256", h.hexdigest()))
        return produce

    def base_layer(n: int, layer: Layer) -> ArchiveLayer:
        assert layer.size is not None  # base layers are measured when they are loaded
        size = layer.size

        def entry() -> ArchiveEntry:
            diff_ids.append(layer.diff_id)
            return ArchiveEntry(f"{n}/layer.tar", size, layer=layer, what=f"base layer {n}")
        return ArchiveLayer(f"{n}/layer.tar", entry, lambda: layer.diff_id)

    def built_layer(n: int, lp: LayerPlan) -> ArchiveLayer:
        def entry() -> ArchiveEntry:
            size = lp.size(spec.mtime)
            return ArchiveEntry(f"{n}/layer.tar", size, what=lp.comment, producer=packed(lp, size))
        return ArchiveLayer(f"{n}/layer.tar", entry, lambda: diff_ids[n - 1])

    def layers() -> Iterator[ArchiveLayer]:
        base = plan.base.layers if plan.base else []
        for n, layer in enumerate(base, 1):
            yield base_layer(n, layer)
        for n, lp in enumerate(plan.layers, len(base) + 1):
            yield built_layer(n, lp)

    def config() -> bytes:  # only now, with every diff_id known, can the config be written
        return canonical_json(image_config(spec, plan.base, diff_ids, [lp.comment for lp in plan.layers]))

    def repo_tag(config_raw: bytes) -> str:
        ref = f"{spec.name}:{spec.tag or default_tag(config_raw)}"
        result.append((ref, str(Digest.of_bytes(config_raw))))
        return ref

    write_stream(docker_archive_entries(layers(), config, repo_tag), session.store, write)
    return result[0]


# --- output 2: compressed blobs in the cache (OCI layout, push) -----------------------------

def compress_layer(layer: Layer, compressor: str, cache) -> Layer:
    """An uncompressed layer blob (from a docker-archive) compressed as ours are; cached by diff_id."""
    if compressor == "none" or layer.descriptor.media_type != mf.OCI_LAYER:
        return layer
    key = f"recompress-{CACHE_FORMAT}-{layer.diff_id.hex}-{compressor}"
    known = cache.layer_index(key)
    if known and cache.has(Digest.parse(known["digest"]), known["size"]):
        return Layer(mf.Descriptor(known["mediaType"], Digest.parse(known["digest"]), known["size"]),
                     layer.diff_id, layer.size)
    return _compress_blob(layer, compressor, cache, key)


def build_blobs(plan: Plan, session: Session, jobs: int = 2,
                on_layer: Callable[[Layer], None] | None = None) -> Image:
    """Pack and compress the layers (concurrently) into the blob cache, reusing layers whose
    inputs did not change; base layers already compressed are kept as they are.
    `on_layer` is told of each layer as soon as it is in the cache (push starts uploading)."""
    spec = plan.spec
    cache = session.cache

    def one(lp: LayerPlan) -> Layer:
        key = f"{lp.key}-{spec.compressor}"
        known = cache.layer_index(key)
        if known:
            desc = mf.Descriptor(known["mediaType"], Digest.parse(known["digest"]), known["size"])
            if cache.has(desc.digest, desc.size):
                cache.touch(desc.digest)
                return Layer(desc, Digest.parse(known["diff_id"]), known["uncompressed"])
        return _pack_to_cache(lp.entries, lp.owner, spec.mtime, spec.compressor, cache, key)

    def notify(layer: Layer) -> Layer:
        session.progress.say(f"layer {layer.descriptor.digest.hex[:12]}: {(layer.size or 0) / 1e6:.1f} MB, "
                             f"{layer.descriptor.size / 1e6:.1f} MB {spec.compressor}")
        if on_layer is not None:
            on_layer(layer)
        return layer

    base = plan.base.layers if plan.base else []
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="pack") as pool:
        # Largest first, so the biggest layer does not start last and run alone at the end.
        work: list[tuple[int, Callable[..., Layer]]] = (
            [(layer.size or 0, lambda layer=layer: notify(compress_layer(layer, spec.compressor, cache)))
             for layer in base]
            + [(lp.weight, lambda lp=lp: notify(one(lp))) for lp in plan.layers])
        order = sorted(range(len(work)), key=lambda i: -work[i][0])
        futures = {i: pool.submit(work[i][1]) for i in order}
        layers = [futures[i].result() for i in range(len(work))]
    config = image_config(spec, plan.base, [layer.diff_id for layer in layers], [lp.comment for lp in plan.layers])
    return assemble(config, canonical_json(config), layers, spec.platform.to_json(), cache)


def assemble(config: dict[str, Any], config_raw: bytes, layers: list[Layer], platform: dict[str, Any] | None,
             cache) -> Image:
    """An OCI manifest for a config and layers that are in the cache."""
    config_desc = mf.Descriptor(mf.OCI_CONFIG, Digest.of_bytes(config_raw), len(config_raw))
    cache.put_bytes(config_desc.digest, config_raw)
    manifest = {"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": config_desc.to_json(),
                "layers": [layer.descriptor.to_json() for layer in layers]}
    raw = canonical_json(manifest)
    doc = mf.ImageManifest(raw, mf.OCI_MANIFEST, config_desc, tuple(layer.descriptor for layer in layers))
    desc = mf.Descriptor(mf.OCI_MANIFEST, Digest.of_bytes(raw), len(raw), platform=platform)
    cache.put_bytes(desc.digest, raw)
    return Image(doc, desc, config_raw, config, layers)


def _pack_to_cache(entries: list[Entry], owner: Owner, mtime: int, compressor: str, cache, key: str) -> Layer:
    fd, tmp = tempfile.mkstemp(dir=cache.root / "tmp", prefix="layer.")
    try:
        with os.fdopen(fd, "wb") as f:
            c = Compressor(compressor, f.write)
            write_tar(entries, owner, mtime, c.write)
            c.finish()
        return _commit(tmp, c, compressor, cache, key)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _compress_blob(layer: Layer, compressor: str, cache, key: str) -> Layer:
    fd, tmp = tempfile.mkstemp(dir=cache.root / "tmp", prefix="layer.")
    try:
        with os.fdopen(fd, "wb") as f, open(cache.path(layer.descriptor.digest), "rb") as src:
            c = Compressor(compressor, f.write)
            while chunk := src.read(1 << 20):
                c.write(chunk)
            c.finish()
        if Digest("sha256", c.diff.hexdigest()) != layer.diff_id:
            raise BuildError(f"base layer {layer.diff_id}: the cached copy is damaged")
        return _commit(tmp, c, compressor, cache, key)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _commit(tmp: str, c: Compressor, compressor: str, cache, key: str) -> Layer:
    digest = Digest("sha256", c.blob.hexdigest())
    diff_id = Digest("sha256", c.diff.hexdigest())
    os.chmod(tmp, 0o444)
    os.replace(tmp, cache.path(digest))
    media_type = MEDIA_TYPES[compressor]
    cache.put_meta(digest, {"diff_id": str(diff_id), "size": c.size, "compression": compressor})
    cache.put_layer_index(key, {"digest": str(digest), "size": c.blob_size, "diff_id": str(diff_id),
                                "uncompressed": c.size, "mediaType": media_type})
    return Layer(mf.Descriptor(media_type, digest, c.blob_size), diff_id, c.size)


def image_name_tag(spec: BuildSpec, config_raw: bytes) -> tuple[str, str]:
    return spec.name, spec.tag or default_tag(config_raw)


# --- the API --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    name: str
    tag: str
    config_digest: Digest
    manifest_digest: Digest | None  # for outputs that have a manifest (OCI layout, push)
    layers: int


def build(spec: BuildSpec, *, output: str | os.PathLike[str] | None = None, oci: str | os.PathLike[str] | None = None,
          stream: Any = None, session: Session | None = None) -> BuildResult:
    """Build the image of `spec` into one of: a docker-archive file, an OCI layout, a stream."""
    from registry_tools.engine import repairing
    from registry_tools.fileio import check_destination, check_layout_destination

    if sum(x is not None for x in (output, oci, stream)) != 1:
        raise UsageError("build needs exactly one output: a docker-archive file, an OCI layout or a stream")
    if output is not None:
        check_destination(output)
    if oci is not None:
        check_layout_destination(oci)
    own = session is None
    session = session or Session()
    try:
        if stream is not None:  # bytes already sent cannot be taken back: no second run
            return _build_once(spec, session, None, None, stream)
        return repairing(session.cache, lambda: _build_once(spec, session, output, oci, None))
    finally:
        if own:
            session.close()


def _build_once(spec: BuildSpec, session: Session, output: str | os.PathLike[str] | None,
                oci: str | os.PathLike[str] | None, stream: Any) -> BuildResult:
    from registry_tools.fileio import AtomicDir, AtomicFile
    from registry_tools.formats.oci_layout import write_layout

    plan = plan_build(spec, session)
    try:
        if oci is not None:
            image = build_blobs(plan, session, jobs=max(2, session.concurrency // 2))
            name, tag = image_name_tag(spec, image.config_raw)
            target = AtomicDir(oci)
            try:
                write_layout(target.tmp, image, session.store, name, tag)
                target.commit()
            except BaseException:
                target.abort()
                raise
            return BuildResult(name, tag, image.config_digest, image.manifest_descriptor.digest, len(image.layers))
        if output is not None:
            out = AtomicFile(output)
            try:
                ref, config_digest = stream_docker_archive(plan, session, out.file.write)
                out.commit()
            except BaseException:
                out.abort()
                raise
        else:
            ref, config_digest = stream_docker_archive(plan, session, stream.write)
            stream.flush()
        name, _, tag = ref.rpartition(":")
        n = (len(plan.base.layers) if plan.base else 0) + len(plan.layers)
        return BuildResult(name, tag, Digest.parse(config_digest), None, n)
    finally:
        plan.close()
