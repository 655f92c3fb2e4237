"""A build spec naming several platforms: one image each, and an index over them.

`"platforms": {"linux/amd64": {...}, "linux/arm64/v8": {...}}` holds each platform's own
keys; every other key is shared. A platform's `config` and `annotations` are added to
the shared ones key by key; its other keys replace the shared ones.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry_tools.builder.spec import KEYS, BuildSpec, _bad, _want, annotation_map, parse_spec
from registry_tools.errors import UsageError
from registry_tools.model.manifest import load_json
from registry_tools.model.platform import Platform
from registry_tools.model.platform.values import parse as parse_platform

PLATFORM_KEYS = KEYS - {"name", "tag", "platforms", "indexAnnotations", "os", "architecture", "variant"}
MERGED_KEYS = ("config", "annotations")  # a platform's own keys are added to the shared ones; others replace them


@dataclass
class MultiSpec:
    """A spec naming several platforms: one image each, and one index over them."""

    name: str
    tag: str | None
    specs: list[BuildSpec]  # one per platform, sorted by platform
    annotations: dict[str, str] = field(default_factory=dict)  # on the index

    @property
    def platforms(self) -> list[str]:
        return [str(s.platform) for s in self.specs]

    def only(self, platform: Platform) -> BuildSpec:
        """The spec of one platform (`build --platform P`)."""
        for s in self.specs:
            if s.platform.normalized() == platform.normalized():
                return s
        raise UsageError(f"the build spec has no platform {platform}; it names {', '.join(self.platforms)}")


def parse_build(obj: Any, base_dir: Path = Path("."), now: datetime.datetime | None = None) -> BuildSpec | MultiSpec:
    """A build spec: one image, or (with "platforms") one image per platform and an index."""
    if not isinstance(obj, dict) or "platforms" not in obj:
        if isinstance(obj, dict) and "indexAnnotations" in obj:
            raise _bad("indexAnnotations", "only makes sense with \"platforms\" (an index is built)")
        return parse_spec(obj, base_dir, now)
    platforms = obj["platforms"]
    if not isinstance(platforms, dict) or not platforms:
        raise _bad("platforms", 'must be an object: {"linux/amd64": {...}, "linux/arm64/v8": {...}}')
    for key in ("os", "architecture", "variant"):
        if key in obj:
            raise _bad(key, "is given by each entry of \"platforms\"")
    shared = {k: v for k, v in obj.items() if k not in ("platforms", "indexAnnotations")}
    annotation_map(shared, "annotations", now)  # the shared keys are checked before any platform's replace them
    if shared.get("config") is not None:
        _want(shared, "config", dict, "an object")
    specs: list[BuildSpec] = []
    for text, own in platforms.items():
        where = f"platforms.{text}"
        if not isinstance(own, dict):
            raise _bad(where, "must be an object of build spec keys (may be empty)")
        bad = sorted(set(own) - PLATFORM_KEYS)
        if bad:
            raise _bad(f"{where}.{bad[0]}", "not allowed here" if bad[0] in KEYS else "unknown key")
        try:
            p = parse_platform(text)
        except UsageError as e:
            raise _bad(where, str(e)) from None
        merged = dict(shared)
        for k, v in own.items():
            if k in MERGED_KEYS and isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        merged.update({"os": p.os, "architecture": p.architecture})
        if p.variant:
            merged["variant"] = p.variant
        try:
            specs.append(parse_spec(merged, base_dir, now))
        except UsageError as e:
            raise UsageError(str(e).replace("build spec: ", f"build spec: {where}: ", 1)) from None
    specs.sort(key=lambda s: (s.platform.os, s.platform.architecture, s.platform.variant))
    seen = [str(s.platform) for s in specs]
    if len(set(seen)) != len(seen):
        raise _bad("platforms", "names the same platform twice")
    return MultiSpec(specs[0].name, specs[0].tag, specs, annotation_map(obj, "indexAnnotations", now))


def load_spec(path: str | os.PathLike[str]) -> BuildSpec | MultiSpec:
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"build spec {p} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"build spec {p} is a directory, not a JSON file") from None
    obj = load_json(text, f"build spec {p}", UsageError)
    return parse_build(obj, p.parent)
