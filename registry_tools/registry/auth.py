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

from registry_tools.errors import AuthError

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


def pick_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The challenge to answer: Bearer or Basic before schemes we do not speak."""
    for c in challenges:
        if c.scheme in ("bearer", "basic"):
            return c
    return challenges[0] if challenges else None


def _tokenize(s: str, strict: bool) -> list[tuple[str, str]]:
    """(kind, text) tokens: 't' token, 'q' quoted string, 'v' bare value after '=', ',' and '='."""
    toks: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in " \t":
            i += 1
        elif c in ",=":
            toks.append((c, c))
            i += 1
        elif c == '"':
            i += 1
            buf = []
            closed = False
            while i < n:
                if s[i] == "\\":
                    if i + 1 >= n:
                        if strict:
                            raise ChallengeSyntaxError("dangling backslash in quoted string")
                        i += 1
                        break
                    buf.append(s[i + 1])
                    i += 2
                elif s[i] == '"':
                    closed = True
                    i += 1
                    break
                else:
                    buf.append(s[i])
                    i += 1
            if not closed and strict:
                raise ChallengeSyntaxError("unterminated quoted string")
            toks.append(("q", "".join(buf)))
        else:
            after_equals = bool(toks) and toks[-1][0] == "="
            stop = ", \t" if after_equals else ", \t="
            j = i
            while j < n and s[j] not in stop:
                j += 1
            toks.append(("v" if after_equals else "t", s[i:j]))
            i = j
    return toks


def _parse_one(s: str, strict: bool) -> list[Challenge]:
    toks = _tokenize(s, strict)
    n = len(toks)
    out: list[Challenge] = []

    def is_param(j: int) -> bool:
        return j + 1 < n and toks[j][0] in "tq" and toks[j + 1][0] == "="

    i = 0
    while i < n:
        kind, text = toks[i]
        if kind in ",=":
            if kind == "=" and strict:
                raise ChallengeSyntaxError("'=' where an auth scheme was expected")
            i += 1
            continue
        params: dict[str, str] = {}
        out.append(Challenge(text.lower(), params))
        i += 1
        need_comma = False
        while i < n:
            if toks[i][0] == ",":
                need_comma = False
                i += 1
                continue
            if not is_param(i):
                break  # the next challenge's scheme (or a token68 we do not use)
            if need_comma and strict:
                raise ChallengeSyntaxError("missing ',' between auth parameters")
            key = toks[i][1].lower()
            if i + 2 < n and toks[i + 2][0] in "qv":
                params[key] = toks[i + 2][1]
                i += 3
            else:
                params[key] = ""
                i += 2
            need_comma = True
    return out


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


# (registry domain, repository path) -> credentials, or None for anonymous access.
CredentialLookup = Callable[[str, str], "Credential | None"]


def static_credentials(username: str, password: str) -> CredentialLookup:
    """The same credentials for every registry of one operation (`--creds USER:PASS`)."""
    cred = Credential(username, password)
    return lambda domain, repo: cred


@dataclass
class Token:
    value: str
    expires_at: float
    margin: float = 5.0  # renew this long before the server's expiry, so no request carries a stale token

    @classmethod
    def lasting(cls, value: str, lifetime: float) -> "Token":
        return cls(value, time.monotonic() + lifetime, margin=min(5.0, lifetime / 4))

    def valid(self, now: float | None = None) -> bool:
        return (now or time.monotonic()) < self.expires_at - self.margin

    def __repr__(self) -> str:  # never show the secret
        return f"Token(expires_at={self.expires_at:.0f})"


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
