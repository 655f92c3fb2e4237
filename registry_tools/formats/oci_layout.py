"""The OCI image layout: `oci-layout`, `index.json` and `blobs/sha256/…`.

The same documents serve the layout directory and the oci-archive, so both always
describe an image the same way.
"""
from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import IO, Iterator, Sequence, Union

from registry_tools.engine import Need
from registry_tools.errors import ManifestError, UsageError
from registry_tools.fileio import replacing
from registry_tools.formats.tar import Entry, directory, file
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.model.image import BlobOrigin, Image, Layer
from registry_tools.model.tree import MAX_NESTING, ManifestNode, node_of_image, parse_node, subset
from registry_tools.model.tree import shallow as shallow_node
from registry_tools.store.blobs import BlobStore
from registry_tools.store.cache import BlobCache
from registry_tools.store.layers import LocalLayers, measure_tree
from registry_tools.store.origin import CachedBlobs
from registry_tools.model.platform import Choice, Platform, choose_in_index

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

BlobSource = Union[bytes, mf.Descriptor]


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def layout_documents(image: Image, image_name: str, tag: str) -> tuple[dict[str, bytes], dict[str, BlobSource]]:
    """(top-level files, blobs by hex digest) of one image: the manifest and config verbatim,
    layers as served; the entry records the config's platform."""
    plat = image.platform
    return tree_documents(node_of_image(image), image_name, tag,
                          plat.to_json() if plat.os and plat.architecture else None)


def tree_documents(node: ManifestNode, image_name: str, tag: str, platform: dict | None = None
                   ) -> tuple[dict[str, bytes], dict[str, BlobSource]]:
    """(top-level files, blobs by hex digest) of a tree (an image, or an index and every manifest
    under it): index.json names the top manifest, tagged; every manifest verbatim."""
    desc: dict = {"mediaType": node.media_type, "digest": str(node.digest), "size": len(node.raw)}
    if platform:
        desc["platform"] = platform
    desc["annotations"] = {CONTAINERD_NAME: f"{image_name}:{tag}", REF_NAME: tag} if image_name else {REF_NAME: tag}
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [desc]}
    docs = {"index.json": _json(index), "oci-layout": _json(LAYOUT_VERSION)}
    blobs: dict[str, BlobSource] = {d.hex: raw for d, raw in node.manifests().items()}
    for b in node.all_blobs():
        blobs.setdefault(b.digest.hex, b)
    return docs, blobs


def oci_archive_entries(image: Image | ManifestNode, image_name: str, tag: str) -> Iterator[Entry]:
    """An OCI image layout in a tar: directories first, then every path in sorted order."""
    docs, blobs = _documents(image, image_name, tag)
    yield directory("blobs")
    yield directory("blobs/sha256")
    for digest_hex, source in sorted(blobs.items()):
        name = f"blobs/sha256/{digest_hex}"
        if isinstance(source, bytes):
            yield file(name, source)
        else:
            yield Entry(name, source.size, blob=source, what=f"blob {source.digest}")
    for name in sorted(docs):
        yield file(name, docs[name])


def _documents(image: Image | ManifestNode, image_name: str, tag: str
               ) -> tuple[dict[str, bytes], dict[str, BlobSource]]:
    if isinstance(image, Image):
        return layout_documents(image, image_name, tag)
    return tree_documents(image, image_name, tag)


def write_layout(root: Path, image: Image | ManifestNode, store: BlobStore, image_name: str, tag: str) -> None:
    """Fill an empty directory with the layout; modes are set explicitly so umask does not matter."""
    docs, blobs = _documents(image, image_name, tag)
    blob_dir = root / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    for d in (root / "blobs", blob_dir):
        os.chmod(d, 0o755)
    write_blobs(blob_dir, blobs, store)
    for name, data in sorted(docs.items()):
        (root / name).write_bytes(data)
        os.chmod(root / name, 0o444)


def write_blobs(blob_dir: Path, blobs: dict[str, BlobSource], store: BlobStore) -> None:
    """Blobs into a layout's blobs/sha256 (those it has already are left as they are)."""
    for digest_hex, source in sorted(blobs.items()):
        path = blob_dir / digest_hex
        if path.is_symlink():
            raise ManifestError(f"{path} is a symbolic link; a layout's blobs are files")
        if path.exists():
            continue
        if not isinstance(source, bytes) and store.link_verified(source, path):
            continue
        part = blob_dir / f".{digest_hex}.part"  # a blob appears under its name whole, or not at all
        try:
            with open(part, "wb") as f:
                if isinstance(source, bytes):
                    f.write(source)
                else:
                    store.copy_verified(source, f.write, f"blob {source.digest}")
            os.chmod(part, 0o444)
            os.replace(part, path)
        finally:
            if part.exists():
                part.unlink()


def tag_in_layout(root: Path, node: ManifestNode, store: BlobStore, tag: str, image_name: str = "") -> None:
    """Put a tree into a layout (made if `root` does not exist) and point `tag` at its top manifest.

    Blobs are added (none removed: what the user had stays); index.json is replaced whole, by a
    rename, with the entry of `tag` replaced and every other entry kept as it was."""
    blob_dir = root / "blobs" / "sha256"
    if not root.exists():
        blob_dir.mkdir(parents=True)
        for d in (root, root / "blobs", blob_dir):
            os.chmod(d, 0o755)
        (root / "oci-layout").write_bytes(_json(LAYOUT_VERSION))
        os.chmod(root / "oci-layout", 0o444)
        entries: list[dict] = []
    else:
        with LayoutReader(root, str(root)) as layout:
            entries = [d.raw for d in layout.entries() if d.annotations.get(REF_NAME) != tag]
    docs, blobs = tree_documents(node, image_name, tag)
    write_blobs(blob_dir, blobs, store)
    (entry,) = json.loads(docs["index.json"])["manifests"]
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": entries + [entry]}
    with replacing(root / "index.json", 0o444) as f:
        f.write(_json(index))


# --- reading: a layout directory or an oci-archive, through one opener ----------------------

class LayoutReader:
    """The files of an OCI image layout, in a directory or in a tar (plain or compressed).

    Names are looked up, never extracted, and a name that would leave the layout is
    refused; every blob is verified against its descriptor as it is copied into the cache.
    """

    def __init__(self, path: Path, where: str):
        self.path = path
        self.where = where
        self._tar: tarfile.TarFile | None = None
        if not path.is_dir():
            try:
                self._tar = tarfile.open(path, "r:*")
            except (OSError, tarfile.TarError) as e:
                raise UsageError(f"{where}: not an OCI layout, oci-archive or docker-archive "
                                 f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def open(self, name: str) -> IO[bytes]:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "" in parts:
            raise ManifestError(f"{self.where}: refuses the path {name!r}: it would leave the layout")
        if self._tar is None:
            target = self.path / name
            if target.is_symlink() or not target.is_file():
                raise ManifestError(f"{self.where}: has no file {name}")
            return open(target, "rb")
        try:
            f = self._tar.extractfile(name)
        except KeyError:
            f = None
        if f is None:
            raise ManifestError(f"{self.where}: has no file {name}")
        return f

    def entry(self, name: str | None, several_by_platform: bool = False) -> mf.Descriptor:
        """The one entry tagged `name` (or the only entry); several: refused unless
        `several_by_platform` (the caller chooses among them), then the first."""
        entries = self.entries(name)
        if not entries:
            raise UsageError(f"{self.where}: no image" + (f" named {name!r}" if name else ""))
        if len(entries) > 1 and not several_by_platform:
            raise UsageError(f"{self.where}: holds {len(entries)} images; name one as SOURCE:TAG")
        return entries[0]

    def entries(self, name: str | None = None) -> list[mf.Descriptor]:
        """index.json's entries (those tagged `name`, when given), type-checked."""
        with self.open("index.json") as f:
            raw = f.read(mf.MAX_MANIFEST_SIZE + 1)
        if len(raw) > mf.MAX_MANIFEST_SIZE:
            raise ManifestError(f"{self.where}: index.json is over {mf.MAX_MANIFEST_SIZE} bytes")
        index = mf.load_json(raw, f"{self.where}: index.json")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise ManifestError(f"{self.where}: index.json has no manifests list")
        out = [mf.Descriptor.from_json(e, f"{self.where}: index.json entry {i}")
               for i, e in enumerate(index["manifests"])]
        if name is not None:
            out = [d for d in out if d.annotations.get(REF_NAME) == name]
        return out

    def import_blob(self, desc: mf.Descriptor, cache: BlobCache) -> None:
        if not cache.has(desc.digest, desc.size):
            with self.open(f"blobs/{desc.digest.algorithm}/{desc.digest.hex}") as f:
                cache.import_stream(f, desc.digest, desc.size, self.where)

    def document(self, desc: mf.Descriptor, cache: BlobCache) -> mf.ImageManifest | mf.Index:
        self.import_blob(desc, cache)
        raw = cache.read_small(desc, f"{self.where}: manifest {desc.digest}")
        return mf.parse(raw, desc.media_type, f"{self.where}: manifest {desc.digest}")

    def tree(self, desc: mf.Descriptor, cache: BlobCache, blobs: bool = True, depth: int = 0,
             shallow: bool = False) -> ManifestNode:
        """The manifest `desc` names and everything under it, each manifest (and, with `blobs`,
        each blob) verified into the cache; `shallow`: its entries known by their descriptors."""
        where = f"{self.where}: manifest {desc.digest}"
        if depth > MAX_NESTING:
            raise ManifestError(f"{where}: indexes nested more than {MAX_NESTING} deep")
        self.import_blob(desc, cache)
        raw = cache.read_small(desc, where)
        node, below = parse_node(desc, raw, desc.media_type, where)
        node.children = [shallow_node(d) if shallow else self.tree(d, cache, blobs, depth + 1) for d in below]
        if blobs:
            for b in node.blobs:
                self.import_blob(b, cache)
        return node

    def image(self, desc: mf.Descriptor, cache: BlobCache) -> Image:
        """One image of the layout, its blobs verified into the cache."""
        doc = self.document(desc, cache)
        if not isinstance(doc, mf.ImageManifest):
            raise ManifestError(f"{self.where}: nested indexes are not supported")
        self.import_blob(doc.config, cache)
        config_raw = cache.read_small(doc.config, f"{self.where}: config {doc.config.digest}")
        config = mf.parse_config(config_raw, f"{self.where}: config")
        ids = mf.diff_ids(config, f"{self.where}: config")
        if len(ids) != len(doc.layers):
            raise ManifestError(f"{self.where}: {len(doc.layers)} layers but {len(ids)} diff_ids")
        for d in doc.layers:
            self.import_blob(d, cache)
        return Image(doc, desc, config_raw, config, [Layer(d, diff) for d, diff in zip(doc.layers, ids, strict=True)])

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> "LayoutReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LayoutImage:
    """One image of an OCI layout directory or an oci-archive, as a copy source.

    `name` picks the entry tagged so; from an index (or several entries) the platform `choice`
    names picks the image (no choice: the entry must be one image). Blobs are verified into the
    cache as the image is opened.
    """

    def __init__(self, path: Path, store: BlobStore, name: str | None = None, choice: Choice | None = None,
                 where: str = ""):
        self.path = path
        self.store = store
        self.name = name
        self.choice = choice
        self.where = where or str(path)

    def open(self, need: object = None) -> LocalLayers:
        """The blobs are verified into the cache as the image is opened, whatever the destination needs."""
        cache = self.store.cache
        choice = self.choice
        with LayoutReader(self.path, self.where) as layout:
            desc = layout.entry(self.name, several_by_platform=choice is not None)
            entries = layout.entries(self.name)
            if len(entries) > 1:
                assert choice is not None
                desc = entries[choose_in_index({"manifests": [d.raw for d in entries]}, choice.wanted,
                                               cross_arch=choice.cross_arch)]
            doc = layout.document(desc, cache)
            if isinstance(doc, mf.Index):
                if choice is None:
                    raise UsageError(f"{self.where}: names an index; choose a platform")
                desc = doc.manifests[choose_in_index(doc.choice_view(), choice.wanted, cross_arch=choice.cross_arch)]
            return LocalLayers(layout.image(desc, cache), self.store)


class LayoutTree:
    """What an entry of an OCI layout or oci-archive names (an index and everything under it, or
    one image), as a tree source; every blob verified into the cache."""

    def __init__(self, path: Path, store: BlobStore, name: str | None = None, where: str = ""):
        self.path = path
        self.store = store
        self.name = name
        self.where = where or str(path)

    def _desc(self, layout: "LayoutReader") -> mf.Descriptor:
        return layout.entry(self.name)

    def digest(self) -> Digest:
        with LayoutReader(self.path, self.where) as layout:
            return self._desc(layout).digest

    def read(self, platforms: Sequence[Platform], shallow: bool = False) -> ManifestNode:
        with LayoutReader(self.path, self.where) as layout:
            tree = layout.tree(self._desc(layout), self.store.cache, blobs=False, shallow=shallow)
        return subset(tree, list(platforms)) if platforms else tree

    def blobs(self, tree: ManifestNode, need: Need) -> BlobOrigin:
        with LayoutReader(self.path, self.where) as layout:
            for b in tree.all_blobs():
                layout.import_blob(b, self.store.cache)
        if need is Need.MEASURED:
            measure_tree(tree, self.store)
        return CachedBlobs(self.store.cache)
