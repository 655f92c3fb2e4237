"""A client for one registry host: the distribution API's reads and writes of manifests.

The wire lives below (`transport`: retries, bounded bodies, cancellation) and beside it
(`auth`: credentials bound to this registry's origin). Everything above this module
deals in repositories and digests.
"""
from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import httpx

from registry_tools import __version__
from registry_tools.cancel import Cancel
from registry_tools.errors import AuthError, DigestMismatch, Interrupted, InvalidDigest, ManifestError, NetworkError
from registry_tools.errors import NotFound, ProxyFailure, RegistryError, ResponseTooLarge, VerificationError
from registry_tools.model.digest import Digest
from registry_tools.model.manifest import ACCEPT, MAX_MANIFEST_SIZE, load_json
from registry_tools.model.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, is_loopback_host
from registry_tools.registry import auth, network
from registry_tools.registry.tokens import TokenClient
from registry_tools.registry.sockets import abortable
from registry_tools.registry.pacing import KIND, RateLimit, RetryPolicy
from registry_tools.registry.transport import LIMIT, REDIRECTS, RETRY, Client, RegistryTransport, read_body

__all__ = ["Registry", "RetryPolicy", "TransportOptions"]


@dataclass
class TransportOptions:
    tls_verify: bool = True
    ca_file: str | None = None
    cert_dir: str | None = None
    timeout: float = 60.0
    connect_timeout: float = 15.0
    max_connections: int = 8
    rate_limit_min: int = 3  # manifest GETs held back when the registry says this few are left (0: never)
    proxy: str | None = None  # --proxy: every scheme (else the environment's proxy variables)


SYSTEM_CA_DIR = "/etc/ssl/certs"


def ssl_context(opts: TransportOptions) -> ssl.SSLContext:
    if not opts.tls_verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    cafile = opts.ca_file or os.environ.get("SSL_CERT_FILE")
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    elif os.path.isdir(SYSTEM_CA_DIR) and any(n.endswith(".0") for n in os.listdir(SYSTEM_CA_DIR)):
        # The system's hashed CA directory: OpenSSL reads only the certificates it needs.
        ctx = ssl.create_default_context(capath=SYSTEM_CA_DIR)
    else:
        import certifi

        ctx = ssl.create_default_context(cafile=certifi.where())
    loaded = {os.path.realpath(cafile)} if cafile else set()
    for cert_dir in filter(None, os.environ.get("SSL_CERT_DIR", "").split(os.pathsep)):
        network.load_cert_dir(ctx, cert_dir, loaded)  # a missing one is skipped there
    return ctx


def host_context(opts: TransportOptions, directories: tuple[str, ...]) -> ssl.SSLContext:
    """The CAs, then `--cert-dir` and the host's certs.d directory (CAs and a client certificate)."""
    ctx = ssl_context(opts)
    for d in directories:
        network.load_dir(ctx, Path(d))
        if opts.cert_dir and d == opts.cert_dir:  # skopeo's --cert-dir also trusts *.pem
            for name in sorted(os.listdir(d)):
                if name.endswith(".pem"):
                    ctx.load_verify_locations(cafile=os.path.join(d, name))
    return ctx


class SchemeTransport(httpx.BaseTransport):
    """httpx's socket transports, one per route: plain http or https, through which proxy (if
    any), and for https with which certificates (the host's certs.d directory). A TLS context
    (the system's CA certificates, tens of milliseconds to load) is made only when first needed."""

    def __init__(self, options: TransportOptions):
        self.options = options
        self.proxies = network.Proxies.from_environment(options.proxy)
        self._routes: dict[tuple[str, tuple[str, ...], str | None], httpx.HTTPTransport] = {}
        self._lock = threading.Lock()

    def _make(self, verify: ssl.SSLContext, proxy: str | None) -> httpx.HTTPTransport:
        n = self.options.max_connections
        return abortable(httpx.HTTPTransport(verify=verify, retries=0, trust_env=False,
                                             proxy=network.proxy_of(proxy) if proxy else None,
                                             limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)))

    def _route(self, url: httpx.URL, proxy: str | None) -> httpx.HTTPTransport:
        dirs: tuple[str, ...] = ()
        if url.scheme == "https":
            found = network.certs_dir(url.netloc.decode("ascii"))
            dirs = tuple(str(d) for d in (self.options.cert_dir, found) if d)
        key = (url.scheme, dirs, proxy)
        with self._lock:
            route = self._routes.get(key)
            if route is None:
                # plain http never uses TLS: an empty context costs nothing to make
                ctx = host_context(self.options, dirs) if url.scheme == "https" else \
                    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                route = self._routes[key] = self._make(ctx, proxy)
        return route

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self.proxies.for_url(request.url)
        return network.sent(proxy, request, self._route(request.url, proxy).handle_request)

    def close(self) -> None:
        with self._lock:
            for t in self._routes.values():
                t.close()
            self._routes.clear()


def error_detail(resp: httpx.Response) -> tuple[str, str | None]:
    """The registry's own error code and message, when it sent the standard JSON body."""
    try:
        body = load_json(read_body(resp), "error body")
    except (ManifestError, RegistryError, httpx.HTTPError):
        return (f"HTTP {resp.status_code}", None)
    errs = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errs, list) and errs and isinstance(errs[0], dict):
        code, message = errs[0].get("code"), errs[0].get("message")
        code = code if isinstance(code, str) else ""
        message = message if isinstance(message, str) else ""
        return (f"{code}: {message}".strip(": ") or f"HTTP {resp.status_code}", code or None)
    return (f"HTTP {resp.status_code}", None)


class Ask(TypedDict, total=False):
    """How to make a registry request (every key optional)."""

    actions: str  # the repository scope's actions (default "pull")
    headers: dict[str, str] | None
    kind: str  # what the request is for: stats and log lines (default "api")
    content: Any  # the body: bytes or an iterator of chunks
    stream: bool  # leave the body to read (default: read it, bounded)
    extra_scopes: tuple[str, ...]  # more token scopes (a mount's source repository)
    retry: bool  # False: one attempt only (the caller retries a larger unit)
    limit: int | None  # the most body bytes to accept (default: a manifest's)


class Registry:
    """A connection to one registry host, shared by every repository on it."""

    def __init__(self, domain: str, *, options: TransportOptions | None = None,
                 credentials: auth.CredentialLookup | None = None, retry: RetryPolicy | None = None,
                 cancel: Cancel | None = None, transport: httpx.BaseTransport | None = None):
        """`transport` replaces httpx's own socket transport (a test seam: httpx.MockTransport)."""
        self.domain = domain
        self.host = DOCKER_HUB_API_HOST if domain == DEFAULT_DOMAIN else domain
        self.options = options or TransportOptions()
        self.retry = retry or RetryPolicy()
        self.cancel = cancel or Cancel()
        self._credentials = credentials
        self._scheme: str | None = None
        self._lock = threading.Lock()
        self._probing = threading.Lock()
        self._closed = False
        self._http: httpx.Client | None = None
        self.tokens = TokenClient(self.host, lambda: self.http)
        self.auth = auth.RegistryAuth(self._origin, self.credential, self.tokens.fetch)
        self._transport: RegistryTransport | None = None
        self._inner = transport
        self.rate = RateLimit(self.options.rate_limit_min)

    @property
    def stats(self) -> Any:
        return self._transport.stats if self._transport is not None else {}

    def credential(self, repo: str = "") -> auth.Credential | None:
        return self._credentials(self.domain, repo) if self._credentials is not None else None

    def _origin(self) -> auth.Origin | None:
        if self._scheme is None:
            return None
        return auth.Origin.of(httpx.URL(f"{self._scheme}://{self.host}/"))

    @property
    def http(self) -> httpx.Client:
        """The HTTP client, built on first use (a TLS context costs time and is not always needed)."""
        with self._lock:
            if self._closed:
                raise Interrupted(f"the connection to {self.domain} was closed")
            if self._http is None:
                o = self.options
                inner = self._inner or SchemeTransport(o)
                self._transport = RegistryTransport(inner, self.retry, self.cancel, self.rate,
                                                    httpx.Timeout(o.timeout, connect=o.connect_timeout))
                self._http = Client(
                    auth=self.auth, transport=self._transport, trust_env=False,
                    headers={"User-Agent": f"registry-tools/{__version__}"})
            return self._http

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._http is not None:
                self._http.close()
                self._http = None

    # -- scheme and tokens ---------------------------------------------------------------

    def base_url(self) -> str:
        with self._lock:
            scheme = self._scheme
        if scheme is None:
            with self._probing:  # one probe, however many workers start at once
                if self._scheme is None:
                    found = probe_scheme(self)
                    with self._lock:
                        self._scheme = found
                scheme = self._scheme
        return f"{scheme}://{self.host}"

    # -- requests ------------------------------------------------------------------------

    def request(self, method: str, repo: str, path: str, **ask: Unpack[Ask]) -> httpx.Response:
        """A request within one repository's scope, authenticated as the registry asks (`Ask`
        says how). `path` is absolute on the registry, or a full URL (an upload Location)."""
        url = self.base_url() + path if path.startswith("/") else path
        actions = ask.get("actions", "pull")
        scopes = ((f"repository:{repo}:{actions}",) if repo else ()) + ask.get("extra_scopes", ())
        ext: dict[str, Any] = {KIND: ask.get("kind", "api"), RETRY: ask.get("retry", True), auth.SCOPES: scopes,
                               auth.REPO: repo}
        if ask.get("limit") is not None:
            ext[LIMIT] = ask["limit"]
        req = self.http.build_request(method, url, headers=ask.get("headers"), content=ask.get("content"),
                                      extensions=ext)
        resp = self.http.send(req, stream=True)
        if not ask.get("stream", False):
            read_body(resp)
        return resp

    def check(self, resp: httpx.Response, what: str, repo: str = "") -> None:
        """Raise the typed error for a failed answer (reading its bounded body for the reason)."""
        if resp.status_code < 400:
            return
        detail, code = error_detail(resp)
        if resp.status_code == 404:
            if code == "NAME_UNKNOWN" and repo:
                raise NotFound(f"repository {self.domain}/{repo} not found", 404, code)
            if code == "MANIFEST_UNKNOWN" and "@" not in what:
                raise NotFound(f"{what}: no such tag ({detail})", 404, code)
            raise NotFound(f"{what}: not found on {self.domain} ({detail})", 404, code)
        refusal = network.proxy_refusal(resp, self.domain)
        if refusal:  # the proxy's answer, not the registry's
            raise AuthError(f"{what}: {refusal}", resp.status_code, code)
        if resp.status_code in (401, 403):
            hint = ("check the credentials and that they grant access to this repository" if self.credential(repo)
                    else "the registry needs credentials: run registry-tools login")
            raise AuthError(f"{what}: access denied by {self.domain} ({detail}); {hint}", resp.status_code, code)
        if resp.status_code == 429:
            raise RegistryError(f"{what}: rate-limited by {self.domain} (HTTP 429); try again later", 429, code)
        raise RegistryError(f"{what}: {self.domain} answered {detail}", resp.status_code, code)

    def check_login(self) -> None:
        """Prove the credentials work: the registry's version check must succeed with them."""
        self.base_url()
        if self.auth.challenge is None:
            return  # the registry asks for no credentials at all
        self.auth.forget_token(())
        resp = self.request("GET", "", "/v2/", kind="login")
        if resp.status_code in (401, 403):
            raise AuthError(f"login to {self.domain} failed: the registry refused these credentials", resp.status_code)
        self.check(resp, f"login to {self.domain}")

    # -- manifests and tags ----------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        """Manifest bytes (at most 4 MiB, checked on Content-Length and while reading) and their type."""
        what = self.where(repo, ref)
        resp = self.request("GET", repo, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            kind="manifest", stream=True, limit=MAX_MANIFEST_SIZE)
        try:
            self.check(resp, what, repo)
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                raise ManifestError(f"{what}: manifest of {length} bytes is over the {MAX_MANIFEST_SIZE} byte limit")
            try:
                raw = read_body(resp)
            except ResponseTooLarge:
                raise ManifestError(f"{what}: manifest is over the {MAX_MANIFEST_SIZE} byte limit") from None
        finally:
            resp.close()
        return raw, resp.headers.get("content-type", "")

    def where(self, repo: str, ref: str) -> str:  # as users write it: host/repo:tag, host/repo@sha256:...
        return f"{self.domain}/{repo}{'@' if ref.startswith('sha256:') else ':'}{ref}"

    def head_manifest(self, repo: str, ref: str, actions: str = "pull") -> tuple[Digest | None, str, int | None]:
        """HEAD a manifest: its digest (if the registry says), media type and size."""
        resp = self.request("HEAD", repo, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            kind="manifest-head", actions=actions)
        if resp.status_code == 401:
            self.check(resp, self.where(repo, ref), repo)
        if resp.status_code >= 400:  # 403 too: Artifactory's answer for a manifest it does not have
            # A HEAD answer has no body to say why; the caller's GET will get the registry's reason.
            return None, "", None
        size = resp.headers.get("content-length")
        try:
            digest = announced_digest(resp, self.where(repo, ref))
        except VerificationError:
            digest = None  # a claim only (the bytes decide): one that is no digest claims nothing
        return digest, resp.headers.get("content-type", ""), int(size) if size and size.isdigit() else None

    def manifest_digest(self, repo: str, ref: str, actions: str = "pull,push") -> Digest | None:
        """What a tag or digest points to now (None if nothing), by HEAD, with the scope `actions`."""
        resp = self.request("HEAD", repo, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            actions=actions, kind="manifest-head")
        if resp.status_code in (404, 403):  # 403: Artifactory's "not here" (go-containerregistry#1691)
            return None
        self.check(resp, self.where(repo, ref), repo)
        # a manifest found by its digest is that digest, header or not
        got = announced_digest(resp, self.where(repo, ref))
        return got or (Digest.parse(ref) if ref.startswith("sha256:") else None)

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> Digest:
        return self.put_manifest_answer(repo, ref, raw, media_type)[0]

    def put_manifest_answer(self, repo: str, ref: str, raw: bytes, media_type: str) -> tuple[Digest, httpx.Headers]:
        """PUT a manifest: its digest (checked against the registry's) and the answer's headers."""
        digest = Digest.of_bytes(raw)
        what = f"manifest {digest} to {self.domain}/{repo}:{ref}"
        for attempt in range(self.retry.attempts):
            resp = self.request("PUT", repo, f"/v2/{repo}/manifests/{ref}", actions="pull,push", kind="manifest-put",
                                headers={"Content-Type": media_type}, content=raw)
            if resp.status_code in (200, 201, 202):
                return returned_digest(resp, digest, what), resp.headers
            # DIGEST_INVALID for the digest of the bytes sent: distribution's filesystem storage read a
            # blob's link while another writer rewrote it in place (truncated, then written): again
            if attempt + 1 == self.retry.attempts or error_detail(resp)[1] != "DIGEST_INVALID":
                break
            self.cancel.sleep(self.retry.delay(attempt))
        self.check(resp, what, repo)
        raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)


def probe_scheme(reg: "Registry") -> str:
    """https; plain http only for a loopback registry (or with TLS verification off) that has no TLS.

    A loopback registry is asked over plain http first: a TLS server cannot give a
    registry's answer to that (Go's says 400), and the question carries no credentials.
    The answer's challenge (if any) is what RegistryAuth answers from then on.
    """
    def ask(url: str) -> httpx.Response:
        req = reg.http.build_request("GET", url, extensions={KIND: "ping", RETRY: False, REDIRECTS: 0})
        resp = reg.http.send(req, auth=None)
        reg.auth.note(resp)
        return resp

    if is_loopback_host(reg.host) or not reg.options.tls_verify:
        try:
            resp = ask(f"http://{reg.host}/v2/")
            if resp.status_code != 400 and resp.status_code < 500:
                return "http"
        except ProxyFailure:
            raise
        except NetworkError:
            pass
    try:
        ask(f"https://{reg.host}/v2/")
        return "https"
    except NetworkError as e:
        raise e if isinstance(e, ProxyFailure) else \
            NetworkError(f"cannot reach registry {reg.host}: {str(e).split(' failed: ', 1)[-1]}") from None


def announced_digest(resp: httpx.Response, what: str) -> Digest | None:
    """The answer's Docker-Content-Digest, if it has one. A header that is no digest is the
    registry's failure (a VerificationError, exit 1), never the user's bad input."""
    got = resp.headers.get("docker-content-digest")
    if not got:
        return None
    try:
        return Digest.parse(got)
    except InvalidDigest:
        raise VerificationError(f"{what}: the registry's Docker-Content-Digest {got[:100]!r} is not a digest "
                                "(sha256:<64 hex digits>)") from None


def returned_digest(resp: httpx.Response, digest: Digest, what: str) -> Digest:
    """The registry's Docker-Content-Digest must name what we sent."""
    got = announced_digest(resp, what)
    if got is not None and got != digest:
        raise DigestMismatch(f"{what}: the registry stored", str(digest), str(got))
    return digest
