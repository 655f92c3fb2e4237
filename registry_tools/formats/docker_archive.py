"""The docker-archive: `docker save`, `podman save`, skopeo's and our own; read and written here.

Writing: one plan for pull and build alike (layers, then the config, manifest.json and
repositories), whether the layers' diff_ids are known up front (a pull: members named
`<diff_id>.tar`, as skopeo writes them) or only once each is packed (a streamed build:
`N/layer.tar`, as nixpkgs writes them).

Reading: manifest.json is type-checked once; member names that would leave the archive,
links that point out of it and link cycles are refused; every layer is copied into the
cache uncompressed, under its diff_id, verified as it goes.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from registry_tools.engine import Need
from registry_tools.errors import ManifestError, UsageError
from registry_tools.formats.tar import Entry, file
from registry_tools.model.manifest import canonical_json
from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.compression import decompressed
from registry_tools.model.digest import Digest, VerifyingReader
from registry_tools.model.image import BlobOrigin, Image, Layer, LayerSupply
from registry_tools.model.platform import Platform
from registry_tools.model.tree import ManifestNode, node_of_image
from registry_tools.store.blobs import BACKGROUND_HASH_FROM, BlobStore, SizeRecordWrong
from registry_tools.store.cache import BlobCache
from registry_tools.store.layers import LocalLayers, assemble, compress_layer
from registry_tools.store.origin import CachedBlobs


@dataclass(frozen=True)
class ArchiveLayer:
    """One layer of a docker-archive being written."""

    name: str  # its member name
    entry: Callable[[], Entry]  # makes its entry; called once per name, when the layer is due
    diff_id: Callable[[], Digest]  # known once its entry is written, at the latest


def docker_archive_entries(layers: Iterable[ArchiveLayer], config: Callable[[], bytes],
                           repo_tag: Callable[[bytes], str]) -> Iterator[Entry]:
    """Layers (each name stored once), `<config digest>.json`, manifest.json and repositories.

    A generator: each entry comes out as soon as it can be made, and the config (which
    may depend on the layers, for a build) only after every layer.
    """
    seen: set[str] = set()
    names: list[str] = []
    last: ArchiveLayer | None = None
    for layer in layers:
        names.append(layer.name)
        if layer.name not in seen:
            seen.add(layer.name)
            yield layer.entry()
        last = layer
    config_raw = config()
    config_name = f"{Digest.of_bytes(config_raw).hex}.json"
    ref = repo_tag(config_raw)
    yield file(config_name, config_raw)
    yield file("manifest.json", canonical_json([{"Config": config_name, "RepoTags": [ref], "Layers": names}]))
    if last is not None:
        name, _, tag = ref.rpartition(":")
        yield file("repositories", canonical_json({name: {tag: last.diff_id().hex}}))


def image_entries(image: Image, store: BlobStore, repo_tag: str,
                  supply: LayerSupply | None = None) -> Iterator[Entry]:
    """A pulled image as skopeo's docker-archive lays it out: `<diff_id>.tar` layers, uncompressed.

    `supply` hands out layer i when it is ready (downloads may still be running; a big one
    may be read while it downloads); a layer not yet measured is planned with the size its
    compressed form records, and SizeRecordWrong is raised if that record was wrong.
    """
    total = sum(layer.descriptor.size for layer in image.layers)
    def is_dominant(size: int) -> bool:  # at least half of the image
        return size * 2 >= total

    # the others give way to a dominant layer big enough for its own threads (BACKGROUND_HASH_FROM)
    has_dominant = any(is_dominant(layer.descriptor.size) and layer.descriptor.size >= BACKGROUND_HASH_FROM
                       for layer in image.layers)

    def entry(i: int) -> Entry:
        what = f"layer {i + 1}/{len(image.layers)} {image.layers[i].descriptor.digest}"
        dominant = is_dominant(image.layers[i].descriptor.size)
        gives_way = has_dominant and not dominant
        early = supply.early(i) if supply is not None else None
        if early is not None:
            streamed, record, opener = early
            return Entry(f"{streamed.diff_id.hex}.tar", record, layer=streamed, what=what, planned=record,
                         opener=opener, dominant=dominant, gives_way=gives_way)
        layer = supply.layer(i) if supply is not None else image.layers[i]
        size = layer.size if layer.size is not None else store.size_record(layer)
        if size is None:
            raise SizeRecordWrong(what)
        planned = None if layer.size is not None else size
        return Entry(f"{layer.diff_id.hex}.tar", size, layer=layer, what=what, planned=planned, dominant=dominant,
                     gives_way=gives_way)

    layers = (ArchiveLayer(f"{listed.diff_id.hex}.tar", partial(entry, i), _known(listed.diff_id))
              for i, listed in enumerate(image.layers))
    return docker_archive_entries(layers, lambda: image.config_raw, lambda _: repo_tag)


def _known(diff_id: Digest) -> Callable[[], Digest]:
    return lambda: diff_id


def is_docker_archive(path: Path, where: str) -> bool:
    """A tar with manifest.json and no oci-layout (an oci-archive may carry both)."""
    try:
        with tarfile.open(path, "r:*") as tf:
            names = set(tf.getnames())
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UsageError(f"{where}: not a tar archive (docker-archive or oci-archive): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return "oci-layout" not in names and "manifest.json" in names


@dataclass
class ArchiveImage:
    config: dict[str, Any]
    config_raw: bytes
    layers: list[Layer]


def _entry(manifest: Any, name: str | None, where: str) -> dict[str, Any]:
    if not isinstance(manifest, list) or not manifest or not all(isinstance(m, dict) for m in manifest):
        raise ManifestError(f"{where}: manifest.json lists no image")
    if name is not None:
        wanted = str(refs.parse_docker_ref(name))
        manifest = [m for m in manifest if isinstance(m.get("RepoTags"), list)
                    and any(isinstance(t, str) and _same_ref(t, wanted) for t in m["RepoTags"])]
        if not manifest:
            raise UsageError(f"{where}: no image tagged {name!r}")
    elif len(manifest) > 1:
        raise UsageError(f"{where}: holds {len(manifest)} images; say which with fromImageName")
    entry = manifest[0]
    layers = entry.get("Layers")
    if not isinstance(entry.get("Config"), str):
        raise ManifestError(f"{where}: manifest.json names no Config file")
    if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
        raise ManifestError(f"{where}: manifest.json's Layers must be a list of file names")
    return entry


def _same_ref(text: str, wanted: str) -> bool:
    try:
        return str(refs.parse_docker_ref(text)) == wanted
    except ValueError:
        return False


def read_docker_archive(path: Path, name: str | None, cache: BlobCache, where: str) -> ArchiveImage:
    """The image (config and layers) of a docker-archive, its layers verified into the cache."""
    try:
        tf = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError, EOFError) as e:
        raise UsageError(f"{where}: not a readable docker-archive ({e})") from None
    with tf:
        entry = _entry(mf.load_json(_small(tf, "manifest.json", where), f"{where}: manifest.json"), name, where)
        config_raw = _small(tf, entry["Config"], where)
        config = mf.parse_config(config_raw, f"{where} config")
        ids = mf.diff_ids(config, where)
        if len(ids) != len(entry["Layers"]):
            raise ManifestError(f"{where}: {len(entry['Layers'])} layers but {len(ids)} diff_ids")
        layers = []
        for layer_name, diff in zip(entry["Layers"], ids, strict=True):
            if not cache.has(diff):
                # Stored uncompressed, under its diff_id: checked while it is copied in.
                stream, _ = decompressed(open_member(tf, layer_name, where), f"{where}: layer {layer_name}")
                with cache.writer(diff) as out:
                    VerifyingReader(stream, diff, None, f"{where}: layer {layer_name} (diff_id)", tee=out).drain()
            size = cache.path(diff).stat().st_size
            layers.append(Layer(mf.Descriptor(mf.OCI_LAYER, diff, size), diff, size))
            cache.put_meta(diff, {"diff_id": str(diff), "size": size, "compression": "none"})
    return ArchiveImage(config, config_raw, layers)


def _small(tf: tarfile.TarFile, name: str, where: str, limit: int = mf.MAX_MANIFEST_SIZE) -> bytes:
    data = open_member(tf, name, where).read(limit + 1)
    if len(data) > limit:
        raise ManifestError(f"{where}: {name} is too large")
    return data


def _inside(name: str, where: str, what: str) -> str:
    """A member path resolved within the archive ('..' may not climb out of it)."""
    parts: list[str] = []
    for p in name.split("/"):
        if p == "..":
            if not parts:
                raise ManifestError(f"{where}: {what} {name!r} points outside the archive")
            parts.pop()
        elif p and p != ".":
            parts.append(p)
    if name.startswith("/") or not parts:
        raise ManifestError(f"{where}: refuses the path {name!r}: it would leave the archive")
    return "/".join(parts)


def open_member(tf: tarfile.TarFile, name: str, where: str) -> IO[bytes]:
    name = _inside(name, where, "path")
    try:
        member = tf.getmember(name)
    except KeyError:
        raise ManifestError(f"{where}: has no {name}") from None
    for _ in range(16):  # docker save links duplicate layers; follow, but not in circles
        if not (member.issym() or member.islnk()):
            break
        if member.issym() and member.linkname.startswith("/"):
            raise ManifestError(f"{where}: link {name} points outside the archive")
        target = member.linkname if member.islnk() else "/".join(name.split("/")[:-1] + [member.linkname])
        name = _inside(target, where, "link")
        try:
            member = tf.getmember(name)
        except KeyError:
            raise ManifestError(f"{where}: link target {name} is missing") from None
    else:
        raise ManifestError(f"{where}: link cycle at {name}")
    f = tf.extractfile(member)
    if f is None:
        raise ManifestError(f"{where}: {name} is not a file")
    return f


class DockerArchiveImage:
    """A docker-archive (plain or compressed; `docker save`, `podman save`, skopeo's, ours) as a
    copy source: its layers compressed as our builds compress them, under a new OCI manifest."""

    def __init__(self, path: Path, store: BlobStore, name: str | None = None, compressor: str = "gz",
                 where: str = ""):
        self.path = path
        self.store = store
        self.name = name
        self.compressor = compressor
        self.where = where or str(path)

    def open(self, need: object = None) -> LocalLayers:
        """The blobs are verified into the cache as the image is opened, whatever the destination needs."""
        return LocalLayers(self.image(), self.store)

    def image(self) -> Image:
        """The archive's image, its layers compressed into the cache, under a new OCI manifest."""
        cache = self.store.cache
        archive = read_docker_archive(self.path, self.name, cache, self.where)
        layers = [compress_layer(layer, self.compressor, self.store) for layer in archive.layers]
        platform = {k: archive.config[k] for k in ("os", "architecture", "variant") if archive.config.get(k)}
        return assemble(archive.config, archive.config_raw, layers, platform or None, cache)


class DockerArchiveTree:
    """A docker-archive's image as a tree of one manifest (it holds no index)."""

    def __init__(self, image: DockerArchiveImage):
        self._source = image
        self._tree: ManifestNode | None = None

    def _read(self) -> ManifestNode:
        if self._tree is None:
            self._tree = node_of_image(self._source.image())
        return self._tree

    def digest(self) -> Digest:
        return self._read().digest

    def read(self, platforms: Sequence[Platform], shallow: bool = False) -> ManifestNode:
        if platforms:
            raise UsageError(f"{self._source.where} holds one image, not an index: --platform picks from an index")
        return self._read()

    def blobs(self, tree: ManifestNode, need: Need) -> BlobOrigin:
        return CachedBlobs(self._source.store.cache)  # every layer was verified against its diff_id as it came in
