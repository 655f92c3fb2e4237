"""Registry authentication: WWW-Authenticate parsing, Bearer tokens and Basic auth.

Tokens are kept per (realm, service, scope set) so a token for one repository is never
replayed against another, and renewed before `expires_in` runs out.
"""
from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

from .errors import AuthError

_TOKEN_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
DEFAULT_TOKEN_LIFETIME = 60  # seconds; what the token spec says to assume when expires_in is absent


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


class ChallengeSyntaxError(ValueError):
    pass


def parse_challenges(headers: list[str], strict: bool = False) -> list[Challenge]:
    """Parse WWW-Authenticate header values into challenges (RFC 7235 auth-params).

    Lenient by default, as distribution and containerd are; `strict` rejects a missing
    comma, an unterminated quote or a dangling backslash, as regclient does.
    """
    out: list[Challenge] = []
    for header in headers:
        out.extend(_parse_one(header, strict))
    return out


def _parse_one(s: str, strict: bool) -> list[Challenge]:
    i, n = 0, len(s)
    challenges: list[Challenge] = []

    def skip_ws(j: int) -> int:
        while j < n and s[j] in " \t":
            j += 1
        return j

    def token(j: int) -> tuple[str, int]:
        k = j
        while k < n and s[k] in _TOKEN_CHARS:
            k += 1
        return s[j:k], k

    while True:
        i = skip_ws(i)
        while i < n and s[i] == ",":
            i = skip_ws(i + 1)
        if i >= n:
            break
        scheme, i = token(i)
        if not scheme:
            if strict:
                raise ChallengeSyntaxError(f"bad character at {i}")
            break
        params: dict[str, str] = {}
        challenges.append(Challenge(scheme.lower(), params))
        i = skip_ws(i)
        while i < n:
            start = i
            key, j = token(i)
            j = skip_ws(j)
            if not key or j >= n or s[j] != "=":
                # Not an auth-param: either token68 or the next challenge's scheme.
                if key and params == {} and j < n and s[j] not in ",":
                    i = start
                    break
                if key and (j >= n or s[j] == ","):
                    if params:
                        i = start
                        break
                    i = j
                    continue
                i = start
                break
            j = skip_ws(j + 1)
            if j < n and s[j] == '"':
                j += 1
                buf = []
                closed = False
                while j < n:
                    c = s[j]
                    if c == "\\":
                        if j + 1 >= n:
                            if strict:
                                raise ChallengeSyntaxError("dangling backslash")
                            j += 1
                            break
                        buf.append(s[j + 1])
                        j += 2
                        continue
                    if c == '"':
                        closed = True
                        j += 1
                        break
                    buf.append(c)
                    j += 1
                if not closed and strict:
                    raise ChallengeSyntaxError("unterminated quoted string")
                value = "".join(buf)
            else:
                k = j
                while k < n and s[k] not in ", \t":
                    k += 1
                value = s[j:k]
                j = k
            params[key.lower()] = value
            j = skip_ws(j)
            if j < n and s[j] == ",":
                i = skip_ws(j + 1)
                continue
            if j < n and strict:
                raise ChallengeSyntaxError(f"expected ',' at {j}")
            i = j
            if j < n:
                # Lenient: a new challenge may start without a comma.
                break
        if i >= n:
            break
    return challenges


def token_scopes(challenge_scope: str, wanted: list[str]) -> list[str]:
    """The scopes to ask for: those the challenge names plus ours, each once, in order."""
    out: list[str] = []
    for s in challenge_scope.split() + wanted:
        if s and s not in out:
            out.append(s)
    return out


def validate_realm(realm: str) -> str:
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthError(f"the registry's token realm {realm!r} is not an absolute http(s) URL")
    return realm


def basic_header(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass
class Credential:
    """A username and password, or an identity token (username '<token>' in docker's config)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never show the secret
        return f"Credential(username={self.username!r}, password=***)"


CredentialLookup = Callable[[str], "Credential | None"]


@dataclass
class Token:
    value: str
    expires_at: float

    def valid(self, now: float | None = None) -> bool:
        return (now or time.monotonic()) < self.expires_at - 5


class TokenCache:
    """Thread-safe tokens keyed by (realm, service, scopes)."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...]], Token] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> Token | None:
        with self._lock:
            tok = self._tokens.get(key)
            return tok if tok and tok.valid() else None

    def put(self, key: tuple[str, str, tuple[str, ...]], token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def drop(self, key: tuple[str, str, tuple[str, ...]]) -> None:
        with self._lock:
            self._tokens.pop(key, None)
