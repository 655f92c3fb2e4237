"""Platforms: values and parsing (`values`), and choosing an image from an index (`choose`).

Normalisation and the `Only` matcher follow containerd/platforms; every rule about
platforms is in this package, nowhere else.
"""
from registry_tools.model.platform.choose import (IMAGE_MANIFEST_TYPES, Matcher, choose, choose_in_index,
                                                  is_attestation, offered_platforms, only, only_strict,
                                                  windows_compatible)
from registry_tools.model.platform.values import (ATTESTATION_ANNOTATION, KNOWN_ARCH, KNOWN_OS, ZSTD_ANNOTATION,
                                                  Choice, Platform, check_fields, declared, format_all, format_platform,
                                                  host_platform, normalize_arch, normalize_os, parse, pin_fields,
                                                  requested)

__all__ = [
    "ATTESTATION_ANNOTATION", "IMAGE_MANIFEST_TYPES", "KNOWN_ARCH", "KNOWN_OS", "ZSTD_ANNOTATION", "Choice",
    "Matcher", "Platform", "check_fields", "choose", "choose_in_index", "declared", "format_all", "format_platform",
    "host_platform", "is_attestation", "normalize_arch", "normalize_os", "offered_platforms", "only",
    "only_strict", "parse", "pin_fields", "requested", "windows_compatible",
]
