"""The build spec: a JSON document whose keys mirror nixpkgs' buildLayeredImage.

Validation happens here, up front, so a typo fails with the key's name before any work.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry_tools.builder.pack import Owner
from registry_tools.model import reference as refs
from registry_tools.errors import UsageError, unknown_word
from registry_tools.model.platform import Platform, declared, host_platform

log = logging.getLogger("registry_tools.build")
DEFAULT_TIME = "1970-01-01T00:00:01Z"
MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z
MAX_LAYERS = 125
COMPRESSORS = ("gz", "zstd", "none")
LAYERINGS = ("auto", "popularity", "single")  # single: buildImage's one layer
CONFIG_KEYS = {  # OCI image config fields and the JSON type each must have
    "User": str, "ExposedPorts": dict, "Env": list, "Entrypoint": list, "Cmd": list, "Volumes": dict,
    "WorkingDir": str, "Labels": dict, "StopSignal": str, "ArgsEscaped": bool, "Healthcheck": dict,
    "OnBuild": list, "Shell": list, "StopTimeout": int,
}


@dataclass(frozen=True)
class PathInput:
    source: Path
    target: str  # absolute path in the image


@dataclass(frozen=True)
class ClosureInput:
    graph: Path
    roots: tuple[str, ...] | None
    store_dir: str  # where store paths live in the image (and in the graph)
    real_store_dir: Path  # where they are read from on this machine
    exclude: tuple[str, ...] = ()  # store paths of the graph not to put in the image (nixpkgs' excludePaths)


@dataclass(frozen=True)
class FromImage:
    """The base image as a source endpoint: a path (PATH[:NAME]) or a pinned reference."""

    endpoint: str


@dataclass
class BuildSpec:
    name: str
    tag: str | None = None
    from_image: FromImage | None = None
    inherit_config: bool | tuple[str, ...] = False
    paths: list[PathInput] = field(default_factory=list)
    closure: ClosureInput | None = None
    contents: list[Path] = field(default_factory=list)
    contents_key: str = "contents"  # the key the spec gave them by (copyToRoot: buildImage's name), for errors
    keep_contents_dirlinks: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    platform: Platform = field(default_factory=host_platform)
    created: str = DEFAULT_TIME
    mtime: int = 1
    max_layers: int = 100
    extra_commands: str = ""
    fake_root_commands: str = ""
    uid: int = 0
    gid: int = 0
    uname: str = "root"
    gname: str = "root"
    compressor: str = "gz"
    layering: str = "auto"
    annotations: dict[str, str] = field(default_factory=dict)  # on the image manifest
    fake_nss: bool = False  # /etc/passwd, /etc/group (root, nobody), /etc/nsswitch.conf, /var/empty
    ca_certificates: Path | None = None  # a CA bundle for /etc/ssl/certs/ca-certificates.crt (and its links)
    bin_sh: str | None = None  # /bin/sh -> this path in the image
    usr_bin_env: str | None = None  # /usr/bin/env -> this path in the image
    include_nix_db: bool = False  # /nix/var/nix/db registering the closure
    include_store_paths: bool = True  # False: the closure's store paths are not put in the image
    enable_fakechroot: bool = False  # fakeRootCommands run chrooted into the final layer's root
    run_as_root: str = ""  # a script run as root over the image's tree; what it changes is one more layer
    owners: dict[str, Owner] = field(default_factory=dict)  # final-layer paths (and all below) given to these
    base_dir: Path = Path(".")


KEYS = {
    "name", "tag", "fromImage", "fromImageName", "inheritConfig", "paths", "closure", "contents",
    "keepContentsDirlinks", "config", "architecture", "os", "variant", "created", "mtime", "maxLayers",
    "extraCommands", "fakeRootCommands", "uid", "gid", "uname", "gname", "compressor", "layering",
    "annotations", "indexAnnotations", "platforms", "fakeNss", "caCertificates", "binSh", "usrBinEnv",
    "copyToRoot", "diskSize", "buildVMMemorySize", "includeNixDB", "fromImageTag", "includeStorePaths",
    "enableFakechroot", "runAsRoot", "shadowSetup",
}
VM_ONLY = ("diskSize", "buildVMMemorySize")  # configure nixpkgs' VM: accepted, nothing to do
CREATED_ANNOTATION = "org.opencontainers.image.created"


def _bad(key: str, message: str) -> UsageError:
    return UsageError(f"build spec: {key}: {message}")


def _want(obj: dict, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj[key]
    if isinstance(value, bool) and kind in (int, (int,)):
        raise _bad(key, f"must be {what}")
    if not isinstance(value, kind):
        raise _bad(key, f"must be {what}, not {type(value).__name__}")
    return value


def parse_time(key: str, value: str, now: datetime.datetime | None = None) -> tuple[str, int]:
    """An ISO-8601 time or "now" as (RFC 3339 text, seconds since the epoch)."""
    if value == "now":
        t = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    else:
        try:
            t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _bad(key, f"{value!r} is not an ISO-8601 time or \"now\"") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
    try:
        t = t.astimezone(datetime.timezone.utc)
        seconds = int(t.timestamp())
    except (OverflowError, ValueError):
        raise _bad(key, f"{value!r} is out of range") from None
    if not 0 <= seconds <= MAX_TIME:
        raise _bad(key, f"{value!r} must be between 1970-01-01 and 9999-12-31 (UTC)")
    text = t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond:06d}".rstrip("0") if t.microsecond else "") + "Z"
    return text, seconds


def _resolve(base: Path, p: str) -> Path:
    return Path(p) if os.path.isabs(p) else base / p


def _base_image(obj: dict[str, Any], spec: BuildSpec, base_dir: Path, now: datetime.datetime | None) -> None:
    """fromImage, fromImageName and inheritConfig."""
    if obj.get("fromImage") is not None:
        loc = _want(obj, "fromImage", str, "a path or a pinned image reference")
        name_in = obj.get("fromImageName")
        if name_in is not None:
            name_in = _want(obj, "fromImageName", str, "a string")
        path = _resolve(base_dir, loc)
        if obj.get("fromImageTag") is not None:
            tag = _want(obj, "fromImageTag", str, "a tag")
            if not refs.TAG_RE.match(tag):
                raise _bad("fromImageTag", f"{tag!r} is not a valid tag")
            if path.is_dir():
                name_in = tag  # a layout names its images by tag
            elif path.is_file():
                if name_in is None:
                    raise _bad("fromImageTag", "picks an image of a docker-archive with fromImageName: give both")
                name_in = f"{name_in}:{tag}"
            else:
                raise _bad("fromImageTag", "a pinned reference names its image already")
        if path.exists():
            spec.from_image = FromImage(f"{path}:{name_in}" if name_in else str(path))
        elif "@sha256:" in loc:
            spec.from_image = FromImage(loc)
        else:
            raise _bad("fromImage", f"{loc!r} is neither an existing archive or layout "
                                    "nor a pinned reference (IMAGE@sha256:…)")
    elif "fromImageName" in obj or "fromImageTag" in obj:
        key = "fromImageName" if "fromImageName" in obj else "fromImageTag"
        raise _bad(key, "only makes sense with fromImage")
    if "inheritConfig" in obj:
        v = obj["inheritConfig"]
        if isinstance(v, bool):
            spec.inherit_config = v
        elif isinstance(v, list) and all(isinstance(k, str) for k in v):
            spec.inherit_config = tuple(v)
        else:
            raise _bad("inheritConfig", "must be true, false or a list of config keys")


def _paths(obj: dict[str, Any], spec: BuildSpec, base_dir: Path, now: datetime.datetime | None) -> None:
    """paths: each a source on this machine and an absolute target without '..'."""
    if "paths" in obj and not isinstance(obj["paths"], (list, type(None))):
        raise _bad("paths", "must be a list")
    for i, entry in enumerate(obj.get("paths") or []):
        key = f"paths[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"source", "target"} or "source" not in entry:
            raise _bad(key, 'must be {"source": PATH, "target": ABSOLUTE_PATH}')
        if not isinstance(entry["source"], str) or not entry["source"]:
            raise _bad(f"{key}.source", "must be a path")
        source = _resolve(base_dir, entry["source"])
        target = entry.get("target") or "/" + entry["source"].lstrip("/")
        if not isinstance(target, str) or not target.startswith("/") or ".." in target.split("/"):
            raise _bad(f"{key}.target", "must be an absolute path without '..'")
        if not os.path.lexists(source):
            raise _bad(f"{key}.source", f"{source} does not exist")
        spec.paths.append(PathInput(source, "/" + target.strip("/")))


def _trees(obj: dict[str, Any], spec: BuildSpec, base_dir: Path, now: datetime.datetime | None) -> None:
    """closure, contents and keepContentsDirlinks."""
    if obj.get("closure") is not None:
        spec.closure = _closure(obj["closure"], base_dir)

    if "copyToRoot" in obj and "contents" in obj:
        raise _bad("copyToRoot", "is buildImage's name for contents: give one of them")
    key = spec.contents_key = "copyToRoot" if "copyToRoot" in obj else "contents"  # errors say what was written
    contents = obj.get(key) or []
    if isinstance(contents, str):
        contents = [contents]
    if not isinstance(contents, list) or not all(isinstance(c, str) for c in contents):
        raise _bad(key, "must be a path or a list of paths")
    for c in contents:
        p = _resolve(base_dir, c)
        if not p.is_dir():
            raise _bad(key, f"{p} is not a directory")
        spec.contents.append(p)
    if "keepContentsDirlinks" in obj:
        spec.keep_contents_dirlinks = _want(obj, "keepContentsDirlinks", bool, "true or false")
    _helpers(obj, spec, base_dir)


def _helpers(obj: dict[str, Any], spec: BuildSpec, base_dir: Path) -> None:
    """dockerTools' environment helpers: fakeNss, caCertificates, binSh, usrBinEnv."""
    if "fakeNss" in obj:
        spec.fake_nss = _want(obj, "fakeNss", bool, "true or false")
    for key, attr in (("includeStorePaths", "include_store_paths"), ("enableFakechroot", "enable_fakechroot")):
        if key in obj:
            setattr(spec, attr, _want(obj, key, bool, "true or false"))
    if "includeNixDB" in obj:
        spec.include_nix_db = _want(obj, "includeNixDB", bool, "true or false")
        if spec.include_nix_db and spec.closure is None:
            raise _bad("includeNixDB", "registers the closure's store paths: give \"closure\" too")
    if obj.get("caCertificates") is not None:
        bundle = _resolve(base_dir, _want(obj, "caCertificates", str, "the path of a CA bundle (PEM)"))
        if not bundle.is_file():
            raise _bad("caCertificates", f"{bundle} is not a file")
        spec.ca_certificates = bundle
    for key, attr in (("binSh", "bin_sh"), ("usrBinEnv", "usr_bin_env")):
        if obj.get(key) is not None:
            target = _want(obj, key, str, "the absolute path, in the image, of the program to link to")
            if not target.startswith("/") or ".." in target.split("/"):
                raise _bad(key, "must be an absolute path in the image without '..'")
            setattr(spec, attr, target)


def _run_config(obj: dict[str, Any], spec: BuildSpec, base_dir: Path, now: datetime.datetime | None) -> None:
    """config: the OCI config keys, each with its JSON type."""
    if obj.get("config") is not None:
        cfg = _want(obj, "config", dict, "an object")
        for k, v in cfg.items():
            kind = CONFIG_KEYS.get(k)
            if kind is None:
                raise _bad(f"config.{k}", unknown_word("config key", k, CONFIG_KEYS))
            if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
                raise _bad(f"config.{k}", f"must be a {kind.__name__}")
            items: list[Any] = v if isinstance(v, list) else []
            if k in ("Env", "Entrypoint", "Cmd", "Shell", "OnBuild") and not all(isinstance(x, str) for x in items):
                raise _bad(f"config.{k}", "must be a list of strings")
            if k == "Env" and not all("=" in x and not x.startswith("=") for x in items):
                raise _bad("config.Env", "entries must be NAME=VALUE")
        spec.config = dict(cfg)


def _platform(obj: dict[str, Any], spec: BuildSpec, base_dir: Path, now: datetime.datetime | None) -> None:
    """os, architecture and variant (default: this machine's)."""
    host = host_platform()
    o = obj.get("os", "linux")
    a = obj.get("architecture", host.architecture)
    v = obj.get("variant", "" if "architecture" in obj else host.variant)
    for key, value in (("os", o), ("architecture", a), ("variant", v)):
        if not isinstance(value, str):
            raise _bad(key, "must be a string")
    spec.platform = declared(o, a, v, "variant" in obj)


def _settings(obj: dict[str, Any], spec: BuildSpec, base_dir: Path, now: datetime.datetime | None) -> None:
    """times, maxLayers, commands, owners, compressor and layering."""
    for key in ("created", "mtime"):
        if key in obj:
            _want(obj, key, str, 'an ISO-8601 time or "now"')
    spec.created, _ = parse_time("created", obj.get("created", DEFAULT_TIME), now)
    _, spec.mtime = parse_time("mtime", obj.get("mtime", DEFAULT_TIME), now)

    if "maxLayers" in obj:
        spec.max_layers = _want(obj, "maxLayers", int, "a whole number")
        if not 2 <= spec.max_layers <= MAX_LAYERS:
            raise _bad("maxLayers", f"must be between 2 and {MAX_LAYERS}")
    if "runAsRoot" in obj:
        spec.run_as_root = _want(obj, "runAsRoot", str, "a string of shell commands")
    if obj.get("shadowSetup"):
        if _want(obj, "shadowSetup", bool, "true or false") and not spec.run_as_root:
            raise _bad("shadowSetup", "prepares runAsRoot to add users: give runAsRoot too")
        from registry_tools.builder.runasroot import SHADOW_SETUP

        spec.run_as_root = SHADOW_SETUP + spec.run_as_root
    for key, attr in (("extraCommands", "extra_commands"), ("fakeRootCommands", "fake_root_commands")):
        if key in obj:
            setattr(spec, attr, _want(obj, key, str, "a string of shell commands"))
    for key, attr in (("uid", "uid"), ("gid", "gid")):
        if key in obj:
            value = _want(obj, key, int, "a whole number")
            if not 0 <= value < 2 ** 31:
                raise _bad(key, "must be between 0 and 2147483647")
            setattr(spec, attr, value)
    for key, attr in (("uname", "uname"), ("gname", "gname")):
        if key in obj:
            value = _want(obj, key, str, "a string")
            if len(value.encode()) > 31 or "\0" in value:
                raise _bad(key, "must be at most 31 bytes")
            setattr(spec, attr, value)
    if "compressor" in obj:
        spec.compressor = _want(obj, "compressor", str, "a string")
        if spec.compressor not in COMPRESSORS:
            raise _bad("compressor", f"must be one of {', '.join(COMPRESSORS)}")
    if "layering" in obj:
        spec.layering = _want(obj, "layering", str, "a string")
        if spec.layering not in LAYERINGS:
            raise _bad("layering", f"must be one of {', '.join(LAYERINGS)}")
    spec.annotations = annotation_map(obj, "annotations", now)


def annotation_map(obj: dict[str, Any], key: str, now: datetime.datetime | None) -> dict[str, str]:
    """An object of strings. Nothing is filled from the clock unless asked: the value "now" for
    org.opencontainers.image.created is the time of the build."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(key, "must be an object of strings")
    if any(not k for k in value):
        raise _bad(key, "keys must not be empty")
    out = dict(value)
    if out.get(CREATED_ANNOTATION) == "now":
        out[CREATED_ANNOTATION], _ = parse_time(f"{key}.{CREATED_ANNOTATION}", "now", now)
    return out


def parse_spec(obj: Any, base_dir: Path = Path("."), now: datetime.datetime | None = None) -> BuildSpec:
    if not isinstance(obj, dict):
        raise UsageError("build spec: must be a JSON object")
    for key in ("platforms", "indexAnnotations"):
        if key in obj:
            raise _bad(key, "builds several images: read the spec with parse_build")
    unknown = sorted(set(obj) - KEYS)
    if unknown:
        raise _bad(unknown[0], unknown_word("key", unknown[0], KEYS))
    if "name" not in obj:
        raise _bad("name", "is required")
    name = _want(obj, "name", str, "a string")
    try:
        r = refs.parse_normalized(name)
    except UsageError as e:
        raise _bad("name", str(e)) from None
    if r.tag or r.digest:
        raise _bad("name", "must not carry a tag or digest; use \"tag\"")
    spec = BuildSpec(name=name, base_dir=base_dir)

    if obj.get("tag") is not None:
        spec.tag = _want(obj, "tag", str, "a string")
        if not refs.TAG_RE.match(spec.tag):
            raise _bad("tag", f"{spec.tag!r} is not a valid tag")

    for part in (_base_image, _paths, _trees, _run_config, _platform, _settings):
        part(obj, spec, base_dir, now)
    for key in VM_ONLY:
        if key in obj:
            _want(obj, key, int, "a whole number")
            log.warning("build spec: %s configures nixpkgs' build VM; no VM is used here, so it changes nothing", key)
    return spec


def _closure(value: Any, base_dir: Path) -> ClosureInput:
    key = "closure.graph"
    if isinstance(value, str):  # the short form: errors name "closure", the key written
        value, key = {"graph": value}, "closure"
    if not isinstance(value, dict):
        raise _bad("closure", "must be a path to a reference graph, or an object with \"graph\"")
    known = ("graph", "roots", "storeDir", "realStoreDir", "exclude")
    if wrong := sorted(set(value) - set(known)):
        raise _bad(f"closure.{wrong[0]}", unknown_word("key", wrong[0], known))
    if not isinstance(value.get("graph"), str):
        raise _bad(key, "must be a path to a reference graph file")
    graph = _resolve(base_dir, value["graph"])
    if not graph.is_file():
        raise _bad(key, f"{graph} does not exist")
    for key in ("roots", "exclude"):
        if value.get(key) is not None and (not isinstance(value[key], list)
                                           or not all(isinstance(r, str) for r in value[key])):
            raise _bad(f"closure.{key}", "must be a list of store paths")
    roots, exclude = value.get("roots"), value.get("exclude") or []
    store_dir = value.get("storeDir", "/nix/store")
    if not isinstance(store_dir, str) or not store_dir.startswith("/"):
        raise _bad("closure.storeDir", "must be an absolute path")
    real = value.get("realStoreDir", store_dir)
    if not isinstance(real, str):
        raise _bad("closure.realStoreDir", "must be a path")
    return ClosureInput(graph, tuple(roots) if roots is not None else None, store_dir.rstrip("/"),
                        _resolve(base_dir, real), tuple(exclude))
