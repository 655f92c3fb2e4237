"""Image surgery: the transforms of `mutate`, `append`, `flatten` and `rebase`.

Each is a `Transform` of the copy engine (see `registry_tools.transforms`): it takes an
image's supply and gives the edited image's, whose untouched layers are the source's own
(read from where they are, only if the destination lacks them) and whose new blobs (a
config, a packed or flattened layer) are in the cache. Layers made here follow the
builder's rules: entries sorted, one mtime and owner, gzip with mtime 0; the same inputs
give the same digest.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tarfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from registry_tools import endpoint
from registry_tools.builder.base import BASE_DIGEST, BASE_NAME, recorded_name
from registry_tools.builder.pack import Owner, collect, with_parents, write_tar
from registry_tools.engine import Need
from registry_tools.errors import UsageError
from registry_tools.formats.rootfs import clean, write_rootfs
from registry_tools.model.compression import READ_SIZE, decompressed
from registry_tools.model.image import Image, Layer, LayerSupply
from registry_tools.model.platform import Choice
from registry_tools.session import Session
from registry_tools.store.cache import BlobCache
from registry_tools.store.layers import CACHE_FORMAT, known_layer, make_layer
from registry_tools.store.origin import Origins
from registry_tools.transforms import Composed, Layers, Made, edited_image, family, manifest_annotations, origins
from registry_tools.transforms import retyped

MTIME = 1  # the builder's default mtime (1970-01-01T00:00:01Z) on every entry of a packed directory
Write = Callable[[bytes], object]


def _with_layers(config: dict[str, Any], diff_ids: list[str], history: list[Any] | None) -> dict[str, Any]:
    """A copy of `config` with these diff_ids and (unless None) this history."""
    out = copy.deepcopy(config)
    out["rootfs"] = {**(out.get("rootfs") or {}), "type": "layers", "diff_ids": diff_ids}
    if history is not None:
        out["history"] = history
    return out


# --- mutate ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Edits:
    """What `mutate` changes: the config's run settings and created time, the manifest's
    annotations, the format (None: the image's own)."""

    env: tuple[str, ...] = ()  # KEY=VALUE, set where KEY is (in place) or added
    env_unset: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None  # (): removed
    cmd: tuple[str, ...] | None = None  # (): removed
    user: str | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()  # PORT/PROTO
    created: str | None = None  # RFC 3339
    annotations: dict[str, str] = field(default_factory=dict)
    format: str | None = None  # "oci" or "docker"

    @property
    def config_changes(self) -> bool:
        return bool(self.env or self.env_unset or self.entrypoint is not None or self.cmd is not None
                    or self.user is not None or self.workdir is not None or self.labels or self.ports
                    or self.created is not None)

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy of `config` with the edits made (maps edited are written sorted)."""
        out = copy.deepcopy(config)
        run = dict(out.get("config") or {})
        if self.env or self.env_unset:
            env = [e for e in run.get("Env") or [] if e.split("=", 1)[0] not in self.env_unset]
            for item in self.env:
                key = item.split("=", 1)[0]
                at = next((i for i, e in enumerate(env) if e.split("=", 1)[0] == key), None)
                if at is None:
                    env.append(item)
                else:
                    env[at] = item
            run["Env"] = env
        for key, value in (("Entrypoint", self.entrypoint), ("Cmd", self.cmd)):
            if value == ():
                run.pop(key, None)
            elif value is not None:
                run[key] = list(value)
        for key, text in (("User", self.user), ("WorkingDir", self.workdir)):
            if text is not None:
                run[key] = text
        if self.labels:
            run["Labels"] = dict(sorted({**(run.get("Labels") or {}), **self.labels}.items()))
        if self.ports:
            run["ExposedPorts"] = dict(sorted({**(run.get("ExposedPorts") or {}), **{p: {} for p in self.ports}}
                                              .items()))
        out["config"] = run
        if self.created is not None:
            out["created"] = self.created
        return out


class Mutate:
    """The config and the manifest's annotations edited, media types converted (`format`); every
    layer the source's own: between registries, one config blob and one manifest are sent."""

    needs_content = False

    def __init__(self, edits: Edits, cache: BlobCache):
        self.edits = edits
        self.cache = cache

    def __call__(self, supply: LayerSupply, stack: ExitStack, need: Need) -> LayerSupply:
        old = supply.image()
        fmt = self.edits.format or family(old.manifest.media_type)
        layers = [retyped(layer, fmt) for layer in old.layers]
        config = self.edits.apply(old.config) if self.edits.config_changes else None
        image = edited_image(old, config, layers, fmt, dict(self.edits.annotations), self.cache)
        return Composed(image, [(supply, i) for i in range(len(layers))], origins(self.cache, supply))


# --- append ----------------------------------------------------------------------------------------

class _Tee:
    """A reader that hands every byte it reads to `write` too."""

    def __init__(self, inner: Any, write: Write):
        self.inner = inner
        self.write = write

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        self.write(data)
        return data


def _key(kind: str, facts: object) -> str:
    return f"{kind}-{CACHE_FORMAT}-{hashlib.sha256(json.dumps(facts).encode()).hexdigest()}-gz"


def pack_directory(path: Path, cache: BlobCache) -> Layer:
    """A directory as a layer, as the builder packs one: entries sorted, owned by root, mtime 1."""
    entries = with_parents(collect(str(path.resolve()), "/"))
    owner = Owner()
    key = _key("append", [MTIME, *([e.name, e.kind, e.mode, e.size, e.link, e.stamp] for e in entries)])
    return known_layer(cache, key) or make_layer(cache, key, "gz",
                                                 lambda write: write_tar(entries, owner, MTIME, write))


def take_tar(path: Path, cache: BlobCache) -> Layer:
    """A tar (plain, gzip or zstd) as a layer: its entries as they are (owners, times, whiteouts),
    as `crane append` takes one; compressed with gzip here. A name leaving the root is refused."""
    where = f"--layer {path}"
    st = path.stat()
    key = _key("append-tar", [str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino])

    def fill(write: Write) -> None:
        with open(path, "rb") as f:
            stream, _ = decompressed(f, where)
            tee = _Tee(stream, write)
            try:
                with tarfile.open(fileobj=tee, mode="r|") as tf:  # type: ignore[call-overload]
                    for member in tf:
                        clean(member.name, where)
                        if member.islnk():
                            clean(member.linkname, where)
            except tarfile.TarError as e:
                raise UsageError(f"{where}: not a tar ({e})") from None
            while tee.read(READ_SIZE):
                pass
    return known_layer(cache, key) or make_layer(cache, key, "gz", fill)


def pack_input(path: Path, cache: BlobCache) -> Layer:
    if path.is_dir():
        return pack_directory(path, cache)
    if path.is_file():
        return take_tar(path, cache)
    raise UsageError(f"--layer {path}: no such directory or tar")


class Append:
    """New layers on top (each a directory packed, or a tar taken), diff_ids and history extended;
    the image's own layers untouched."""

    needs_content = False

    def __init__(self, paths: Sequence[Path], cache: BlobCache):
        self.paths = list(paths)
        self.cache = cache
        self._made: list[Layer] | None = None

    def layers(self) -> list[Layer]:
        """The new layers, packed once (every image of an index gets the same)."""
        if self._made is None:
            self._made = [pack_input(p, self.cache) for p in self.paths]
        return self._made

    def __call__(self, supply: LayerSupply, stack: ExitStack, need: Need) -> LayerSupply:
        old = supply.image()
        fmt = family(old.manifest.media_type)
        new = self.layers()
        history = old.config.get("history")
        if history is not None or not old.layers:  # an image whose history is absent keeps none
            history = [*(history or []), *({"created_by": "registry-tools append"} for _ in new)]
        config = _with_layers(old.config, [str(layer.diff_id) for layer in old.layers + new], history)
        image = edited_image(old, config, old.layers + [retyped(layer, fmt) for layer in new], fmt, {}, self.cache)
        made = Made(new)
        slots: list[tuple[Layers, int]] = [(supply, i) for i in range(len(old.layers))]
        slots += [(made, j) for j in range(len(new))]
        return Composed(image, slots, origins(self.cache, supply))


# --- flatten ---------------------------------------------------------------------------------------

class _Writer:
    def __init__(self, write: Write):
        self._write = write

    def write(self, data: bytes) -> int:
        self._write(data)
        return len(data)


def flattened(layers: list[Layer], cache: BlobCache) -> Layer:
    """The root filesystem `layers` make (what `export` writes) as one layer."""
    key = _key("flatten", [str(layer.diff_id) for layer in layers])

    def fill(write: Write) -> None:
        write_rootfs(layers, cache, _Writer(write))  # type: ignore[arg-type]
    return known_layer(cache, key) or make_layer(cache, key, "gz", fill)


class Flatten:
    """One layer holding the applied filesystem; the config kept, its history one entry."""

    needs_content = True

    def __init__(self, cache: BlobCache):
        self.cache = cache

    def __call__(self, supply: LayerSupply, stack: ExitStack, need: Need) -> LayerSupply:
        old = supply.image()
        layers = supply.measured()
        layer = flattened(layers, self.cache)
        fmt = family(old.manifest.media_type)
        created = {"created": old.config["created"]} if old.config.get("created") else {}
        history = [{**created, "created_by": "registry-tools flatten",
                    "comment": f"{len(layers)} layer(s) flattened into one"}]
        config = _with_layers(old.config, [str(layer.diff_id)], history)
        image = edited_image(old, config, [retyped(layer, fmt)], fmt, {}, self.cache)
        return Composed(image, [(Made([layer]), 0)], Origins(self.cache))


# --- rebase ----------------------------------------------------------------------------------------

def recorded_endpoint(name: str, local: bool) -> endpoint.Endpoint:
    """The base an image records, as an endpoint. A path is followed only for an image that is a
    file here itself (`local`): an image from a registry does not make us read this machine's files."""
    found = endpoint.parse(name, "recorded base")
    if found.repository is None and not local:
        raise UsageError(f"the image records its base as a path ({name}), which an image from a registry does "
                         "not choose: name the bases (--old-base, --new-base)")
    return found


def recorded_base(image: Image, local: bool) -> str:
    """The base an image records (its base annotations), pinned: NAME@DIGEST for a registry, the
    path for a file."""
    notes = manifest_annotations(image)
    name, digest = notes.get(BASE_NAME), notes.get(BASE_DIGEST)
    if not name or not digest:
        raise UsageError(f"{image.manifest_descriptor.digest} records no base ({BASE_NAME} and {BASE_DIGEST}): "
                         "give --old-base")
    ref = recorded_endpoint(name, local).repository
    return str(ref.name_only().with_digest(digest)) if ref is not None else name


def _history_split(history: list[Any], base_history: list[Any], base_layers: int) -> int:
    """How many of the image's history entries are its base's: the base's own history if the image's
    begins with it, else the entries up to the base's last layer."""
    if history[:len(base_history)] == base_history:
        return len(base_history)
    seen = 0
    for n, entry in enumerate(history):
        if seen == base_layers:
            return n
        if not (isinstance(entry, dict) and entry.get("empty_layer")):
            seen += 1
    return len(history) if seen == base_layers else 0


class Rebase:
    """The old base's layers (which must be the image's first) swapped for the new base's; the
    image's own layers, config and history kept, diff_ids and base annotations rebuilt. The new
    base's layers come from its own origin (between registries nothing is downloaded)."""

    needs_content = False

    def __init__(self, old_base: str | None, new_base: str | None, session: Session, local: bool = False):
        """None: the base the image records (the old one pinned to its digest; the new one by its
        name, as it resolves now); a recorded path only for a `local` image (recorded_endpoint)."""
        self.old_base = old_base
        self.new_base = new_base
        self.session = session
        self.local = local

    def _old_base(self, old: Image, choice: Choice) -> tuple[int, list[Any]]:
        """How many of the image's layers are the old base's, and the old base's history."""
        text = self.old_base or recorded_base(old, self.local)
        with endpoint.parse(text, "old base").image(self.session, choice).open(Need.RELAY) as then:
            base = then.image()
        base_ids = [layer.diff_id for layer in base.layers]
        if [layer.diff_id for layer in old.layers[:len(base_ids)]] != base_ids:
            raise UsageError(f"the old base {text} is not the base of {old.manifest_descriptor.digest}: its "
                             f"{len(base_ids)} layer(s) are not the image's first layers")
        return len(base_ids), list(base.config.get("history") or [])

    def __call__(self, supply: LayerSupply, stack: ExitStack, need: Need) -> LayerSupply:
        old = supply.image()
        choice = Choice(old.chosen_platform, False, True)
        k, then_history = self._old_base(old, choice)
        new_text = self.new_base or manifest_annotations(old).get(BASE_NAME)
        if not new_text:
            raise UsageError(f"{old.manifest_descriptor.digest} records no base name ({BASE_NAME}): give --new-base")
        new_base = endpoint.parse(new_text, "new base") if self.new_base else recorded_endpoint(new_text, self.local)
        base = stack.enter_context(new_base.image(self.session, choice).open(need))
        now = base.image()
        if (now.platform.os, now.platform.architecture) != (old.platform.os, old.platform.architecture):
            raise UsageError(f"the new base {new_text} is {now.platform}, the image {old.platform}")
        fmt = family(old.manifest.media_type)
        layers = [retyped(layer, fmt) for layer in now.layers] + old.layers[k:]
        history = old.config.get("history")
        if history is not None:
            history = list(now.config.get("history") or []) + history[_history_split(history, then_history, k):]
        config = _with_layers(old.config, [str(layer.diff_id) for layer in layers], history)
        notes = {BASE_NAME: recorded_name(new_text, "new base"), BASE_DIGEST: str(now.manifest_descriptor.digest)}
        image = edited_image(old, config, layers, fmt, notes if fmt == "oci" else {}, self.cache)
        slots: list[tuple[Layers, int]] = [(base, j) for j in range(len(now.layers))]
        slots += [(supply, i) for i in range(k, len(old.layers))]
        return Composed(image, slots, origins(self.cache, supply, base))

    @property
    def cache(self) -> BlobCache:
        return self.session.cache
