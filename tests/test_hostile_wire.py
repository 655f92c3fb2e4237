"""A hostile registry on the wire: credentials stay where they belong, bodies are bounded.

Each scripted host runs behind httpx.MockTransport, under the real Registry client,
auth flow and transport; the hosts have names (reg.example, storage.example, …) so
"another host" and "the same host over plain http" can be told apart exactly.
Regression tests for the review's S1-S4, H1 and the wire tracebacks (T*).
"""
from __future__ import annotations

import base64
import hashlib
import json
from typing import Callable, Iterator

import httpx
import pytest

from registry_tools.errors import AuthError, NetworkError, NotFound, RegistryError, RegistryToolsError
from registry_tools.model import manifest as mf
from registry_tools.model.digest import Digest
from registry_tools.registry import upload
from registry_tools.registry.auth import Credential
from registry_tools.registry.blob import BlobStream
from registry_tools.registry.client import Registry, RetryPolicy

USER, PASSWORD = "alice", "s3cret-Pa55"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
TOKEN = "registry-token-1234"
BLOB = b"layer bytes " * 1000
DIGEST = Digest.of_bytes(BLOB)


def one_tag_page(reg, repo):
    """The first page of a repository's tags."""
    from registry_tools.registry.repository import tag_page

    return tag_page(reg, repo, f"/v2/{repo}/tags/list?n=1000")


class Wire:
    """Scripted hosts: `routes[host](request)` answers; every request is recorded."""

    def __init__(self, routes: dict[str, Callable[[httpx.Request], httpx.Response]]):
        self.routes = routes
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return self.routes[request.url.host](request)

    def to(self, host: str, scheme: str | None = None) -> list[httpx.Request]:
        return [r for r in self.seen if r.url.host == host and (scheme is None or r.url.scheme == scheme)]


def registry(wire: Wire, creds: bool = True, host: str = "reg.example") -> Registry:
    lookup = (lambda domain, repo: Credential(USER, PASSWORD)) if creds else None
    return Registry(host, credentials=lookup, transport=httpx.MockTransport(wire),
                    retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02))


def basic_registry(handle: Callable[[httpx.Request], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    """A registry that wants Basic credentials for everything."""
    def answer(req: httpx.Request) -> httpx.Response:
        if req.headers.get("authorization") != BASIC:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        return handle(req)
    return answer


def bearer_registry(realm: str, handle: Callable[[httpx.Request], httpx.Response]
                    ) -> Callable[[httpx.Request], httpx.Response]:
    def answer(req: httpx.Request) -> httpx.Response:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})
        return handle(req)
    return answer


def token_server(req: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"token": TOKEN, "expires_in": 300})


def test_s1_upload_location_on_another_host_gets_no_credentials():
    """push: the registry's Authorization never goes to an upload Location elsewhere."""
    def reg(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": "https://storage.example/up/1?sig=abc"})
        return httpx.Response(404)

    def storage(req: httpx.Request) -> httpx.Response:
        if req.method == "PATCH":
            req.read()
            return httpx.Response(202, headers={"Location": "https://storage.example/up/1?sig=abc"})
        return httpx.Response(201, headers={"Docker-Content-Digest": str(DIGEST)})

    wire = Wire({"reg.example": basic_registry(reg), "storage.example": storage})
    r = registry(wire)
    mounted, where, _ = upload.start_upload(r, "x/y", DIGEST)
    assert not mounted and where.startswith("https://storage.example/")
    upload.upload(r, "x/y", where, mf.Descriptor("", DIGEST, len(BLOB)), lambda s, e: iter([BLOB[s:e]]))
    assert [q.method for q in wire.to("storage.example")] == ["PATCH", "PUT"]
    assert all("authorization" not in q.headers for q in wire.to("storage.example"))
    assert any(q.headers.get("authorization") == BASIC for q in wire.to("reg.example"))


def test_s2_a_redirect_targets_own_realm_never_gets_the_registrys_credentials():
    """A blob-storage host reached by redirect answers 401 with its own Bearer realm."""
    def reg(req: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"Location": f"https://storage.example/blob/{DIGEST.hex}"})

    def storage(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://evil.example/token"'})

    evil_seen: list[httpx.Request] = []
    wire = Wire({"reg.example": bearer_registry("https://auth.example/token", reg),
                 "auth.example": token_server, "storage.example": storage,
                 "evil.example": lambda req: evil_seen.append(req) or token_server(req)})
    with pytest.raises(AuthError):
        BlobStream(registry(wire), "x/y", DIGEST, len(BLOB)).read()
    assert evil_seen == [] and wire.to("evil.example") == []
    assert all("authorization" not in q.headers for q in wire.to("storage.example"))
    assert wire.to("auth.example")[0].headers["authorization"] == BASIC  # the registry's own realm did


def test_s3_https_to_http_redirect_on_the_same_host_drops_authorization():
    def reg(req: httpx.Request) -> httpx.Response:
        if req.url.scheme == "http":
            return httpx.Response(200, content=BLOB)
        return httpx.Response(307, headers={"Location": f"http://reg.example/blob/{DIGEST.hex}"})

    def answer(req: httpx.Request) -> httpx.Response:
        if req.url.scheme == "http":
            return reg(req)
        return basic_registry(reg)(req)

    wire = Wire({"reg.example": answer})
    with BlobStream(registry(wire), "x/y", DIGEST, len(BLOB)) as stream:
        assert stream.read() == BLOB
    plain = wire.to("reg.example", "http")
    assert plain and all("authorization" not in q.headers for q in plain)
    assert any(q.headers.get("authorization") == BASIC for q in wire.to("reg.example", "https"))


def test_s4_credentials_never_go_to_a_plain_http_realm_of_a_tls_registry():
    def reg(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{}")

    wire = Wire({"reg.example": bearer_registry("http://auth.example/token", reg), "auth.example": token_server})
    with pytest.raises(AuthError, match="plain http"):
        one_tag_page(registry(wire), "x/y")
    assert wire.to("auth.example") == []
    # Anonymous (no credential to leak): the plain-http realm may be asked.
    wire = Wire({"reg.example": bearer_registry("http://auth.example/token", reg), "auth.example": token_server})
    one_tag_page(registry(wire, creds=False), "x/y")
    assert wire.to("auth.example") and "authorization" not in wire.to("auth.example")[0].headers


def endless(counter: list[int], chunk: bytes = b"[" * 65536) -> Iterator[bytes]:
    while True:
        counter[0] += len(chunk)
        yield chunk
        if counter[0] > 64 << 20:  # the test's own stop, far past any bound we set
            return


@pytest.mark.parametrize("where", ["token", "error", "tags", "manifest"])
def test_h1_every_response_body_is_bounded(where):
    sent = [0]

    def reg(req: httpx.Request) -> httpx.Response:
        if where == "error":
            return httpx.Response(404, content=endless(sent, b"x" * 65536))
        return httpx.Response(200, content=endless(sent))

    routes = {"reg.example": bearer_registry("https://auth.example/token", reg), "auth.example": token_server}
    if where == "token":
        routes["auth.example"] = lambda req: httpx.Response(200, content=endless(sent))
    r = registry(Wire(routes))
    with pytest.raises(RegistryToolsError):
        if where == "manifest":
            r.get_manifest("x/y", "sha256:" + "a" * 64)
        elif where == "error":
            r.check(r.request("GET", "x/y", "/v2/x/y/manifests/latest", stream=True), "x/y:latest", "x/y")
        else:
            one_tag_page(r, "x/y")
    assert sent[0] <= 6 << 20, f"{sent[0]} bytes read"


@pytest.mark.parametrize("answer", [
    {"token": "t\u00f6ken-with-non-ascii"},
    {"token": "two words"},
    {"token": 12345},
    {"access_token": ["x"]},
])
def test_a_token_unfit_for_a_header_is_a_clear_error(answer):
    wire = Wire({"reg.example": bearer_registry("https://auth.example/token", lambda r: httpx.Response(200)),
                 "auth.example": lambda req: httpx.Response(200, json=answer)})
    with pytest.raises(AuthError, match="no usable token"):
        one_tag_page(registry(wire), "x/y")


@pytest.mark.parametrize("where", ["token", "tags", "manifest", "error"])
def test_deeply_nested_json_is_a_clear_error(where):
    deep = b"[" * 100000 + b"]" * 100000

    def reg(req: httpx.Request) -> httpx.Response:
        return httpx.Response(404 if where == "error" else 200, content=deep)

    routes = {"reg.example": bearer_registry("https://auth.example/token", reg), "auth.example": token_server}
    if where == "token":
        routes["auth.example"] = lambda req: httpx.Response(200, content=deep)
    r = registry(Wire(routes))
    if where == "manifest":
        from registry_tools.model import manifest as mf
        raw, _ = r.get_manifest("x/y", "latest")
        with pytest.raises(RegistryToolsError, match="nested"):
            mf.parse(raw)
    elif where == "error":
        with pytest.raises(NotFound, match="HTTP 404"):
            r.check(r.request("GET", "x/y", "/v2/x/y/manifests/latest", stream=True), "x/y:latest", "x/y")
    else:
        with pytest.raises((AuthError, RegistryError), match="nested"):
            one_tag_page(r, "x/y")


def test_a_server_without_range_that_keeps_cutting_ends_in_one_clear_error():
    def reg(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200, content=b"{}")

        def cut() -> Iterator[bytes]:
            yield BLOB[: len(BLOB) // 3]
            raise httpx.ReadError("cut by the test")
        return httpx.Response(200, content=cut(), headers={"Content-Length": str(len(BLOB))})

    stream = BlobStream(registry(Wire({"reg.example": reg}), creds=False), "x/y", DIGEST, len(BLOB))
    with pytest.raises(NetworkError, match="kept failing"):
        while stream.read(4096):
            pass


def test_credentials_only_for_the_registrys_own_origin_even_on_its_own_redirects():
    """A manifest redirected to another port of the same host name is another origin."""
    manifest = json.dumps({"schemaVersion": 2}).encode()

    def reg(req: httpx.Request) -> httpx.Response:
        if req.url.port == 5001:
            return httpx.Response(200, content=manifest)
        return basic_registry(lambda r: httpx.Response(
            307, headers={"Location": "https://reg.example:5001/m"}))(req)

    wire = Wire({"reg.example": reg})
    raw, _ = registry(wire).get_manifest("x/y", "sha256:" + hashlib.sha256(manifest).hexdigest())
    assert raw == manifest
    other = [q for q in wire.seen if q.url.port == 5001]
    assert other and all("authorization" not in q.headers for q in other)


# -- redirects and timeouts, followed and set in the transport (under the auth) -----------------

def test_a_redirect_loop_ends_in_one_clear_error_after_ten_hops():
    def reg(req: httpx.Request) -> httpx.Response:
        hop = int(req.url.params.get("hop", "0"))
        return httpx.Response(302, headers={"Location": f"/v2/x/y/manifests/latest?hop={hop + 1}"})

    wire = Wire({"reg.example": reg})
    with pytest.raises(RegistryError, match="too many redirects"):
        registry(wire, creds=False).get_manifest("x/y", "latest")
    assert len([q for q in wire.seen if "/manifests/" in q.url.path]) == 11  # the request and ten hops


def test_a_303_turns_a_post_into_a_get_without_its_body_and_keeps_credentials_on_its_origin():
    def reg(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(303, headers={"Location": "/v2/x/y/blobs/uploads/abc"})
        return httpx.Response(200, json={"ok": True})

    wire = Wire({"reg.example": basic_registry(reg)})
    resp = registry(wire).request("POST", "x/y", "/v2/x/y/blobs/uploads/", actions="pull,push",
                                  content=b"body", headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 200
    followed = wire.seen[-1]
    assert followed.method == "GET" and followed.content == b"" and "content-type" not in followed.headers
    assert followed.headers["authorization"] == BASIC


def test_a_streamed_upload_is_never_sent_twice_by_a_redirect():
    """The body goes once; the 307 goes back to the caller (who retries its larger unit)."""
    seen: list[tuple[str, bytes]] = []

    class Wire1(httpx.BaseTransport):  # reads the body as a socket would: once, not kept
        def handle_request(self, req: httpx.Request) -> httpx.Response:
            body = b"".join(req.stream)  # type: ignore[union-attr]
            seen.append((req.url.host, body))
            if req.url.host == "storage.example":
                return httpx.Response(201)
            return httpx.Response(307, headers={"Location": "https://storage.example/put"})

    reg = Registry("reg.example", transport=Wire1(), retry=RetryPolicy(attempts=1))
    resp = reg.request("PUT", "x/y", "/v2/x/y/blobs/uploads/abc?digest=" + str(DIGEST), actions="pull,push",
                       content=iter([BLOB]))
    assert resp.status_code == 307
    assert [(h, b) for h, b in seen if b] == [("reg.example", BLOB)]  # the body went once
    assert all(h != "storage.example" for h, _ in seen)


def test_the_operations_timeouts_are_set_by_the_transport_on_every_request():
    from registry_tools.registry.client import TransportOptions
    wire = Wire({"reg.example": lambda req: httpx.Response(200, content=b"{}")})
    reg = Registry("reg.example", options=TransportOptions(timeout=7, connect_timeout=3),
                   transport=httpx.MockTransport(wire))
    reg.request("GET", "x/y", "/v2/x/y/tags/list")
    assert {q.extensions["timeout"]["read"] for q in wire.seen} == {7}
    assert {q.extensions["timeout"]["connect"] for q in wire.seen} == {3}


def test_cookies_a_registry_sets_are_neither_kept_nor_sent():
    """As skopeo's client: no cookie jar (a cookie set by one host never reaches another either)."""
    def reg(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{}", headers={"Set-Cookie": "session=abc; Path=/"})

    wire = Wire({"reg.example": reg})
    r = registry(wire, creds=False)
    r.request("GET", "x/y", "/v2/x/y/tags/list")
    r.request("GET", "x/y", "/v2/x/y/tags/list")
    assert len(wire.seen) >= 3 and all("cookie" not in q.headers for q in wire.seen)


# -- tag lists: bounded as a whole, no page read twice, only tag names ---------------------------

def endless_tags(tags_of: Callable[[int], list[str]], give_up: int,
                 link: Callable[[int], str] = lambda page: f"/v2/x/y/tags/list?n=1000&page={page + 1}"
                 ) -> tuple[Wire, list[int]]:
    """A registry whose tag list goes on: page i holds tags_of(i) and links to link(i), until
    `give_up` pages (far past where a client should have stopped)."""
    pages: list[int] = []

    def reg(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200, content=b"{}")
        page = int(req.url.params.get("page", "0"))
        pages.append(page)
        headers = {"Link": f'<{link(page)}>; rel="next"'} if len(pages) < give_up else {}
        return httpx.Response(200, json={"name": "x/y", "tags": tags_of(page)}, headers=headers)

    return Wire({"reg.example": reg}), pages


def test_a_tag_list_that_never_ends_stops_at_100000_tags():
    from registry_tools.registry.repository import all_tags

    wire, pages = endless_tags(lambda page: [f"t{page}-{i}" for i in range(1000)], give_up=150)
    with pytest.raises(RegistryError, match="goes past 100,000 tags"):
        all_tags(registry(wire, creds=False), "x/y")
    assert len(pages) == 101


def test_a_tag_list_that_never_ends_stops_at_32_mib_with_memory_bounded():
    """Each page is one body's worth (under the 4 MiB bound) of names that are not tags: before,
    every one was kept (1.2 GB after 108 pages)."""
    import tracemalloc

    from registry_tools.registry.repository import all_tags

    huge = "x" * (3 << 20)
    wire, pages = endless_tags(lambda page: [f"v{page}", huge + str(page)], give_up=40)
    tracemalloc.start()
    try:
        with pytest.raises(RegistryError, match="goes past 32 MiB"):
            all_tags(registry(wire, creds=False), "x/y")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pages) <= 11 and peak < 64 << 20, (len(pages), peak)


@pytest.mark.parametrize("cycle", [1, 3])
def test_a_tag_list_whose_pages_go_round_in_a_circle_is_refused_at_the_first_repeat(cycle):
    """A page linking to itself (cycle 1) was followed 10,000 times; a page already read is never
    asked for again."""
    from registry_tools.registry.repository import all_tags

    def link(page: int) -> str:
        after = (page + 1) % cycle
        return "/v2/x/y/tags/list?n=1000" + (f"&page={after}" if after else "")

    wire, pages = endless_tags(lambda page: [f"t{page}"], give_up=50, link=link)
    with pytest.raises(RegistryError, match="next page is one already read"):
        all_tags(registry(wire, creds=False), "x/y", page_size=1000)
    assert pages == list(range(cycle))


HOSTILE_TAGS = ["v1", "evil\x1b[2J\x1b]0;owned\x07", "forged\nregistry-tools: all good", "a" * 129, "-dash",
                "v1\n", "", 42, None, "v2.0_rc-1"]


def test_tag_names_from_the_registry_are_tags_or_left_out(httpserver, cache_dir, capsys, caplog):
    """Only the distribution spec's tag grammar reaches stdout (text and --json); the rest is
    left out with one warning line, escaped."""
    import logging

    from .helpers import run

    httpserver.expect_request("/v2/").respond_with_data("{}")
    httpserver.expect_request("/v2/x/y/tags/list").respond_with_json({"name": "x/y", "tags": HOSTILE_TAGS})
    host = f"127.0.0.1:{httpserver.port}"
    with caplog.at_level(logging.WARNING, logger="registry_tools.repository"):
        code, out, err = run(capsys, "tags", f"{host}/x/y")
    assert code == 0 and out == "v1\nv2.0_rc-1\n", (out, err)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "registry_tools.repository"]
    assert "left out 8" in warning and "\n" not in warning and "\x1b" not in warning and "\x07" not in warning
    code, out, _ = run(capsys, "tags", f"{host}/x/y", "--json")
    assert code == 0 and json.loads(out) == ["v1", "v2.0_rc-1"]


# -- a Docker-Content-Digest that is no digest: the registry's failure (exit 1), not bad usage (2) --------

HOSTILE_DIGESTS = ["sha256:evil", "md5:0123", "sha256:" + "A" * 64, "\x1b[2Jsha256:" + "a" * 64, "x" * 5000]


def manifest_host(dcd: str) -> Wire:
    """A registry that has every manifest asked for and names it by `dcd`."""
    def reg(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v2/":
            return httpx.Response(200, content=b"{}")
        return httpx.Response(201 if req.method == "PUT" else 200, headers={"Docker-Content-Digest": dcd})
    return Wire({"reg.example": reg})


@pytest.mark.parametrize("dcd", HOSTILE_DIGESTS, ids=range(len(HOSTILE_DIGESTS)))
def test_a_hostile_docker_content_digest_is_a_failure_to_act_on(dcd):
    from registry_tools.errors import VerificationError

    r = registry(manifest_host(dcd), creds=False)
    for ask in (lambda: r.manifest_digest("x/y", "v1"),  # the one a push, copy, sync or tag acts on
                lambda: r.put_manifest("x/y", "v1", b"{}", "application/vnd.oci.image.manifest.v1+json")):
        with pytest.raises(VerificationError) as caught:
            ask()
        message = str(caught.value)
        assert caught.value.exit_code == 1 and "Docker-Content-Digest" in message and "x/y" in message
        assert "\x1b" not in message and "\n" not in message and len(message) < 400


@pytest.mark.parametrize("dcd", HOSTILE_DIGESTS, ids=range(len(HOSTILE_DIGESTS)))
def test_a_hostile_docker_content_digest_in_a_tag_head_claims_nothing(dcd):
    """A tag's HEAD is a hint only (the GET's bytes decide): a header that is no digest claims nothing."""
    r = registry(manifest_host(dcd), creds=False)
    assert r.head_manifest("x/y", "v1")[0] is None


def test_a_hostile_docker_content_digest_exits_1_in_one_escaped_line(httpserver, cache_dir, capsys):
    """`tag` acts on what the registry says the tag names: a header that is no digest stops it, exit 1."""
    from .helpers import run

    httpserver.expect_request("/v2/").respond_with_data("{}")
    httpserver.expect_request("/v2/x/y/manifests/v2", method="HEAD").respond_with_data(
        "", headers={"Docker-Content-Digest": "sha256:evil\x1b[2J"})
    code, out, err = run(capsys, "tag", f"127.0.0.1:{httpserver.port}/x/y@sha256:{'a' * 64}", "v2")
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and len(lines) == 1, err
    assert "Docker-Content-Digest" in lines[0] and "\\x1b[2J" in lines[0] and "\x1b" not in err
