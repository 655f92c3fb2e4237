"""The built image: its config, its layers packed into the cache two at a time, and the
streamed docker-archive (streamLayeredImage).

As a copy source (`BuiltImage`), layers are packed and compressed concurrently, largest
first, into the blob cache, and handed to the destination as each is ready (push starts
uploading at once); a layer whose inputs did not change since the last build is found
in the cache by its inputs and not packed again. The manifest exists once the last
layer is packed. Streaming instead writes each layer uncompressed into the archive as
it is packed, so the first bytes leave before the last layer is done.
"""
from __future__ import annotations

import hashlib
import os
import threading
from functools import partial
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Iterator

from registry_tools.builder.base import BaseImage, base_annotations
from registry_tools.builder.pack import PackError, write_tar
from registry_tools.builder.plan import LayerPlan, Plan, plan_build
from registry_tools.builder.spec import BuildSpec
from registry_tools.formats.docker_archive import ArchiveLayer, docker_archive_entries
from registry_tools.formats.tar import Entry as ArchiveEntry, write_stream
from registry_tools.model.digest import Digest
from registry_tools.model.image import LAYER_KEY, Image, Layer
from registry_tools.model import manifest as mf
from registry_tools.model.manifest import canonical_json
from registry_tools.session import Session
from registry_tools.store.layers import assemble, compress_layer, known_layer, make_layer
from registry_tools.store.origin import CachedBlobs

Write = Callable[[bytes], object]


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


# --- the built image as a copy source ---------------------------------------------------------

class RemoteLayers:
    """What the destination holds by layer key, asked for once, and only if some layer needs it."""

    def __init__(self, lookup: Callable[[], dict[str, Layer]]):
        self._lookup = lookup
        self._known: dict[str, Layer] | None = None
        self._lock = threading.Lock()

    def get(self, key: str) -> Layer | None:
        with self._lock:
            if self._known is None:
                self._known = self._lookup()
            return self._known.get(key)


def with_key(layer: Layer, key: str) -> Layer:
    """The layer with its input key in its descriptor's annotations (what a push from an empty
    cache reads back from the registry to skip packing it)."""
    d = layer.descriptor
    if d.annotations.get(LAYER_KEY) == key:
        return layer
    desc = mf.Descriptor(d.media_type, d.digest, d.size, d.platform, {**d.annotations, LAYER_KEY: key}, d.urls)
    return Layer(desc, layer.diff_id, layer.size)

def packers(session: Session) -> int:
    """Layers packed at once: half the transfer limit, at least two, at most one per core
    (packing is CPU work: a third packer on two cores made a build 12% slower)."""
    return max(2, min(session.concurrency // 2, os.cpu_count() or 2))


class BuiltImage:
    """A build spec as a copy source: planned when opened, layers packed as the destination reads."""

    def __init__(self, spec: BuildSpec, session: Session, jobs: int | None = None,
                 remote: "RemoteLayers | None" = None):
        """`jobs`: layers packed at once (default `packers`). `remote`: the layers the destination
        holds already, by input key, asked for only when a portable layer is not in the cache (a
        push from a cold cache takes them instead of packing)."""
        self.spec = spec
        self.session = session
        self.jobs = jobs or packers(session)
        self.remote = remote or RemoteLayers(dict)
        self.packed: list[Layer] = []  # the layers the last run packed (the others were in the cache)

    def open(self, need: object = None) -> "BuildSupply":
        """Layers are packed into the cache, whatever the destination needs."""
        supply = BuildSupply(plan_build(self.spec, self.session), self.session, self.jobs, self.remote)
        self.packed = supply.packed
        return supply


class BuildSupply:
    """Layers packed (or found in the cache) in a pool of `jobs`, largest first; the image at the end."""

    def __init__(self, plan: Plan, session: Session, jobs: int, remote: "RemoteLayers | None" = None):
        self.plan = plan
        self.session = session
        self.remote = remote or RemoteLayers(dict)
        spec = plan.spec
        self._compressor = spec.compressor
        self._image: Image | None = None
        self.packed: list[Layer] = []
        base = plan.base.layers if plan.base else []
        work: list[tuple[int, Callable[[], Layer]]] = [(layer.size or 0, partial(self._base, layer))
                                                       for layer in base]
        work += [(lp.weight, partial(self._pack, lp)) for lp in plan.layers]
        self._group = session.workers.group(jobs)
        # Largest first, so the biggest layer does not start last and run alone at the end.
        order = sorted(range(len(work)), key=lambda i: -work[i][0])
        self._futures: dict[int, Future[Layer]] = {i: self._group.submit(work[i][1]) for i in order}

    def _base(self, layer: Layer) -> Layer:
        compressed = compress_layer(layer, self._compressor, self.session.store)
        self.session.progress.layer_ready(compressed, self._compressor, packed=compressed is not layer)
        return compressed

    def _pack(self, lp: LayerPlan) -> Layer:
        spec = self.plan.spec
        key = f"{lp.key}-{spec.compressor}"
        layer = known_layer(self.session.cache, key)
        if layer is None and lp.portable:
            layer = self.remote.get(key)  # the destination has it (a push from another machine's cache)
        packed = layer is None
        if layer is None:
            layer = make_layer(self.session.cache, key, spec.compressor,
                               lambda write: write_tar(lp.entries, lp.owner, spec.mtime, write))
            self.packed.append(layer)
        self.session.progress.layer_ready(layer, spec.compressor, packed)
        return with_key(layer, key) if lp.portable else layer

    def count(self) -> int:
        return len(self._futures)

    @property
    def origin(self) -> CachedBlobs:
        return CachedBlobs(self.session.cache)

    def layer(self, i: int) -> Layer:
        return self._group.wait_for(self._futures[i])  # a failure elsewhere surfaces at once

    def ready(self) -> Iterator[int]:
        """Layer indexes in the order their packing finishes."""
        pending = dict(self._futures)
        while pending:
            done, _ = wait(pending.values(), return_when=FIRST_COMPLETED)
            for i in [i for i, f in pending.items() if f in done]:
                del pending[i]
                self.layer(i)
                yield i

    def measured(self) -> list[Layer]:
        return [self.layer(i) for i in range(len(self._futures))]

    def early(self, i: int) -> None:
        return None  # a layer is offered once it is packed

    def image(self) -> Image:
        if self._image is None:
            spec, plan = self.plan.spec, self.plan
            layers = self.measured()
            config = image_config(spec, plan.base, [layer.diff_id for layer in layers],
                                  [lp.comment for lp in plan.layers])
            self._image = assemble(config, canonical_json(config), layers, spec.platform.to_json(),
                                   self.session.cache, {**base_annotations(plan.base), **spec.annotations})
        return self._image

    def __enter__(self) -> "BuildSupply":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._group.drain()  # packing stops before the build's temporary files go
        else:
            self._group.join()
        self.plan.close()
