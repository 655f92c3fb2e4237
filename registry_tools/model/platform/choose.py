"""Choosing an image from a manifest list or index (containerd's and containers/image's rules).

The chooser ranks entries: exact match first, then the variants the requested CPU can
run (amd64 v3→v2→v1, arm v7→v6→v5, arm64 v8.x→v8), then an entry that names the
architecture without a variant. Cross-architecture fallbacks (amd64→386, arm64→arm)
only when asked for. Attestation entries are never chosen.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from registry_tools.errors import PlatformNotFound
from registry_tools.model.platform.values import (ATTESTATION_ANNOTATION, LTSC2022_BUILD, ZSTD_ANNOTATION, Platform,
                                                  entry_arch, format_all, format_platform, normalize_arch,
                                                  normalize_os)


# --- matching ---------------------------------------------------------------------------

def _windows_build(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        build = int(parts[2]) if len(parts) > 2 else 0
        revision = int(parts[3]) if len(parts) > 3 else 0
    except ValueError:
        return (0, 0)
    return build, revision


def windows_compatible(host_build: int, container_build: int) -> bool:
    """Before ltsc2022 builds must be equal; from it on, any build from ltsc2022 up to the host's runs."""
    if host_build < LTSC2022_BUILD:
        return host_build == container_build
    return LTSC2022_BUILD <= container_build <= host_build


def _os_version_matches(wanted: Platform, have: Platform) -> bool:
    if wanted.os != "windows" or not wanted.os_version or not have.os_version:
        return True
    return windows_compatible(_windows_build(wanted.os_version)[0], _windows_build(have.os_version)[0])


def _vector(p: Platform, cross_arch: bool) -> list[tuple[str, str]]:
    """containerd's platformVector: what a CPU of this platform can run, best first."""
    arch, variant = p.architecture, p.variant
    out = [(arch, variant)]
    if arch == "amd64":
        m = re.fullmatch(r"v(\d+)", variant)
        if m and int(m.group(1)) > 1:
            out += [("amd64", f"v{n}" if n > 1 else "") for n in range(int(m.group(1)) - 1, 0, -1)]
        if cross_arch:
            out.append(("386", ""))
    elif arch == "arm":
        m = re.fullmatch(r"v(\d+)", variant)
        if m and int(m.group(1)) > 5:
            out += [("arm", f"v{n}") for n in range(int(m.group(1)) - 1, 4, -1)]
    elif arch == "arm64":
        m = re.fullmatch(r"v(\d+)(?:\.(\d+))?", variant or "v8")
        major, minor = (int(m.group(1)), int(m.group(2) or 0)) if m else (8, 0)
        out = []
        if major >= 9:
            out += [("arm64", f"v9.{n}" if n else "v9") for n in range(minor, -1, -1)]
            minor = min(minor + 5, 9)
        out += [("arm64", f"v8.{n}" if n else "") for n in range(minor, -1, -1)]
        if cross_arch:
            out += [("arm", f"v{n}") for n in range(8, 4, -1)]
    return out


class Matcher:
    """A set of acceptable platforms, best first (containerd's Only / OnlyStrict)."""

    def __init__(self, wanted: Platform, strict: bool = False):
        self.wanted = wanted.normalized()
        vec = _vector(self.wanted, cross_arch=True)
        self._vector = vec[:1] if strict else vec

    def rank(self, have: Platform) -> int | None:
        h = have.normalized()
        if h.os != self.wanted.os or not _os_version_matches(self.wanted, have):
            return None
        key = (h.architecture, h.variant)
        if h.architecture == "amd64" and h.variant == "v1":
            key = ("amd64", "")
        return self._vector.index(key) if key in self._vector else None

    def match(self, have: Platform) -> bool:
        return self.rank(have) is not None


def only(p: Platform) -> Matcher:
    return Matcher(p)


def only_strict(p: Platform) -> Matcher:
    return Matcher(p, strict=True)


# --- choosing from an index -----------------------------------------------------------

def is_attestation(entry: dict[str, Any]) -> bool:
    annotations = entry.get("annotations") or {}
    plat = entry.get("platform") or {}
    return (
        ATTESTATION_ANNOTATION in annotations
        or plat.get("os") == "unknown"
        or plat.get("architecture") == "unknown"
    )


def _wanted_variants(wanted: Platform, cross_arch: bool) -> list[tuple[str, str]]:
    arch, variant = normalize_arch(wanted.architecture, wanted.variant)
    if wanted.architecture.lower() == "arm" and not wanted.variant:
        # "linux/arm" asks first for an entry that names no variant, then arm's default v7.
        return [("arm", "")] + _vector(Platform(wanted.os, "arm", "v7"), cross_arch)
    vec = _vector(Platform(wanted.os, arch, variant), cross_arch)
    if (arch, "") not in vec:
        vec.append((arch, ""))  # an entry that names the architecture without a variant
    return vec


IMAGE_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def choose_in_index(index: dict[str, Any], wanted: Platform, prefer_zstd: bool = False,
                    cross_arch: bool = False) -> int:
    """Position in `index["manifests"]` of the image for `wanted`.

    Only image manifests are candidates. An entry without a platform is a last resort,
    and only in an image index: an index that declares an artifactType lists artifacts.
    """
    entries = index.get("manifests") or []
    candidates: list[dict[str, Any]] = []
    for e in entries:
        mt = e.get("mediaType", "")
        ok = (not mt or mt in IMAGE_MANIFEST_TYPES) and not e.get("artifactType")
        if ok and e.get("platform") is None and index.get("artifactType"):
            ok = False
        candidates.append(e if ok else {"platform": {"os": "unknown", "architecture": "unknown"}})
    return choose(candidates, wanted, prefer_zstd, cross_arch, offered_from=entries)


def choose(
    entries: Sequence[dict[str, Any]],
    wanted: Platform,
    prefer_zstd: bool = False,
    cross_arch: bool = False,
    offered_from: Sequence[dict[str, Any]] | None = None,
) -> int:
    """Index of the entry to use for `wanted`; raises PlatformNotFound listing what exists."""
    want_os = normalize_os(wanted.os)
    vector = _wanted_variants(wanted, cross_arch)
    want_build, _ = _windows_build(wanted.os_version) if wanted.os_version else (0, 0)
    best: tuple | None = None
    best_i = -1
    for i, entry in enumerate(entries):
        if is_attestation(entry):
            continue
        plat = entry.get("platform")
        if plat is None:
            prank, wrank = len(vector) + 1, (0, 0)
        else:
            have = Platform.from_json(plat)
            if normalize_os(have.os) != want_os or not _os_version_matches(
                Platform(want_os, "", "", wanted.os_version), have
            ):
                continue
            key = entry_arch(have.architecture, have.variant)
            if key not in vector:
                continue
            prank = vector.index(key)
            wrank = (0, 0)
            if wanted.os_version:
                build, rev = _windows_build(have.os_version) if have.os_version else (-1, 0)
                wrank = (0 if build == want_build else (1 if build >= 0 else 2), -rev)
        is_zstd = (entry.get("annotations") or {}).get(ZSTD_ANNOTATION) == "true"
        key_ = (prank, wrank, is_zstd != prefer_zstd, i)
        if best is None or key_ < best:
            best, best_i = key_, i
    if best is None:
        raise PlatformNotFound(format_all(wanted) if wanted.os_version else format_platform(wanted),
                               offered_platforms(offered_from if offered_from is not None else entries))
    return best_i


def offered_platforms(entries: Sequence[dict[str, Any]]) -> list[str]:
    out = []
    for e in entries:
        if is_attestation(e):
            continue
        p = e.get("platform")
        out.append(format_all(Platform.from_json(p)) if p else "(no platform)")
    return out
