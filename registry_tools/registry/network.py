"""Where a connection goes and with what TLS: proxies and certificates, per destination host.

Proxies: `--proxy URL` (every scheme), else the variables curl, skopeo and Nix's fetchers
read (`https_proxy`/`HTTPS_PROXY`, `http_proxy`/`HTTP_PROXY`, `all_proxy`/`ALL_PROXY`,
lower case first), for the registry, its token realm and blob storage alike; `no_proxy`/
`NO_PROXY` as curl matches it: `*` for everything, a host name and every name under it
(`example.com` and `.example.com` both match `a.example.com`), an IP address, or a CIDR
range. Proxy credentials (`http://user:pass@proxy:3128`) are sent as Proxy-Authorization
and never printed: `shown` drops them from every message.

Certificates: the CAs (`--ca-file`, `SSL_CERT_FILE`, the system's), then for each host the
certs.d directories docker and containers/image use (`/etc/docker/certs.d/HOST:PORT/`,
`/etc/containers/certs.d/…`, `~/.config/containers/certs.d/…`; `$REGISTRY_TOOLS_CERTS_D`
lists other roots): `*.crt` are CAs, `client.cert`/`client.key` (any `*.cert` with its
`*.key`) the client certificate a registry requiring mutual TLS asks for. `--cert-dir`
is a directory of the same kind used for every host, as skopeo's is.
"""
from __future__ import annotations

import ipaddress
import os
import re
import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx

from registry_tools.errors import UsageError

CERTS_D = ("~/.config/containers/certs.d", "/etc/containers/certs.d", "/etc/docker/certs.d")
CERTS_D_ENV = "REGISTRY_TOOLS_CERTS_D"


def shown(url: str) -> str:
    """A proxy URL as it may be printed: scheme, host and port, no credentials."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "(a proxy URL that does not parse)"
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}"


def _env(*names: str) -> str | None:
    for name in names:
        for variant in (name.lower(), name.upper()):
            value = os.environ.get(variant)
            if value:
                return value.strip()
    return None


@dataclass(frozen=True)
class Proxies:
    http: str | None = None
    https: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, explicit: str | None = None) -> "Proxies":
        everything = _env("all_proxy")
        http = explicit or _env("http_proxy") or everything
        https = explicit or _env("https_proxy") or everything
        for url in (http, https):
            if url is not None:
                valid_proxy(url)
        no = _env("no_proxy") or ""
        return cls(http, https, tuple(e.strip().lower() for e in no.split(",") if e.strip()))

    def for_url(self, url: httpx.URL) -> str | None:
        proxy = self.https if url.scheme == "https" else self.http
        if proxy is None or bypassed(url.host, self.no_proxy):
            return None
        return proxy


def valid_proxy(url: str) -> str:
    """A proxy URL a connection can go through (`--proxy`, checked as it is parsed, and the
    environment's); else one line saying what it takes, without the credentials it may hold."""
    try:
        u = httpx.URL(url if "://" in url else f"http://{url}")
    except httpx.InvalidURL:
        raise UsageError(f"proxy {shown(url)}: not a URL") from None
    if "://" not in url and (u.port is None or not u.host):  # `notaurl`: a word, not a proxy
        raise UsageError(f"proxy {shown(f'http://{url}').removeprefix('http://')}: not a URL; write "
                         "http://HOST:PORT (e.g. http://proxy.example:3128)")
    if u.scheme not in ("http", "https", "socks5", "socks5h"):
        raise UsageError(f"proxy {shown(url)}: use an http://, https:// or socks5:// proxy")
    if u.scheme.startswith("socks"):
        try:
            import socksio  # noqa: F401
        except ImportError:
            raise UsageError(f"proxy {shown(url)}: SOCKS proxies need the socksio package "
                             "(pip install 'httpx[socks]')") from None
    if not u.host:
        raise UsageError(f"proxy {shown(url)}: no host")
    return url


def bypassed(host: str, entries: tuple[str, ...]) -> bool:
    """curl's no_proxy: `*`, a domain and its subdomains, an IP, or a CIDR range."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in entries:
        if entry == "*":
            return True
        e = entry.strip("[]").lstrip(".").rstrip(".")
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(e, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if "/" not in e and (host == e or host.endswith("." + e)):
            return True
    return False


def proxy_of(url: str) -> httpx.Proxy:
    return httpx.Proxy(url if "://" in url else f"http://{url}")


VIA = "registry_tools.proxy"  # response extension: the proxy (as `shown`) the answer came through


@contextmanager
def through(proxy: str | None, url: httpx.URL) -> Iterator[None]:
    """A request for `url` sent through `proxy`: a failure that is the proxy's (it cannot be
    reached, refuses to open the tunnel, or cannot reach the host itself) becomes an
    httpx.ProxyError naming it, never reported as the registry's. A TLS failure in the tunnel is
    the registry's (its certificate)."""
    if proxy is None:
        yield
        return
    try:
        yield
    except httpx.ProxyError as e:  # CONNECT answered with something else than 2xx: "502 Bad Gateway"
        how = "could not connect to" if str(e).startswith("5") else "refused the connection to"
        raise httpx.ProxyError(f"the proxy {shown(proxy)} {how} {url.host}:{url.port or 443} ({e})") from e
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:  # the connection goes to the proxy
        if _tls_failure(e):
            raise
        raise httpx.ProxyError(f"the proxy {shown(proxy)} cannot be reached ({e})") from e


def _tls_failure(e: BaseException) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def sent(proxy: str | None, request: httpx.Request,
         send: Callable[[httpx.Request], httpx.Response]) -> httpx.Response:
    """`send(request)` through `proxy` (None: straight): its failures told apart (`through`), its
    answer marked with the proxy it came through (`VIA`)."""
    with through(proxy, request.url):
        resp = send(request)
    if proxy:
        resp.extensions[VIA] = shown(proxy)
    return resp


def proxy_refusal(resp: httpx.Response, registry: str) -> str | None:
    """What the proxy said, if this answer is its own refusal rather than `registry`'s: a 407; or a
    401 that came through a proxy and is no registry's answer: one with a Proxy-Authenticate
    challenge, or without the Docker-Distribution-API-Version header a registry puts on every
    answer (tinyproxy answers a wrong password with a 401 of its own)."""
    via = resp.extensions.get(VIA)
    who = f"the proxy {via}" if isinstance(via, str) else "a proxy"
    if resp.status_code == 407:
        return f"{who} asks for credentials (HTTP 407): give them in its URL, http://USER:PASSWORD@HOST:PORT"
    if resp.status_code == 401 and isinstance(via, str) and (
            "proxy-authenticate" in resp.headers or "docker-distribution-api-version" not in resp.headers):
        return (f"{who} refused the request (HTTP 401, its own answer, not {registry}'s): check the "
                "credentials in the proxy's URL")
    return None


# --- certificates --------------------------------------------------------------------------

def certs_roots() -> list[Path]:
    listed = os.environ.get(CERTS_D_ENV)
    roots = listed.split(os.pathsep) if listed else list(CERTS_D)
    return [Path(os.path.expanduser(r)) for r in roots if r]


def certs_dir(netloc: str) -> Path | None:
    """The first certs.d directory for HOST:PORT (or HOST) that exists."""
    names = [netloc] + ([netloc.rsplit(":", 1)[0]] if ":" in netloc.strip("[]") else [])
    for root in certs_roots():
        for name in names:
            d = root / name
            if d.is_dir():
                return d
    return None


def load_dir(ctx: ssl.SSLContext, directory: Path) -> None:
    """A certs.d directory into a context: `*.crt` trusted, the first `*.cert`+`*.key` pair presented."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise UsageError(f"{directory}: {e.strerror}") from None
    for name in names:
        if name.endswith(".crt"):
            ctx.load_verify_locations(cafile=str(directory / name))
    for name in names:
        if name.endswith(".cert"):
            key = directory / (name[:-len(".cert")] + ".key")
            if not key.is_file():
                raise UsageError(f"{directory / name} has no {key.name} beside it")
            try:
                ctx.load_cert_chain(str(directory / name), str(key))
            except (ssl.SSLError, OSError) as e:
                raise UsageError(f"{directory / name}: not a usable client certificate and key ({e})") from None
            break


HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")  # OpenSSL's subject-hash names (c_rehash, update-ca-certificates)


def load_cert_dir(ctx: ssl.SSLContext, directory: str, loaded: set[str]) -> None:
    """One directory of SSL_CERT_DIR (a list, as OpenSSL and Go read it): a certificate OpenSSL
    finds by its subject-hash name is looked up when a chain needs it (capath: nothing is read
    now), and every other `*.crt` or `*.pem` file, as Go's reading of the variable (skopeo's)
    would trust it, is loaded, once. The system's /etc/ssl/certs has some 150 certificates,
    each behind a hash name: reading them all at every start took 60-300 ms."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # missing, or not a directory: nothing to trust there
        return
    hashed = [n for n in names if HASHED_NAME.fullmatch(n)]
    if hashed:
        ctx.load_verify_locations(capath=directory)
        loaded.update(os.path.realpath(os.path.join(directory, n)) for n in hashed)
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith((".crt", ".pem")) and (real := os.path.realpath(path)) not in loaded:
            ctx.load_verify_locations(cafile=path)
            loaded.add(real)
