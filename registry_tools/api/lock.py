"""Lock files: the pins `prefetch --from … --json` writes, read back with the line of each entry.

A lock drives mirroring (`sync`) and is checked against what its tags resolve to now
(`prefetch --check`) or brought up to date (`prefetch --update`). Every entry is checked
for shape before anything is sent, and a malformed one is named by its line. A lock may
mix full pins (a `hash`) and layer pins (`manifests`, model.pin).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry_tools.errors import InvalidDigest, InvalidReference, UsageError
from registry_tools.fileio import replacing
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.manifest import load_json
from registry_tools.model.pin import is_layer_pin, layer_pin

REQUIRED = ("imageName", "imageDigest", "hash", "finalImageName", "finalImageTag")
ONE_PLATFORM = ("os", "arch", "manifestDigest")  # not in the pin of a whole index (platform "all")
OPTIONAL = ("reference", "platform", "variant", "format")
MAX_LOCK = 64 << 20


@dataclass(frozen=True)
class LockEntry:
    line: int  # where the entry starts in its file
    data: dict[str, Any]  # verbatim, in its file's key order

    @property
    def reference(self) -> str:
        return str(self.data.get("reference") or f"{self.data['imageName']}@{self.data['imageDigest']}")

    @property
    def platform(self) -> str | None:
        p = self.data.get("platform")
        return str(p) if p else None

    @property
    def image_name(self) -> str:
        return str(self.data["imageName"])

    @property
    def image_digest(self) -> Digest:
        return Digest.parse(self.data["imageDigest"])

    @property
    def layers(self) -> bool:
        """A layer pin (its blobs listed), not a full pin (the hash of one output)."""
        return is_layer_pin(self.data)

    @property
    def format(self) -> str:
        return str(self.data.get("format") or "docker-archive")

    def renamed(self, image_name: str) -> "LockEntry":
        """The same pin with only imageName changed (a mirror's copy of it)."""
        data = dict(self.data)
        data["imageName"] = image_name
        return LockEntry(self.line, data)


def _entry_lines(text: str, count: int) -> list[int]:
    """The line each element of the `images` array starts on (the document parsed already)."""
    m = re.search(r'"images"\s*:\s*\[', text)
    if m is None:
        return [0] * count
    decoder = json.JSONDecoder()
    pos, lines = m.end(), []
    for _ in range(count):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        try:
            pos = decoder.raw_decode(text, pos)[1]
        except ValueError:
            break
    return lines + [0] * (count - len(lines))


def check_entry(where: str, obj: Any) -> dict[str, Any]:
    """A lock entry or a pin file of either kind, every field checked."""
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: an entry must be a JSON object")
    if is_layer_pin(obj):
        layer_pin(obj, where)
        _check_optional(where, obj)
        return obj
    whole = obj.get("platform") == "all"
    for key in REQUIRED + (() if whole else ONE_PLATFORM):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise UsageError(f"{where}: {key} is missing or not a string")
    if whole and obj.get("format", "docker-archive") == "docker-archive":
        raise UsageError(f"{where}: a whole index (platform all) is pinned as format oci or oci-archive")
    _check_optional(where, obj)
    try:
        Digest.parse(obj["imageDigest"])
        if isinstance(obj.get("manifestDigest"), str):
            Digest.parse(obj["manifestDigest"])
        ref = refs.parse_normalized(obj["imageName"])
    except (InvalidDigest, InvalidReference) as e:
        raise UsageError(f"{where}: {e}") from None
    if ref.tag or ref.digest:
        raise UsageError(f"{where}: imageName {obj['imageName']!r} must name a repository only")
    return obj


def _check_optional(where: str, obj: dict[str, Any]) -> None:
    for key in OPTIONAL:
        if key in obj and not isinstance(obj[key], str):
            raise UsageError(f"{where}: {key} must be a string")
    if "reference" in obj:
        try:
            refs.parse_normalized(obj["reference"])
        except InvalidReference as e:
            raise UsageError(f"{where}: {e}") from None


def read_lock(path: str | Path) -> list[LockEntry]:
    """A JSON lock (`{"version": 1, "images": [...]}`), every entry checked."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_LOCK:
            raise UsageError(f"{p}: over {MAX_LOCK >> 20} MB; not a lock file")
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{p}: not UTF-8 text; not a lock file") from None
    if text.lstrip().startswith("["):
        raise UsageError(f"{p}: a Nix lock; give the JSON one (prefetch --from FILE --json)")
    doc = load_json(text, str(p), UsageError)
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("images"), list):
        raise UsageError(f'{p}: not a lock file (expected {{"version": 1, "images": [...]}})')
    lines = _entry_lines(text, len(doc["images"]))
    return [LockEntry(lines[i], check_entry(f"{p}:{lines[i]}", obj)) for i, obj in enumerate(doc["images"])]


def lock_text(entries: list[LockEntry] | list[dict[str, Any]]) -> str:
    images = [e.data if isinstance(e, LockEntry) else e for e in entries]
    return json.dumps({"version": 1, "images": images}, indent=2) + "\n"


def write_lock(path: str | Path, text: str) -> None:
    """Beside the destination, then renamed over it: a lock is never half-written."""
    with replacing(Path(path)) as f:
        f.write(text.encode())
