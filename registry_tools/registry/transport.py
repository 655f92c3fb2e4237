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

import logging
import ssl
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import httpx

from registry_tools import cancel as cancellation
from registry_tools.cancel import Cancel
from registry_tools.errors import Interrupted, NetworkError, ProxyFailure, RegistryError, ResponseTooLarge
from registry_tools.registry.pacing import KIND, RateLimit, RetryPolicy, retry_after
from registry_tools.registry.sockets import Watch, watching

log = logging.getLogger("registry_tools.transport")

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_BODY = 4 * 1024 * 1024 + 65536  # manifests, tokens, tag pages, error bodies
# Request extensions this transport reads (httpx passes them through to us untouched).
LIMIT = "registry_tools.limit"  # the most body bytes to accept
RETRY = "registry_tools.retry"  # False: one attempt only (the caller retries a larger unit)
REDIRECTS = "registry_tools.redirects"  # how many redirects to follow (0: the caller sees the 3xx)
ANSWERED_BY = "registry_tools.url"  # response extension: the URL that answered, after redirects
MAX_REDIRECTS = 10
REDIRECT_STATUS = {301, 302, 303, 307, 308}
_HOP_HEADERS = {"host", "content-length", "transfer-encoding"}  # set again for each hop by httpx
_CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


@contextmanager
def project_errors(request: httpx.Request, cancel: Cancel | None) -> Iterator[None]:
    """httpx's transport errors as the project's, here and nowhere else (httpx's own
    `map_exceptions` does the same for httpcore's): a connection cut by the cancellation is
    `Interrupted`; a redirect loop a `RegistryError`; any other failure on the wire a
    `NetworkError` naming the request (never its query string, where pre-signed URLs keep secrets)."""
    try:
        yield
    except httpx.TooManyRedirects:
        raise RegistryError(f"{request.method} {safe_url(str(request.url))}: too many redirects") from None
    except httpx.TransportError as e:
        if cancel is not None and cancel.is_set():  # cut off on the wire by the cancellation
            raise Interrupted(cancel.reason) from None
        if isinstance(e, httpx.ProxyError):  # network.through named the proxy: its failure, not the registry's
            where = f"{request.method} {safe_url(str(request.url))}"
            raise ProxyFailure(f"{reason(e)}: {where} did not reach the registry") from None
        raise NetworkError(f"{request.method} {safe_url(str(request.url))} failed: {reason(e)}") from None


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
        with project_errors(self._request, self._cancel):
            for chunk in self._inner:
                seen += len(chunk)
                if seen > self._limit:
                    what = f"{self._request.method} {safe_url(str(self._request.url))} ({self._kind})"
                    raise ResponseTooLarge(f"{what}: the response body is over {self._limit} bytes; refused")
                yield chunk

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
        part = cancellation.current()  # the part of the operation this thread works for, if it says
        with project_errors(request, part or self.cancel):
            return self._send(request, part)

    def _send(self, request: httpx.Request, part: Cancel | None) -> httpx.Response:
        request.extensions["timeout"] = self.timeout
        kind = str(request.extensions.get(KIND, "api"))
        may_retry = request.extensions.get(RETRY, True) and _replayable(request)
        attempts = self.policy.attempts if may_retry else 1
        deadline = time.monotonic() + self.policy.max_total
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
                if cancel.is_set() or attempt + 1 >= attempts or time.monotonic() > deadline:
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
