"""An HTTP client for one registry: auth, retries, redirects and resumable blob reads.

Everything above this module deals in repositories and digests; everything about the
wire (schemes, tokens, Retry-After, Range, Location) stays here.
"""
from __future__ import annotations

import email.utils
import logging
import os
import random
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from registry_tools import __version__
from registry_tools.registry import auth
from registry_tools.model.digest import Digest
from registry_tools.errors import AuthError, DigestMismatch, ManifestError, NetworkError, NotFound, RegistryError
from registry_tools.model.manifest import ACCEPT, MAX_MANIFEST_SIZE
from registry_tools.model.reference import DEFAULT_DOMAIN, DOCKER_HUB_API_HOST, is_loopback_host

log = logging.getLogger("registry_tools.client")

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
TRANSIENT = (httpx.TransportError,)  # connect, read, write, protocol errors and timeouts


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


@dataclass
class TransportOptions:
    tls_verify: bool = True
    ca_file: str | None = None
    cert_dir: str | None = None
    timeout: float = 60.0
    connect_timeout: float = 15.0
    max_connections: int = 8


SYSTEM_CA_DIR = "/etc/ssl/certs"


def _unverified_context() -> ssl.SSLContext:
    """For plain-http clients and --tls-verify=false (httpx would load a CA bundle even then)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ssl_context(opts: TransportOptions) -> ssl.SSLContext:
    if not opts.tls_verify:
        return _unverified_context()
    cafile = opts.ca_file or os.environ.get("SSL_CERT_FILE")
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    elif os.path.isdir(SYSTEM_CA_DIR) and any(n.endswith(".0") for n in os.listdir(SYSTEM_CA_DIR)):
        # The system's hashed CA directory: OpenSSL reads only the certificates it needs.
        ctx = ssl.create_default_context(capath=SYSTEM_CA_DIR)
    else:
        import certifi

        ctx = ssl.create_default_context(cafile=certifi.where())
    cert_dir = opts.cert_dir or os.environ.get("SSL_CERT_DIR")
    if cert_dir and os.path.isdir(cert_dir):
        for name in sorted(os.listdir(cert_dir)):
            if name.endswith((".crt", ".pem")):
                ctx.load_verify_locations(cafile=os.path.join(cert_dir, name))
    return ctx


def _retry_after(resp: httpx.Response) -> float | None:
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


def _error_detail(resp: httpx.Response) -> tuple[str, str | None]:
    """The registry's own error code and message, when it sent the standard JSON body."""
    try:
        body = resp.json()
        errs = body.get("errors") or []
        if errs:
            e = errs[0]
            return (f"{e.get('code', '')}: {e.get('message', '')}".strip(": "), e.get("code"))
    except Exception:
        pass
    return (f"HTTP {resp.status_code}", None)


class Registry:
    """A connection to one registry host, shared by every repository on it."""

    def __init__(
        self,
        domain: str,
        *,
        options: TransportOptions | None = None,
        credentials: auth.CredentialLookup | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.domain = domain
        self.host = DOCKER_HUB_API_HOST if domain == DEFAULT_DOMAIN else domain
        self.options = options or TransportOptions()
        self.retry = retry or RetryPolicy()
        self._credentials = credentials
        self._tokens = auth.TokenCache()
        self._challenge: auth.Challenge | None = None
        self._scheme: str | None = None
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._transport = transport
        self._http: dict[bool, httpx.Client] = {}

    def _client(self, tls: bool) -> httpx.Client:
        """The HTTP client, built on first use: a TLS context costs time and is not always needed."""
        client = self._http.get(tls)
        if client is None:
            limits = httpx.Limits(max_connections=self.options.max_connections,
                                  max_keepalive_connections=self.options.max_connections)
            timeout = httpx.Timeout(self.options.timeout, connect=self.options.connect_timeout)
            client = httpx.Client(
                verify=_ssl_context(self.options) if tls else _unverified_context(), timeout=timeout, limits=limits,
                follow_redirects=False, transport=self._transport, trust_env=False,
                headers={"User-Agent": f"registry-tools/{__version__}"},
            )
            self._http[tls] = client
        return client

    @property
    def http(self) -> httpx.Client:
        """The client for this registry's scheme (and, for redirects, any https host)."""
        self.base_url()
        return self._client(self._scheme == "https" or self._scheme is None)

    def close(self) -> None:
        for c in self._http.values():
            c.close()
        self._http.clear()

    # -- scheme and auth ---------------------------------------------------------------

    def base_url(self) -> str:
        with self._lock:
            if self._scheme is None:
                self._scheme = self._probe_scheme()
            return f"{self._scheme}://{self.host}"

    def _probe_scheme(self) -> str:
        """https; plain http only for a loopback registry (or with TLS verification off) that has no TLS.

        A loopback registry is asked over plain http first: a TLS server cannot give a
        registry's answer to that (Go's says 400), and the question carries no credentials.
        """
        may_use_http = is_loopback_host(self.host) or not self.options.tls_verify
        if may_use_http:
            try:
                resp = self._client(False).get(f"http://{self.host}/v2/")
                if resp.status_code != 400 and resp.status_code < 500:
                    self._note_challenge(resp)
                    return "http"
            except httpx.TransportError:
                pass
        try:
            resp = self._client(True).get(f"https://{self.host}/v2/")
            self._note_challenge(resp)
            return "https"
        except httpx.TransportError as e:
            raise NetworkError(f"cannot reach registry {self.host}: {_reason(e)}") from None

    def _note_challenge(self, resp: httpx.Response) -> None:
        if resp.status_code == 401:
            ch = auth.pick_challenge(auth.parse_challenges(resp.headers.get_list("www-authenticate")))
            if ch is not None and ch.scheme in ("bearer", "basic"):
                self._challenge = ch

    def _credential(self, repo: str = "") -> auth.Credential | None:
        return self._credentials(self.domain, repo) if self._credentials is not None else None

    def _auth_header(self, scopes: tuple[str, ...], repo: str) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            cred = self._credential(repo)
            if cred and cred.identity_token and not cred.password:
                return auth.basic_header("<token>", cred.identity_token)
            return auth.basic_header(cred.username, cred.password) if cred else None
        key = (ch.params.get("realm", ""), ch.params.get("service", ""), scopes)
        tok = self._tokens.get(key)
        if tok is None:
            tok = self._fetch_token(ch, scopes, repo)
            self._tokens.put(key, tok)
        return f"Bearer {tok.value}"

    def _fetch_token(self, ch: auth.Challenge, scopes: tuple[str, ...], repo: str = "") -> auth.Token:
        realm = ch.params.get("realm", "")
        if not realm:
            raise AuthError(f"registry {self.host} asked for a bearer token but named no realm")
        auth.validate_realm(realm)
        query: list[tuple[str, str]] = []
        if ch.params.get("service"):
            query.append(("service", ch.params["service"]))
        query += [("scope", s) for s in scopes]
        cred = self._credential(repo)
        headers = {}
        if cred and cred.identity_token:
            return self._refresh_token_flow(realm, ch, scopes, cred)
        if cred:
            headers["Authorization"] = auth.basic_header(cred.username, cred.password)
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        try:
            resp = self._with_retries("GET", url, headers, kind="token")
        except NetworkError as e:
            raise AuthError(f"registry {self.host}: its token server at {_safe(realm)} cannot be reached ({e})") from None
        if resp.status_code in (401, 403):
            raise AuthError(
                f"registry {self.host}: token request refused ({resp.status_code}); "
                + ("check the credentials" if cred else "credentials are needed: run registry-tools login"),
                status=resp.status_code,
            )
        if resp.status_code != 200:
            raise AuthError(f"registry {self.host}: token server answered HTTP {resp.status_code}", resp.status_code)
        return self._token_from(resp)

    def _token_from(self, resp: httpx.Response) -> auth.Token:
        try:
            body = resp.json()
        except ValueError:
            raise AuthError(f"registry {self.host}: token server sent no JSON") from None
        value = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not value or not isinstance(value, str):
            raise AuthError(f"registry {self.host}: token server sent no token")
        try:
            lifetime = float(body.get("expires_in") or auth.DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = auth.DEFAULT_TOKEN_LIFETIME
        return auth.Token.lasting(value, lifetime)

    def _refresh_token_flow(self, realm: str, ch: auth.Challenge, scopes: tuple[str, ...],
                            cred: auth.Credential) -> auth.Token:
        form = {
            "grant_type": "refresh_token", "refresh_token": cred.identity_token,
            "service": ch.params.get("service", ""), "scope": " ".join(scopes),
            "client_id": "registry-tools",
        }
        try:
            resp = self._with_retries("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                                      kind="token", content=urlencode(form).encode())
            if resp.status_code in (404, 405):  # an OAuth2 POST the server does not take: the GET form
                query = [("service", ch.params.get("service", ""))] + [("scope", s) for s in scopes]
                resp = self._with_retries("GET", realm + "?" + urlencode(query),
                                          {"Authorization": auth.basic_header("<token>", cred.identity_token)},
                                          kind="token")
        except NetworkError as e:
            raise AuthError(f"registry {self.host}: its token server at {_safe(realm)} cannot be reached ({e})") from None
        if resp.status_code != 200:
            raise AuthError(f"registry {self.host}: the identity token was refused (HTTP {resp.status_code}); "
                            "run registry-tools login again", resp.status_code)
        return self._token_from(resp)

    # -- requests ----------------------------------------------------------------------

    def _with_retries(self, method: str, url: str, headers: dict[str, str], *, kind: str,
                      content: Any = None, stream: bool = False, attempts: int | None = None) -> httpx.Response:
        """Send, following redirects by hand and retrying transient failures."""
        deadline = time.monotonic() + self.retry.max_total
        max_attempts = attempts or self.retry.attempts
        attempt = 0
        while True:
            try:
                body = content() if callable(content) else content
                resp = self._send_following(method, url, headers, body, stream, kind)
            except TRANSIENT as e:
                if attempt + 1 >= max_attempts or time.monotonic() > deadline:
                    raise NetworkError(f"{method} {_safe(url)} failed after {attempt + 1} attempts: {_reason(e)}") from None
                time.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            if resp.status_code in RETRY_STATUS and attempt + 1 < max_attempts:
                wait = self.retry.delay(attempt, _retry_after(resp))
                if time.monotonic() + wait <= deadline:
                    log.info("%s %s: HTTP %d, retrying in %.1fs", method, _safe(url), resp.status_code, wait)
                    resp.close()
                    time.sleep(wait)
                    attempt += 1
                    continue
            return resp

    def _send_following(self, method: str, url: str, headers: dict[str, str], content: Any,
                        stream: bool, kind: str) -> httpx.Response:
        origin = urlsplit(url).netloc
        for _ in range(10):
            client = self._client(urlsplit(url).scheme == "https")
            req = client.build_request(method, url, headers=headers, content=content)
            self.stats[f"{method} {kind}"] += 1
            resp = client.send(req, stream=True)
            log.debug("%s %s -> %d", method, _safe(url), resp.status_code)
            if resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers:
                resp.close()
                url = urljoin(url, resp.headers["location"])
                if urlsplit(url).netloc != origin:
                    # Blob storage on another host: never hand it our credentials.
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                if resp.status_code == 303:
                    method, content = "GET", None
                continue
            if not stream:
                resp.read()
            return resp
        raise RegistryError(f"too many redirects for {_safe(url)}")

    def request(self, method: str, repo: str, path: str, *, actions: str = "pull",
                headers: dict[str, str] | None = None, kind: str = "api",
                content: Any = None, stream: bool = False,
                extra_scopes: tuple[str, ...] = (), retry: bool = True) -> httpx.Response:
        """A request within one repository's scope, authenticating as the registry asks.

        `content` may be bytes or a function returning an iterator of chunks (called anew
        for every attempt). With retry=False a transient failure is raised at once, for
        callers that retry a larger unit (an upload session).
        """
        url = self.base_url() + path if path.startswith("/") else path
        scopes = ((f"repository:{repo}:{actions}",) if repo else ()) + extra_scopes
        hdrs = dict(headers or {})
        for attempt in range(2):
            auth_header = self._auth_header(scopes, repo)
            if auth_header:
                hdrs["Authorization"] = auth_header
            resp = self._with_retries(method, url, hdrs, kind=kind, content=content, stream=stream,
                                      attempts=None if retry else 1)
            if resp.status_code != 401 or attempt == 1:
                return resp
            chosen = auth.pick_challenge(auth.parse_challenges(resp.headers.get_list("www-authenticate")))
            if chosen is None or chosen.scheme not in ("bearer", "basic"):
                return resp
            if chosen.scheme == "basic" and self._credential(repo) is None:
                return resp  # nothing to answer with: the caller reports the 401
            resp.close()
            if chosen.scheme == "bearer":
                extra = chosen.params.get("scope", "")
                scopes = tuple(auth.token_scopes(extra, list(scopes)))
                self._tokens.drop((chosen.params.get("realm", ""), chosen.params.get("service", ""), scopes))
            self._challenge = chosen
        return resp

    def _check(self, resp: httpx.Response, what: str, repo: str = "") -> None:
        if resp.status_code < 400:
            return
        detail, code = _error_detail(resp)
        if resp.status_code == 404:
            if code == "NAME_UNKNOWN" and repo:
                raise NotFound(f"repository {self.domain}/{repo} not found", 404, code)
            if code == "MANIFEST_UNKNOWN" and "@" not in what:
                raise NotFound(f"{what}: no such tag ({detail})", 404, code)
            raise NotFound(f"{what}: not found on {self.domain} ({detail})", 404, code)
        if resp.status_code in (401, 403):
            hint = ("check the credentials and that they grant access to this repository" if self._credential(repo)
                    else "the registry needs credentials: run registry-tools login")
            raise AuthError(f"{what}: access denied by {self.domain} ({detail}); {hint}", resp.status_code, code)
        if resp.status_code == 429:
            raise RegistryError(f"{what}: rate-limited by {self.domain} (HTTP 429); try again later", 429, code)
        raise RegistryError(f"{what}: {self.domain} answered {detail}", resp.status_code, code)

    def check_login(self) -> None:
        """Prove the credentials work: the registry's version check must succeed with them."""
        self.base_url()
        ch = self._challenge
        if ch is None:
            return  # the registry asks for no credentials at all
        scopes: tuple[str, ...] = ()
        if ch.scheme == "bearer":
            self._tokens.drop((ch.params.get("realm", ""), ch.params.get("service", ""), scopes))
        resp = self.request("GET", "", "/v2/", kind="login")
        if resp.status_code in (401, 403):
            raise AuthError(f"login to {self.domain} failed: the registry refused these credentials", resp.status_code)
        self._check(resp, f"login to {self.domain}")

    # -- manifests ---------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        """Manifest bytes (at most 4 MiB, read incrementally) and their Content-Type."""
        what = f"{self.domain}/{repo}@{ref}" if ref.startswith("sha256:") else f"{self.domain}/{repo}:{ref}"
        resp = self.request("GET", repo, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            kind="manifest", stream=True)
        try:
            self._check_stream(resp, what, repo)
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_SIZE:
                raise ManifestError(f"{what}: manifest of {length} bytes is over the {MAX_MANIFEST_SIZE} byte limit")
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > MAX_MANIFEST_SIZE:
                    raise ManifestError(f"{what}: manifest is over the {MAX_MANIFEST_SIZE} byte limit")
        except httpx.TransportError as e:
            raise NetworkError(f"{what}: connection failed while reading the manifest: {_reason(e)}") from None
        finally:
            resp.close()
        return bytes(buf), resp.headers.get("content-type", "")

    def head_manifest(self, repo: str, ref: str) -> tuple[Digest | None, str, int | None]:
        """HEAD a manifest: its digest (if the registry says), media type and size."""
        resp = self.request("HEAD", repo, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            kind="manifest-head")
        if resp.status_code in (401, 403):
            self._check(resp, f"{self.domain}/{repo}:{ref}", repo)
        if resp.status_code >= 400:
            # A HEAD answer has no body to say why; the caller's GET will get the registry's reason.
            return None, "", None
        dcd = resp.headers.get("docker-content-digest")
        size = resp.headers.get("content-length")
        try:
            digest = Digest.parse(dcd) if dcd else None
        except Exception:
            digest = None
        return digest, resp.headers.get("content-type", ""), int(size) if size and size.isdigit() else None

    def list_tags(self, repo: str, limit: int = 1000) -> list[str]:
        """The repository's tags (one page, up to `limit`); NotFound if the repository is unknown."""
        resp = self.request("GET", repo, f"/v2/{repo}/tags/list?n={limit}", kind="tags")
        if resp.status_code == 404:
            raise NotFound(f"repository {self.domain}/{repo} not found", 404, "NAME_UNKNOWN")
        self._check(resp, f"{self.domain}/{repo}", repo)
        try:
            tags = resp.json().get("tags") or []
        except ValueError:
            return []
        return [t for t in tags if isinstance(t, str)]

    def _check_stream(self, resp: httpx.Response, what: str, repo: str = "") -> None:
        if resp.status_code >= 400:
            resp.read()
            self._check(resp, what, repo)

    # -- pushing -------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: Digest, size: int | None = None) -> bool:
        resp = self.request("HEAD", repo, f"/v2/{repo}/blobs/{digest}", actions="pull,push", kind="blob-head")
        if resp.status_code == 404:
            return False
        self._check(resp, f"{self.domain}/{repo}@{digest}", repo)
        length = resp.headers.get("content-length")
        return size is None or not length or not length.isdigit() or int(length) == size

    def start_upload(self, repo: str, digest: Digest, mount_from: str | None = None) -> tuple[bool, str, int]:
        """POST an upload: (mounted, the session URL, the registry's minimum chunk size)."""
        query = f"?mount={digest}&from={mount_from}" if mount_from else ""
        extra = (f"repository:{mount_from}:pull",) if mount_from else ()
        resp = self.request("POST", repo, f"/v2/{repo}/blobs/uploads/{query}", actions="pull,push",
                            kind="upload", extra_scopes=extra, retry=False)
        if mount_from and resp.status_code == 201:
            return True, "", 0
        if resp.status_code != 202:
            self._check(resp, f"upload of {digest} to {self.domain}/{repo}", repo)
            raise RegistryError(f"upload of {digest} to {self.domain}/{repo}: unexpected HTTP {resp.status_code}",
                                resp.status_code)
        min_chunk = resp.headers.get("oci-chunk-min-length", "0")
        return False, self._location(resp), int(min_chunk) if min_chunk.isdigit() else 0

    def _location(self, resp: httpx.Response) -> str:
        """Where an upload goes next: Location resolved against the request URL, query kept."""
        loc = resp.headers.get("location")
        if not loc:
            raise RegistryError(f"{self.domain}: upload answer has no Location", resp.status_code)
        return urljoin(str(resp.request.url), loc)

    def upload(self, repo: str, location: str, digest: Digest, size: int, chunks: Callable[[int, int], Iterator[bytes]],
               min_chunk: int = 0) -> Digest:
        """PATCH the blob (in one piece, or in chunks if the registry refuses that), then PUT."""
        what = f"upload of {digest} to {self.domain}/{repo}"
        resp = self.request("PATCH", repo, location, actions="pull,push", kind="upload",
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                            content=lambda: chunks(0, size), retry=False)
        if resp.status_code in (413, 416):
            location = self._upload_chunked(repo, location, size, chunks, min_chunk, what)
        else:
            if resp.status_code not in (202, 204):
                self._check(resp, what, repo)
                raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)
            location = self._location(resp)
        sep = "&" if urlsplit(location).query else "?"
        resp = self.request("PUT", repo, f"{location}{sep}digest={digest}", actions="pull,push", kind="upload",
                            headers={"Content-Length": "0"}, retry=False)
        if resp.status_code != 201:
            self._check(resp, what, repo)
            raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)
        return self._returned_digest(resp, digest, what)

    def _upload_chunked(self, repo: str, location: str, size: int, chunks: Callable[[int, int], Iterator[bytes]],
                        min_chunk: int, what: str) -> str:
        """The chunked protocol: PATCHes with Content-Range, each at least OCI-Chunk-Min-Length."""
        step = max(min_chunk, 8 << 20)
        start = 0
        while start < size:
            end = min(size, start + step)
            resp = self.request("PATCH", repo, location, actions="pull,push", kind="upload",
                                headers={"Content-Type": "application/octet-stream", "Content-Length": str(end - start),
                                         "Content-Range": f"{start}-{end - 1}"},
                                content=lambda s=start, e=end: chunks(s, e), retry=False)
            if resp.status_code != 202:
                self._check(resp, what, repo)
                raise RegistryError(f"{what}: chunk at {start} refused (HTTP {resp.status_code})", resp.status_code)
            location = self._location(resp)
            start = end
        return location

    def _returned_digest(self, resp: httpx.Response, digest: Digest, what: str) -> Digest:
        got = resp.headers.get("docker-content-digest")
        if got and got != str(digest):
            raise DigestMismatch(f"{what}: the registry stored", str(digest), got)
        return digest

    def manifest_digest(self, repo: str, ref: str) -> Digest | None:
        """What a tag or digest points to now (None if nothing), by HEAD."""
        resp = self.request("HEAD", repo, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT},
                            actions="pull,push", kind="manifest-head")
        if resp.status_code == 404:
            return None
        self._check(resp, f"{self.domain}/{repo}:{ref}", repo)
        got = resp.headers.get("docker-content-digest")
        return Digest.parse(got) if got else None

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> Digest:
        digest = Digest.of_bytes(raw)
        what = f"manifest {digest} to {self.domain}/{repo}:{ref}"
        resp = self.request("PUT", repo, f"/v2/{repo}/manifests/{ref}", actions="pull,push", kind="manifest-put",
                            headers={"Content-Type": media_type}, content=raw)
        if resp.status_code not in (200, 201, 202):
            self._check(resp, what, repo)
            raise RegistryError(f"{what}: unexpected HTTP {resp.status_code}", resp.status_code)
        return self._returned_digest(resp, digest, what)

    # -- blobs ---------------------------------------------------------------------------

    def open_blob(self, repo: str, digest: Digest, size: int | None) -> "BlobStream":
        return BlobStream(self, repo, digest, size)


class BlobStream:
    """A file-like read of a blob that resumes with Range after a broken connection."""

    def __init__(self, registry: Registry, repo: str, digest: Digest, size: int | None):
        self._reg = registry
        self._repo = repo
        self._digest = digest
        self._size = size
        self._offset = 0
        self._buf = b""
        self._resumes = 0
        self._resp: httpx.Response | None = None
        self._it: Iterator[bytes] | None = None
        self._what = f"blob {digest}"
        self._open(0)

    def _open(self, offset: int) -> None:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._reg.request("GET", self._repo, f"/v2/{self._repo}/blobs/{self._digest}", headers=headers,
                                 kind="blob", stream=True)
        self._reg._check_stream(resp, f"{self._reg.domain}/{self._repo}@{self._digest}", self._repo)
        skip = 0
        if offset:
            if resp.status_code == 206:
                start = resp.headers.get("content-range", "").removeprefix("bytes ").split("-", 1)[0]
                if start != str(offset):
                    resp.close()
                    raise NetworkError(f"{self._what}: the registry resumed at the wrong offset ({start}, wanted {offset})")
            else:
                skip = offset  # no Range support: read again from the start and drop what we have
        self._resp = resp
        self._it = resp.iter_bytes()
        while skip:
            chunk = next(self._it, b"")
            if not chunk:
                break
            if len(chunk) > skip:
                self._buf = chunk[skip:]
                skip = 0
            else:
                skip -= len(chunk)

    def read(self, n: int = -1) -> bytes:
        while not self._buf:
            assert self._it is not None
            try:
                chunk = next(self._it, None)
            except TRANSIENT as e:
                self._reconnect(e)
                continue
            if chunk is None:
                return b""
            self._buf = chunk
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        self._offset += len(out)
        return out

    def _reconnect(self, err: Exception) -> None:
        self.close()
        if self._resumes >= self._reg.retry.attempts:
            raise NetworkError(f"{self._what}: download kept failing after {self._resumes} resumes: {_reason(err)}")
        self._resumes += 1
        log.info("%s: connection broke at byte %d (%s); resuming", self._what, self._offset, _reason(err))
        time.sleep(self._reg.retry.delay(self._resumes - 1))
        self._open(self._offset)

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    def __enter__(self) -> "BlobStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]


def _safe(url: str) -> str:
    """A URL fit for messages: no query string (pre-signed URLs carry secrets there)."""
    p = urlsplit(url)
    return f"{p.scheme}://{p.netloc}{p.path}"
