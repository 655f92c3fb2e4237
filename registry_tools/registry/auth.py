"""Registry authentication: WWW-Authenticate parsing, Bearer tokens and Basic auth.

Tokens are kept per (realm, service, scope set) so a token for one repository is never
replayed against another, and renewed before `expires_in` runs out. `RegistryAuth` is
the httpx.Auth that attaches them: only to requests for the registry's own scheme, host
and port, so blob storage, upload locations elsewhere and plain-http downgrades never
see a credential, whatever redirects or Locations a server sends.
"""
from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generator
from urllib.parse import urlsplit

import httpx

from registry_tools.errors import AuthError
from registry_tools.model.reference import is_loopback_host
from registry_tools.registry.transport import Origin, answered_by

SCOPES = "registry_tools.scopes"  # request extension: the token scopes the request needs
REPO = "registry_tools.repo"  # request extension: the repository (for repository-scoped credentials)
_TOKEN_VALUE = re.compile(r"[\x21-\x7e]{1,16384}")  # what may go in an Authorization header
MAX_TOKEN_LIFETIME = 24 * 3600.0

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
    """The challenge to answer: Bearer (anonymous tokens work with it), then Basic, before schemes we
    do not speak, whatever order the registry listed them in."""
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
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


def validate_realm(realm: str, secret: bool = False) -> str:
    """A token realm we may ask: an absolute http(s) URL; plain http only on loopback when
    a credential would travel with the request."""
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthError(f"the registry's token realm {realm!r} is not an absolute http(s) URL")
    if secret and parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise AuthError(f"the registry names its token server {realm} over plain http; "
                        "refusing to send credentials there in clear text")
    return realm


def token_value(value: object, where: str) -> str:
    """A token from a token server, fit for an Authorization header (or an AuthError)."""
    if not isinstance(value, str) or not _TOKEN_VALUE.fullmatch(value):
        raise AuthError(f"{where}: the token server sent no usable token (it must be printable ASCII)")
    return value


def token_lifetime(value: object) -> float:
    """`expires_in` as seconds, within sane bounds (absent or nonsense: the spec's default)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
        return DEFAULT_TOKEN_LIFETIME
    return min(max(float(value), 1.0), MAX_TOKEN_LIFETIME)


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


TokenFetcher = Callable[[Challenge, "tuple[str, ...]", "Credential | None"], Token]


class RegistryAuth(httpx.Auth):
    """Bearer or Basic for one registry, answering its 401s, and bound to its origin.

    `origin()` is None until the registry's scheme is known; until then, and for any
    request elsewhere, nothing is attached. A 401 from anywhere but the registry (blob
    storage reached by redirect, with its own realm) is left to the caller.
    """

    def __init__(self, origin: Callable[[], "Origin | None"], credential: Callable[[str], "Credential | None"],
                 fetch_token: TokenFetcher):
        self._origin = origin
        self._credential = credential
        self._fetch_token = fetch_token
        self._tokens = TokenCache()
        self.challenge: Challenge | None = None

    def note(self, response: httpx.Response) -> None:
        """Remember the registry's challenge (from its version check)."""
        if response.status_code == 401:
            ch = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
            if ch is not None and ch.scheme in ("bearer", "basic"):
                self.challenge = ch

    def forget_token(self, scopes: tuple[str, ...]) -> None:
        ch = self.challenge
        if ch is not None and ch.scheme == "bearer":
            self._tokens.drop((ch.params.get("realm", ""), ch.params.get("service", ""), scopes))

    def header(self, scopes: tuple[str, ...], repo: str) -> str | None:
        ch = self.challenge
        if ch is None:
            return None
        cred = self._credential(repo)
        if ch.scheme == "basic":
            if cred is None:
                return None
            if cred.identity_token and not cred.password:
                return basic_header("<token>", cred.identity_token)
            return basic_header(cred.username, cred.password)
        key = (ch.params.get("realm", ""), ch.params.get("service", ""), scopes)
        tok = self._tokens.get(key)
        if tok is None:
            tok = self._fetch_token(ch, scopes, cred)
            self._tokens.put(key, tok)
        return f"Bearer {tok.value}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        origin = self._origin()
        if origin is None or Origin.of(request.url) != origin:
            yield request  # another host, or plain http for a TLS registry: no credentials
            return
        scopes = tuple(request.extensions.get(SCOPES, ()))
        repo = str(request.extensions.get(REPO, ""))
        value = self.header(scopes, repo)
        if value:
            request.headers["Authorization"] = value
        response = yield request
        if response.status_code != 401 or Origin.of(answered_by(response)) != origin:
            return
        chosen = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
        if chosen is None or chosen.scheme not in ("bearer", "basic"):
            return
        if chosen.scheme == "basic" and self._credential(repo) is None:
            self.challenge = chosen
            return  # nothing to answer with: the caller reports the 401
        if chosen.scheme == "bearer":
            scopes = tuple(token_scopes(chosen.params.get("scope", ""), list(scopes)))
        self.challenge = chosen
        self.forget_token(scopes)
        if not isinstance(request.stream, httpx.ByteStream):
            return  # a streamed body cannot be sent twice: the caller retries its larger unit
        value = self.header(scopes, repo)
        if value:
            request.headers["Authorization"] = value
            yield request
