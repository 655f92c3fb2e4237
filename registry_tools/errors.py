"""Typed exceptions: the library raises these, the CLI turns each into one line and an exit code.

Exit status follows the contract: 1 for a failure the user must act on (verification,
network, auth, not found), 2 for bad usage or bad input.
"""
from __future__ import annotations

import re
from typing import Iterable

MAX_MESSAGE = 2000
# C0 and C1 controls, DEL, and the Unicode marks that reorder or hide text on a terminal.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """Text fit for a terminal: the one place that neutralises what a server (or a file) wrote.

    Control characters and escape sequences become visible escapes (`\\x1b`, `\\n`), so a
    registry's error message can neither forge an output line nor move the cursor; very
    long text is cut.
    """
    out = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    out = out.encode("utf-8", "backslashreplace").decode("utf-8")
    return out if len(out) <= limit else out[:limit] + " …"


def unknown_word(what: str, word: str, known: Iterable[str]) -> str:
    """`unknown key; did you mean 'fromImage'?`: a word that is none of `known`, named with the one
    nearest to it (a typo), else with all of them."""
    import difflib

    names = sorted(known)
    near = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"unknown {what}" + (f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(names)})")


class RegistryToolsError(Exception):
    """Base class; `exit_code` is what the CLI returns for it.

    Its text is always printable: whatever a message quotes from the network or a file is
    neutralised here, once, for every error.
    """

    exit_code = 1

    def __str__(self) -> str:
        return printable(super().__str__())


class UsageError(RegistryToolsError):
    """The caller's input is malformed (a reference, a digest, a flag value)."""

    exit_code = 2


class InvalidReference(UsageError):
    pass


class InvalidDigest(UsageError):
    pass


class InvalidPlatform(UsageError):
    pass


class VerificationError(RegistryToolsError):
    """Content did not match what was pinned or announced."""


class CacheDamaged(VerificationError):
    """A blob (or a fact about it) in the local cache is not what it was stored as."""

    def __init__(self, digest: object, reason: str):
        super().__init__(f"cached blob {digest} is damaged ({reason})")
        self.digest = digest
        self.reason = reason


class LayerFormatError(RegistryToolsError):
    """A layer's bytes are what the digest names, but not a tar in a compression we read."""


class DigestMismatch(VerificationError):
    def __init__(self, what: str, expected: str, actual: str):
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class SizeMismatch(VerificationError):
    def __init__(self, what: str, expected: int, actual: int):
        super().__init__(f"{what}: size mismatch: expected {expected} bytes, got {actual}")
        self.expected = expected
        self.actual = actual


class HashMismatch(VerificationError):
    """The output's hash differs from the hash the user pinned."""

    def __init__(self, expected: str, actual: str, sri: str):
        super().__init__(
            f"hash mismatch: specified {expected}, got {sri}; nothing was written"
        )
        self.expected = expected
        self.actual = actual
        self.sri = sri


class ManifestError(RegistryToolsError):
    """A manifest or index that cannot be used (unknown type, schema1, too large, malformed)."""


class PlatformNotFound(RegistryToolsError):
    def __init__(self, wanted: str, offered: list[str], single: bool = False):
        listing = ", ".join(offered) if offered else "none"
        if single:
            super().__init__(f"the image is for {listing}, not for the platform asked for, {wanted}")
        else:
            super().__init__(f"no image for platform {wanted} in the index; it offers: {listing}")
        self.wanted = wanted
        self.offered = offered


class RegistryError(RegistryToolsError):
    """The registry answered with an error we cannot recover from."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class RateLimitLow(RegistryError):
    """The registry's announced request budget is (nearly) spent: stopped before HTTP 429."""


class NotFound(RegistryError):
    pass


class AuthError(RegistryError):
    pass


class NetworkError(RegistryToolsError):
    """The registry could not be reached, or the connection failed past all retries."""


class ProxyFailure(NetworkError):
    """The proxy a connection goes through could not be reached or refused it: not the registry's doing."""


class ResponseTooLarge(RegistryError):
    """A response body went past the bound set for its kind (a manifest, a token, an error)."""


class Interrupted(RegistryToolsError):
    exit_code = 130
