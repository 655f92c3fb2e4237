"""Image references, parsed with the distribution grammar (github.com/distribution/reference).

Users type `alpine`, `localhost:5000/app:1`, `ghcr.io/o/r@sha256:…`; every command must
agree on what those mean, so there is exactly one parser and it follows upstream's rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from registry_tools.model.digest import Digest
from registry_tools.errors import InvalidDigest, InvalidReference

# The grammar, as in distribution/reference regexp.go.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = r"(?:" + _DOMAIN_NAME + "|" + _IPV6 + ")"
_DOMAIN_AND_PORT = _HOST + r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_PATH_COMPONENT = _ALNUM + r"(?:" + _SEPARATOR + _ALNUM + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

DOMAIN_RE = re.compile(r"^" + _DOMAIN_AND_PORT + r"\Z", re.ASCII)
ANCHORED_NAME_RE = re.compile(r"^(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")\Z", re.ASCII)
REFERENCE_RE = re.compile(r"^(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?\Z", re.ASCII)
TAG_RE = re.compile(r"^" + _TAG + r"\Z", re.ASCII)
DIGEST_RE = re.compile(r"^" + _DIGEST + r"\Z", re.ASCII)
IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}\Z")

NAME_TOTAL_LENGTH_MAX = 255
DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
OFFICIAL_PREFIX = "library/"


def _invalid(reason: str, text: str, detail: str) -> InvalidReference:
    err = InvalidReference(f"invalid image reference {text!r}: {detail}")
    err.reason = reason  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `domain` is empty only for un-normalised references."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def _with_suffix(self, name: str) -> str:
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self._with_suffix(self.name)

    @property
    def familiar_name(self) -> str:
        """The short form the docker CLI shows: `ubuntu` for docker.io/library/ubuntu."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        path = self.path
        if path.startswith(OFFICIAL_PREFIX) and "/" not in path[len(OFFICIAL_PREFIX):]:
            path = path[len(OFFICIAL_PREFIX):]
        return path

    def familiar_string(self) -> str:
        return self._with_suffix(self.familiar_name)

    @property
    def api_host(self) -> str:
        """The host that serves the registry API for this reference's domain."""
        return DOCKER_HUB_API_HOST if self.domain == DEFAULT_DOMAIN else self.domain

    def with_tag(self, tag: str) -> "Reference":
        if not TAG_RE.match(tag):
            raise _invalid("tag", tag, "invalid tag format")
        return replace(self, tag=tag)

    def with_digest(self, digest: str) -> "Reference":
        if not DIGEST_RE.match(digest):
            raise _invalid("digest", digest, "invalid digest format")
        return replace(self, digest=digest)

    def name_only(self) -> "Reference":
        return replace(self, tag="", digest="")


def parse(text: str) -> Reference:
    """reference.Parse: the grammar alone, no normalisation."""
    m = REFERENCE_RE.match(text)
    if m is None:
        if text == "":
            raise _invalid("empty", text, "repository name must have at least one component")
        if REFERENCE_RE.match(text.lower()):
            raise _invalid("uppercase", text, "repository name must be lowercase")
        raise _invalid("format", text, "invalid reference format")
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    nm = ANCHORED_NAME_RE.match(name)
    assert nm is not None
    domain, path = nm.group(1) or "", nm.group(2)
    if len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid("too-long", text, f"repository path must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest:
        Digest.parse(digest)  # raises InvalidDigest for an unsupported algorithm or bad length
    return Reference(domain, path, tag, digest)


def with_name(name: str) -> Reference:
    """reference.WithName: a bare name (no tag or digest), at most 255 characters in all."""
    nm = ANCHORED_NAME_RE.match(name)
    if nm is None:
        raise _invalid("format", name, "invalid reference format")
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid("too-long", name, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    return Reference(nm.group(1) or "", nm.group(2))


def split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i]
    if i == -1 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_normalized(text: str) -> Reference:
    """reference.ParseNormalizedNamed: what `docker pull NAME` understands."""
    if IDENTIFIER_RE.match(text):
        raise _invalid("identifier", text, "cannot specify 64-byte hexadecimal strings as a repository name")
    domain, remainder = split_docker_domain(text)
    remote = remainder.split(":", 1)[0]
    if remote.lower() != remote:
        raise _invalid("uppercase", text, "repository name must be lowercase")
    return parse(domain + "/" + remainder)


def parse_docker_ref(text: str) -> Reference:
    """reference.ParseDockerRef: normalised, `:latest` added when neither tag nor digest, tag dropped when both."""
    ref = parse_normalized(text)
    if ref.digest and ref.tag:
        return replace(ref, tag="")
    if not ref.digest and not ref.tag:
        return replace(ref, tag="latest")
    return ref


def parse_any(text: str) -> Reference | Digest:
    """reference.ParseAnyReference: a bare 64-hex id or `sha256:…` is a digest, anything else a name."""
    if IDENTIFIER_RE.match(text):
        return Digest("sha256", text)
    try:
        return Digest.parse(text)
    except InvalidDigest:
        return parse_normalized(text)


def _go_path_pattern(pattern: str) -> "re.Pattern[str]":
    """Go's path.Match syntax as a regex: `*` and `?` never cross '/', `[…]` classes of characters
    and ranges (`^` negates), `\\` escapes.

    A pattern Go refuses (ErrBadPattern: an unterminated or empty class, a class item that starts
    with `-` or `]`, a trailing backslash) is an InvalidReference naming it; so is a range whose
    ends are reversed (`[z-a]`), which Go accepts but which can match nothing: surely a mistake.
    """
    def bad(why: str) -> InvalidReference:
        return InvalidReference(f"bad pattern {pattern!r}: {why}")

    def char(i: int) -> tuple[str, int]:
        """One character of a class (Go's getEsc), and where the class goes on after it."""
        if i >= len(pattern) or pattern[i] in "-]":
            raise bad("a character class must list characters or ranges and end in ']'")
        if pattern[i] == "\\":
            i += 1
        if i + 1 >= len(pattern):
            raise bad("unterminated character class")
        return pattern[i], i + 1

    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= len(pattern):
                raise bad("it ends in an escaping backslash")
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negated = i < len(pattern) and pattern[i] == "^"
            if negated:
                i += 1
            items: list[str] = []
            while not (items and pattern[i] == "]"):  # char() leaves i inside the pattern
                lo, i = char(i)
                hi = lo
                if pattern[i] == "-":
                    hi, i = char(i + 1)
                if lo > hi:
                    raise bad(f"the range {lo}-{hi} is reversed, so it matches nothing")
                items.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
            out.append("[" + ("^" if negated else "") + "".join(items) + "]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + r"\Z")


def familiar_match(pattern: str, text: str) -> bool:
    """reference.FamiliarMatch: match a pattern against the familiar string, then the familiar name."""
    ref = parse_any(text)
    rx = _go_path_pattern(pattern)
    if isinstance(ref, Digest):
        return bool(rx.match(str(ref)))
    return bool(rx.match(ref.familiar_string()) or rx.match(ref.familiar_name))


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (with or without a port)."""
    h = host
    if h.startswith("["):
        h = h[1: h.index("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h == "localhost" or h == "::1":
        return True
    parts = h.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() and int(p) < 256 for p in parts)
