"""Platforms as values: parsing, normalisation (containerd's rules), formatting, the host's,
what a user asks for, what a pin records and what a build declares.

Every arm/arm64 variant rule lives here, once: `normalize_arch` (containerd's), and the
three places they meet users (`requested`, `pin_fields`, `declared`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, cast
from urllib.parse import unquote

from registry_tools.errors import InvalidPlatform, RegistryToolsError, UsageError

KNOWN_OS = {
    "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
    "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos",
}
KNOWN_ARCH = {
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
    "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
    "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
}
MAX_VALUE = 64
# os, architecture and variant: what a platform specifier can name, from a letter or digit on (so
# never a `/`, `..`, a space or a control character); os.version and os.features: visible ASCII
# (format_all escapes `%+()/`).
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}" % (MAX_VALUE - 1), re.ASCII)
_OPTION = re.compile(r"[!-~]{1,%d}" % MAX_VALUE, re.ASCII)
VALUE_GRAMMAR = f"a letter or digit, then letters, digits, '_', '.' and '-', at most {MAX_VALUE}"
ZSTD_ANNOTATION = "io.github.containers.compression.zstd"
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
LTSC2022_BUILD = 20348


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Platform":
        """An index entry's platform, or an image config's (both checked by `check_fields` first)."""
        return cls(
            os=str(obj.get("os") or ""),
            architecture=str(obj.get("architecture") or ""),
            variant=str(obj.get("variant") or ""),
            os_version=str(obj.get("os.version", "") or ""),
            os_features=tuple(f for f in obj.get("os.features", ()) or () if f),  # null or "": absent
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    def normalized(self) -> "Platform":
        arch, variant = normalize_arch(self.architecture, self.variant)
        return Platform(normalize_os(self.os), arch, variant, self.os_version, self.os_features)

    def __str__(self) -> str:
        return format_platform(self)


def check_fields(obj: Mapping[str, Any], where: str, error: Callable[[str], RegistryToolsError]) -> None:
    """The one rule for a platform read from outside (an index entry's platform, an image config, a
    build spec): os, architecture and variant are a letter or digit, then letters, digits, `_`, `.`
    and `-`; os.version and each of os.features visible ASCII; each at most MAX_VALUE characters. Null or ""
    is absent. Anything else is `error`, naming `where`, the field and (quoted) its value."""
    for key in ("os", "architecture", "variant", "os.version"):
        _check_value(key, obj.get(key), _OPTION if key == "os.version" else _VALUE, where, error)
    features = obj.get("os.features")
    if features is None:
        return
    if not isinstance(features, list):
        raise error(f"{where}: platform field os.features must be a list of strings")
    for feature in features:
        _check_value("os.features", feature, _OPTION, where, error)


def _check_value(key: str, value: Any, grammar: re.Pattern[str], where: str,
                 error: Callable[[str], RegistryToolsError]) -> None:
    if value is None or value == "":
        return
    if not isinstance(value, str):
        raise error(f"{where}: platform field {key} must be a string")
    if not grammar.fullmatch(value):
        rule = VALUE_GRAMMAR if grammar is _VALUE else f"visible ASCII, at most {MAX_VALUE}"
        shown = repr(value[:MAX_VALUE]) + ("…" if len(value) > MAX_VALUE else "")
        raise error(f"{where}: platform field {key} {shown} is not a platform value ({rule})")


def normalize_os(os_name: str) -> str:
    if os_name == "":
        return host_platform().os
    o = os_name.lower()
    return "darwin" if o == "macos" else o


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch, including its `arm` → `arm/v7` default."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            variant = ""
        elif variant in ("9", "9.0", "v9.0"):
            variant = "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
        return "arm", variant
    return arch, variant


def entry_arch(arch: str, variant: str) -> tuple[str, str]:
    """Normalise an index entry but keep an absent arm variant absent (it ranks last)."""
    a, v = normalize_arch(arch, variant)
    if a == "arm" and variant.lower() in ("",):
        return a, ""
    return a, v


def host_platform() -> Platform:
    import platform as _pyplatform  # only when the host's own platform is asked for

    machine = _pyplatform.machine() or "amd64"
    arch, variant = normalize_arch(machine, "")
    if arch == "arm":
        variant = _arm_cpu_variant() or variant
    return Platform("linux", arch, variant)


def _arm_cpu_variant() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("cpu architecture"):
                    v = line.split(":", 1)[1].strip()
                    return "v" + v if v.isdigit() else ""
    except OSError:
        pass
    return ""


# --- the specifier syntax: os[(version+feature…)][/arch[/variant]] ---------------------

def parse(specifier: str) -> Platform:
    """containerd's platforms.Parse: `linux/arm64`, `arm64`, `windows(10.0.17763)/amd64`…"""
    bad = InvalidPlatform(f"invalid platform {specifier!r}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8")
    if "*" in specifier:
        raise bad
    parts = specifier.split("/", 3)
    os_part, _, options = parts[0].partition("(")
    os_version, features = "", cast("tuple[str, ...]", ())
    if options:
        if not options.endswith(")"):
            raise bad
        os_version, features = _parse_os_options(options[:-1])
    if not all(_VALUE.fullmatch(part) for part in [os_part] + parts[1:]):
        raise bad
    if not all(_OPTION.fullmatch(option) for option in (os_version, *features) if option):
        raise bad
    if len(parts) == 1:
        os_name = normalize_os(os_part)
        host = host_platform()
        if os_name in KNOWN_OS:
            variant = host.variant if host.architecture == "arm" and host.variant != "v7" else ""
            return Platform(os_name, host.architecture, variant, os_version, features)
        arch, variant = normalize_arch(os_part, "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in KNOWN_ARCH:
            return Platform(host.os, arch, variant, os_version, features)
        raise InvalidPlatform(f"invalid platform {specifier!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(normalize_os(os_part), arch, variant, os_version, features)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(normalize_os(os_part), arch, variant, os_version, features)
    raise bad


def _parse_os_options(text: str) -> tuple[str, tuple[str, ...]]:
    version, *features = text.split("+")
    return unquote(version), tuple(unquote(f) for f in features if f)


def _escape(s: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in "%+()/" else c for c in s)


def format_platform(p: Platform) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def format_all(p: Platform) -> str:
    """Format with os.version and os.features, as containerd's FormatAll."""
    os_part = p.os
    if p.os_version or p.os_features:
        feats = "".join("+" + _escape(f) for f in sorted(p.os_features))
        os_part += f"({_escape(p.os_version)}{feats})"
    return "/".join(x for x in (os_part, p.architecture, p.variant) if x)


# --- what users ask for, pin and declare ---------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """How to pick an image from an index: the platform wanted, and how strictly."""

    wanted: Platform
    cross_arch: bool = False  # let amd64 take 386 and arm64 take arm
    explicit: bool = False  # the user named the platform: a single-platform image must match it too


def requested(platform: "str | Platform | None" = None, os_name: str | None = None, arch: str | None = None,
              variant: str | None = None) -> Platform:
    """The platform to choose: `--platform`, or `--os/--arch/--variant`, defaulting to linux and the host's CPU."""
    if isinstance(platform, Platform):
        return platform
    if platform:
        if os_name or arch or variant:
            raise UsageError("give either --platform or --os/--arch/--variant, not both")
        return parse(platform)
    host = host_platform()
    o = normalize_os(os_name or "linux")
    if arch:
        a, v = normalize_arch(arch, variant or "")
        if variant is None and a == "arm" and arch.lower() == "arm":
            v = ""  # plain "arm": an entry without a variant first, then arm/v7 and older
        if variant is None and arch.lower() in ("arm64", "aarch64"):
            v = ""
        return Platform(o, a, v)
    return Platform(o, host.architecture, variant if variant is not None else host.variant)


def pin_fields(p: Platform) -> tuple[str, str, str]:
    """(os, arch, variant) as a pin records them, so that `requested` of them picks the same entry."""
    arch, variant = normalize_arch(p.architecture, p.variant)
    if p.architecture.lower() == "arm" and not p.variant:
        variant = ""  # the index entry named no variant; say so, so pull picks the same entry
    elif arch == "arm64" and p.variant:
        variant = p.variant  # keep "v8" as the index wrote it: pull treats it the same
    return p.os, arch, variant


def declared(os_name: str, arch: str, variant: str, variant_given: bool) -> Platform:
    """The platform a build declares in its config (arm defaults to v7; arm64's v8 only if given)."""
    check_fields({"os": os_name, "architecture": arch, "variant": variant}, "build spec", InvalidPlatform)
    a, v = normalize_arch(arch, variant)
    if a == "arm" and not variant:
        v = "v7"
    if a == "arm64" and v == "":
        v = "v8" if variant_given else ""
    return Platform(normalize_os(os_name), a, v)
