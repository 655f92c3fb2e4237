"""The wire under every registry request: retries, redirects, timeouts, a bound on every
body, cancellation.

`RegistryTransport` wraps httpx's own transport, so the client above it (with its auth)
never sees a transient failure it could have ridden out, never waits past the operation's
timeouts, and never reads an unbounded body: each response's stream stops at the bound
the request set in its extensions (`MAX_BODY` unless it is a blob, whose bound is its
size). Under it, `Redirects` follows redirects hop by hop, each hop a request of its own
that keeps `Authorization` only on the origin (scheme, host and port) it was set for; the
URL that finally answered is in the response's extensions (`answered_by`), so the auth
above answers a 401 only from its own registry.

Cancellation reaches a request blocked on the wire too (an upload whose body the registry
stopped reading, an answer that never comes): each request is watched (`sockets.Watch`),
and its socket is shut down when the operation is cancelled or the part of it the request's
thread works for (`Cancel.scope`) stops.
"""
from __future__ import annotations

import email.utils
import logging
import random
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx

from registry_tools import cancel as cancellation
from registry_tools.cancel import Cancel
from registry_tools.errors import Interrupted, RateLimitLow, ResponseTooLarge
from registry_tools.registry.sockets import Watch, watching

log = logging.getLogger("registry_tools.transport")

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_BODY = 4 * 1024 * 1024 + 65536  # manifests, tokens, tag pages, error bodies
# Request extensions this transport reads (httpx passes them through to us untouched).
KIND = "registry_tools.kind"  # what the request is for: stats and log lines
LIMIT = "registry_tools.limit"  # the most body bytes to accept
RETRY = "registry_tools.retry"  # False: one attempt only (the caller retries a larger unit)
REDIRECTS = "registry_tools.redirects"  # how many redirects to follow (0: the caller sees the 3xx)
ANSWERED_BY = "registry_tools.url"  # response extension: the URL that answered, after redirects
MAX_REDIRECTS = 10
REDIRECT_STATUS = {301, 302, 303, 307, 308}
_HOP_HEADERS = {"host", "content-length", "transfer-encoding"}  # set again for each hop by httpx
_CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_total: float = 120.0  # seconds a single request may spend retrying
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _leading_int(value: str | None) -> int | None:
    """`76;w=21600` -> 76 (Docker Hub's form); None when absent or not a number."""
    head = (value or "").split(";", 1)[0].split(",", 1)[0].strip()
    return int(head) if head.isdigit() else None


class RateLimit:
    """A registry's announced request budget (`RateLimit-Remaining`, Docker Hub's
    `ratelimit-remaining: 76;w=21600`), read from every response.

    Docker Hub counts manifest GETs only, so those are what is held back: when `minimum`
    or fewer remain, a manifest GET waits for the window to reset when the registry says
    that comes within `max_pause` seconds, and otherwise stops with RateLimitLow saying
    when to retry, instead of spending the rest of the budget into HTTP 429s.
    HEADs and blob transfers go on (a check that a mirror is complete needs no GET).
    """

    def __init__(self, minimum: int = 3, max_pause: float = 60.0):
        self.minimum = minimum
        self.max_pause = max_pause
        self.remaining: int | None = None
        self.limit: int | None = None
        self.window: int | None = None
        self.reset_at: float | None = None
        self._lock = threading.Lock()

    def note(self, resp: httpx.Response) -> None:
        h = resp.headers
        remaining = _leading_int(h.get("ratelimit-remaining"))
        if remaining is None:
            return
        self.remaining = remaining
        self.limit = _leading_int(h.get("ratelimit-limit"))
        policy = h.get("ratelimit-remaining", "") + ";" + h.get("ratelimit-limit", "")
        window = next((p.strip()[2:] for p in policy.split(";") if p.strip().startswith("w=")), "")
        self.window = int(window) if window.isdigit() else None
        reset = _leading_int(h.get("ratelimit-reset"))
        self.reset_at = time.time() + reset if reset is not None else None

    def before(self, request: httpx.Request, cancel: Cancel) -> None:
        if self.minimum <= 0 or request.method != "GET" or request.extensions.get(KIND) != "manifest":
            return
        with self._lock:
            if self.remaining is None or self.remaining > self.minimum:
                if self.remaining is not None:
                    self.remaining -= 1  # counted now: GETs sent at once (an index's manifests) see each other
                return
        host = request.url.netloc.decode("ascii", "replace")
        wait = self.reset_at - time.time() if self.reset_at is not None else None
        if wait is not None and wait <= self.max_pause:
            log.warning("%s: %d request(s) left in its rate limit; waiting %.0f s for it to reset",
                        host, self.remaining, max(wait, 0))
            cancel.sleep(max(wait, 0) + 1)
            self.remaining = None
            return
        if self.reset_at is not None:
            when = time.strftime("%H:%M UTC", time.gmtime(self.reset_at))
        elif self.window:
            when = f"the registry's window ({self.window // 3600} h {self.window % 3600 // 60} min) has passed"
        else:
            when = "the registry's rate-limit window has passed"
        limit = f" of {self.limit}" if self.limit is not None else ""
        raise RateLimitLow(f"{host}: only {self.remaining}{limit} manifest request(s) left in its rate limit "
                           f"(--rate-limit-min {self.minimum}); stopped before it answers 429. "
                           f"Retry after {when}, or log in for a larger limit")


class BoundedStream(httpx.SyncByteStream):
    """A response body that raises ResponseTooLarge past `limit` bytes; `done` runs when it is closed."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int, request: httpx.Request, kind: str,
                 cancel: Cancel | None = None, done: Callable[[], None] | None = None):
        self._inner = inner
        self._limit = limit
        self._request = request
        self._kind = kind
        self._cancel = cancel
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        try:
            for chunk in self._inner:
                seen += len(chunk)
                if seen > self._limit:
                    what = f"{self._request.method} {safe_url(str(self._request.url))} ({self._kind})"
                    raise ResponseTooLarge(f"{what}: the response body is over {self._limit} bytes; refused")
                yield chunk
        except httpx.TransportError:
            if self._cancel is not None and self._cancel.is_set():  # cut off by the cancellation
                raise Interrupted(self._cancel.reason) from None
            raise

    def close(self) -> None:
        if self._done is not None:  # before the connection can go back to the pool
            self._done()
            self._done = None
        self._inner.close()


def _replayable(request: httpx.Request) -> bool:
    """A request can be sent again when its body is bytes we still hold (or it has none)."""
    return isinstance(request.stream, httpx.ByteStream)


def answered_by(resp: httpx.Response) -> httpx.URL:
    """The URL whose server gave this answer (the request's own unless it was redirected)."""
    url = resp.extensions.get(ANSWERED_BY)
    return url if isinstance(url, httpx.URL) else resp.request.url


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port: what a credential is bound to."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> "Origin":
        return cls(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return Origin.of(a) == Origin.of(b)


class Redirects(httpx.BaseTransport):
    """Redirects, followed under the client (up to `MAX_REDIRECTS`, or the request's `REDIRECTS`).

    Each hop is a new request: 303 turns it into a GET without a body; a body that cannot
    be sent again (a streamed upload) is not re-sent, so that answer goes back to the caller
    as it is. Credentials (Authorization, cookies) go on only to the origin they were set
    for: never to another host or port, never from https down to http.
    """

    def __init__(self, inner: httpx.BaseTransport, cancel: Cancel):
        self.inner = inner
        self.cancel = cancel

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        hops = int(request.extensions.get(REDIRECTS, MAX_REDIRECTS))
        current = request
        for hop in range(hops + 1):
            resp = self.inner.handle_request(current)
            location = resp.headers.get("location")
            if resp.status_code not in REDIRECT_STATUS or not location or hops == 0:
                break
            nxt = _next_hop(current, resp.status_code, location)
            if nxt is None:
                break
            resp.close()
            if hop == hops:
                raise httpx.TooManyRedirects(f"more than {hops} redirects", request=request)
            self.cancel.check()
            log.debug("%s %s -> %d, to %s", current.method, safe_url(str(current.url)), resp.status_code,
                      safe_url(str(nxt.url)))
            current = nxt
        resp.extensions[ANSWERED_BY] = current.url
        return resp

    def close(self) -> None:
        self.inner.close()


def _next_hop(request: httpx.Request, status: int, location: str) -> httpx.Request | None:
    try:
        url = request.url.join(location)
    except httpx.InvalidURL:
        return None
    if url.scheme not in ("http", "https") or not url.host:
        return None
    method = "GET" if status == 303 and request.method != "HEAD" else request.method
    keep_body = method == request.method and request.method not in ("GET", "HEAD")
    if keep_body and not isinstance(request.stream, httpx.ByteStream):
        return None  # a streamed body is gone: the caller retries its larger unit
    drop = _HOP_HEADERS | (set() if same_origin(url, request.url) else _CREDENTIAL_HEADERS)
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in drop]
    if not keep_body:
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
    content = request.read() if keep_body else None
    return httpx.Request(method, url, headers=headers, content=content, extensions=request.extensions)


class RegistryTransport(httpx.BaseTransport):
    """httpx's transport, wrapped: retries with backoff, redirects, timeouts, bounded bodies,
    cancellation, counts."""

    def __init__(self, inner: httpx.BaseTransport, policy: RetryPolicy, cancel: Cancel,
                 rate: RateLimit | None = None, timeout: httpx.Timeout | None = None):
        self.inner = Redirects(inner, cancel)
        self.policy = policy
        self.cancel = cancel
        self.rate = rate or RateLimit(0)
        self.timeout = (timeout or httpx.Timeout(60.0)).as_dict()
        self.stats: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["timeout"] = self.timeout
        kind = str(request.extensions.get(KIND, "api"))
        may_retry = request.extensions.get(RETRY, True) and _replayable(request)
        attempts = self.policy.attempts if may_retry else 1
        deadline = time.monotonic() + self.policy.max_total
        part = cancellation.current()  # the part of the operation this thread works for, if it says
        cancel = part or self.cancel
        attempt = 0
        while True:
            self.cancel.check()  # nothing new once the operation is over
            self.rate.before(request, cancel)
            self.stats[f"{request.method} {kind}"] += 1
            watch = Watch(self.cancel, part)
            try:
                with watching(watch):
                    resp = self.inner.handle_request(request)
                self.rate.note(resp)
            except httpx.TransportError:
                watch.end()
                if cancel.is_set():  # cut off on the wire by the cancellation
                    raise Interrupted(cancel.reason) from None
                if attempt + 1 >= attempts or time.monotonic() > deadline:
                    raise
                self._pause(request, cancel, attempt, None, "connection failed")
                attempt += 1
                continue
            except BaseException:
                watch.end()
                raise
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s -> %d", request.method, safe_url(str(request.url)), resp.status_code)
            if resp.status_code in RETRY_STATUS and attempt + 1 < attempts:
                wait = self.policy.delay(attempt, retry_after(resp))
                if time.monotonic() + wait <= deadline:
                    watch.end()
                    resp.close()
                    self._pause(request, cancel, attempt, wait, f"HTTP {resp.status_code}")
                    attempt += 1
                    continue
            return self._bounded(request, resp, kind, cancel, watch.end)

    def _pause(self, request: httpx.Request, cancel: Cancel, attempt: int, wait: float | None, why: str) -> None:
        delay = self.policy.delay(attempt) if wait is None else wait
        log.info("%s %s: %s, retrying in %.1fs", request.method, safe_url(str(request.url)), why, delay)
        cancel.sleep(delay)

    def _bounded(self, request: httpx.Request, resp: httpx.Response, kind: str, cancel: Cancel,
                 done: Callable[[], None]) -> httpx.Response:
        limit = int(request.extensions.get(LIMIT, MAX_BODY))
        stream = resp.stream
        assert isinstance(stream, httpx.SyncByteStream)
        resp.stream = BoundedStream(stream, limit, request, kind, cancel, done)
        return resp

    def close(self) -> None:
        self.inner.close()


class _NoCookies(httpx.Cookies):
    """Registries need no cookies, and none are kept or sent (skopeo's client keeps none either);
    httpx's own handling of them cost a URL parse and a cookie-jar pass on every response."""

    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class Client(httpx.Client):
    """httpx's client without a cookie jar."""

    def __init__(self, **options: Any) -> None:
        self._none = _NoCookies()
        super().__init__(**options)

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._none

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass


def safe_url(url: str) -> str:
    """A URL fit for messages: no query string (pre-signed URLs carry secrets there)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"


def reason(e: BaseException) -> str:
    """One line saying why a connection failed."""
    text = (str(e) or type(e).__name__).splitlines()[0][:200]
    lowered = text.lower()
    if "certificate required" in lowered or "alert bad certificate" in lowered:
        return ("the registry requires a client certificate (mutual TLS) and none it accepts was sent: put "
                "client.cert and client.key in /etc/docker/certs.d/HOST:PORT/ (or give --cert-dir DIR) "
                f"[{text}]")
    if isinstance(e, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text:
        text = "TLS certificate verification failed: " + text
    return text


def read_body(resp: httpx.Response) -> bytes:
    """The whole (bounded) body of a streamed response."""
    try:
        return resp.read()
    finally:
        resp.close()
