"""Typed exceptions: the library raises these, the CLI turns each into one line and an exit code.

Exit status follows the contract: 1 for a failure the user must act on (verification,
network, auth, not found), 2 for bad usage or bad input.
"""
from __future__ import annotations


class RegistryToolsError(Exception):
    """Base class; `exit_code` is what the CLI returns for it."""

    exit_code = 1


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


class NotFound(RegistryError):
    pass


class AuthError(RegistryError):
    pass


class NetworkError(RegistryToolsError):
    """The registry could not be reached, or the connection failed past all retries."""


class Interrupted(RegistryToolsError):
    exit_code = 130
