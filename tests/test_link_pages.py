"""Lists a registry splits into pages (`Link: <…>; rel="next"`), through the command line: the
tag list and the referrers API. Every page is read while the links stay on the registry's own
origin, with its credentials; a link to another origin (another host, port or scheme) is
refused with one line, and nothing is sent there.

A second guard beside tests/test_copy.py's (which calls list_tags directly), through `tags`
and `referrers` on a scripted registry that wants Basic credentials.
"""
from __future__ import annotations

import base64
import hashlib
import json

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from .helpers import run
from .support.servers import own_server

USER, PASSWORD = "pager", "pa55-w0rd"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
         "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class PagedRegistry:
    """/v2/app/img: tags and referrers in pages; `links[i]` is the Link target after page i (a
    path, a full URL, or None for the last page). Requests without the credentials get a 401."""

    def __init__(self, server: HTTPServer, pages: list[list[str]]):
        self.server = server
        self.pages = pages
        self.links: list[str | None] = [self.page_path(i + 1) for i in range(len(pages) - 1)] + [None]
        self.seen: list[tuple[str, str, str | None]] = []  # method, path with query, Authorization
        self.subject = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": EMPTY,
                                   "layers": []}).encode()
        self.subject_digest = sha(self.subject)
        self.manifests = {self.subject_digest: self.subject}
        self.referrers: list[dict] = []
        server.expect_request("/v2/").respond_with_handler(self.handle)
        server.expect_request("/v2/app/img/tags/list").respond_with_handler(self.handle)
        server.expect_request(f"/v2/app/img/referrers/{self.subject_digest}").respond_with_handler(self.handle)

    @property
    def host(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def page_path(self, i: int) -> str:
        return f"/v2/app/img/tags/list?n=2&page={i}"

    def add_referrers(self, artifact_types: list[str]) -> list[str]:
        """Referrer manifests of the subject, one per artifact type; their digests, in page order."""
        digests = []
        for i, art in enumerate(artifact_types):
            raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": art, "config": EMPTY,
                              "layers": [], "annotations": {"n": str(i)},
                              "subject": {"mediaType": OCI_MANIFEST, "digest": self.subject_digest,
                                          "size": len(self.subject)}}).encode()
            digest = sha(raw)
            self.manifests[digest] = raw
            self.referrers.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw),
                                   "artifactType": art, "annotations": {"n": str(i)}})
            digests.append(digest)
        for digest in self.manifests:
            self.server.expect_request(f"/v2/app/img/manifests/{digest}").respond_with_handler(self.handle)
        return digests

    def handle(self, request: Request) -> Response:
        self.seen.append((request.method, request.full_path.rstrip("?"), request.headers.get("Authorization")))
        if request.headers.get("Authorization") != BASIC:
            return Response(json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "log in"}]}), status=401,
                            headers={"WWW-Authenticate": 'Basic realm="paged"'}, content_type="application/json")
        if request.path == "/v2/":
            return Response("{}", content_type="application/json")
        if "/manifests/" in request.path:
            raw = self.manifests[request.path.rsplit("/", 1)[1]]
            return Response(raw if request.method == "GET" else b"", content_type=OCI_MANIFEST,
                            headers={"Docker-Content-Digest": sha(raw), "Content-Length": str(len(raw))})
        page = int(request.args.get("page", "0"))
        link = self.links[page]
        headers = {"Link": f'<{link}>; rel="next"'} if link else {}
        if "/referrers/" in request.path:
            per = -(-len(self.referrers) // len(self.pages))
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                               "manifests": self.referrers[page * per:(page + 1) * per]})
            return Response(body, headers=headers, content_type=OCI_INDEX)
        return Response(json.dumps({"name": "app/img", "tags": self.pages[page]}), headers=headers,
                        content_type="application/json")

    def list_requests(self, kind: str) -> list[str]:
        return [p for m, p, _ in self.seen if f"/{kind}" in p]


@pytest.fixture
def foreign():
    """Another origin: another port (and, by its address, another host name than the registry's)."""
    with own_server("127.0.0.1") as server:
        server.expect_request("/", method="GET").respond_with_data("{}")
        yield server


PAGES = [["a", "b"], ["c", "d"], ["e", "f"], ["g"]]


def test_tags_through_the_cli_follow_every_page_on_the_registrys_origin_with_its_credentials(httpserver, cache_dir,
                                                                                            capsys):
    reg = PagedRegistry(httpserver, PAGES)
    base = f"http://{reg.host}"
    # a path, a full URL of the same origin, a path relative to the page
    reg.links = [reg.page_path(1), base + reg.page_path(2), "list?n=2&page=3", None]
    code, out, err = run(capsys, "tags", f"{reg.host}/app/img", "--creds", f"{USER}:{PASSWORD}", "--json")
    assert code == 0, err
    assert json.loads(out) == ["a", "b", "c", "d", "e", "f", "g"]
    pages = [(p, auth) for m, p, auth in reg.seen if "/tags/list" in p and auth == BASIC]
    assert [p.partition("page=")[2] for p, _ in pages] == ["", "1", "2", "3"]


def other_name(host: str) -> str:
    """Another name of the same address: the same server, another origin."""
    return "127.0.0.1" if host == "localhost" else "localhost"


FOREIGN_LINKS = {
    "another port": lambda reg, foreign: f"http://{reg.server.host}:{foreign.port}/v2/app/img/tags/list?page=2",
    "another host name": lambda reg, foreign: f"http://{other_name(reg.server.host)}:{reg.server.port}"
                                              "/v2/app/img/tags/list?page=2",
    "https": lambda reg, foreign: f"https://{reg.host}/v2/app/img/tags/list?page=2",
    "protocol-relative": lambda reg, foreign: f"//{foreign.host}:{foreign.port}/v2/app/img/tags/list?page=2",
}


@pytest.mark.parametrize("where", sorted(FOREIGN_LINKS))
def test_tags_through_the_cli_refuse_a_next_page_on_another_origin(httpserver, foreign, cache_dir, capsys, where):
    reg = PagedRegistry(httpserver, PAGES)
    reg.links[1] = FOREIGN_LINKS[where](reg, foreign)
    code, out, err = run(capsys, "tags", f"{reg.host}/app/img", "--creds", f"{USER}:{PASSWORD}")
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert len(lines) == 1 and "another host" in lines[0] and "refused" in lines[0], err
    assert [p.partition("page=")[2] for p in reg.list_requests("tags")] == ["", "1"]  # nothing past the link
    assert foreign.log == []  # nothing sent to the other origin, credentials least of all


def test_referrers_through_the_cli_follow_every_page(httpserver, cache_dir, capsys):
    """The referrers API in four pages: every entry listed, in the registry's order."""
    reg = PagedRegistry(httpserver, PAGES)
    types = ["application/spdx+json", "application/vnd.example.report", "application/spdx+json",
             "application/vnd.dev.cosign.artifact.sig.v1+json", "application/spdx+json",
             "application/vnd.example.report", "application/spdx+json"]
    digests = reg.add_referrers(types)
    path = f"/v2/app/img/referrers/{reg.subject_digest}"
    reg.links = [f"{path}?page=1", f"http://{reg.host}{path}?page=2", f"./{reg.subject_digest}?page=3", None]
    ref = f"{reg.host}/app/img@{reg.subject_digest}"
    code, out, err = run(capsys, "referrers", ref, "--creds", f"{USER}:{PASSWORD}", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["via"] == "api" and listed["subject"] == reg.subject_digest
    assert [d["digest"] for d in listed["referrers"]] == digests
    assert [p.partition("page=")[2] for p in reg.list_requests("referrers")] == ["", "1", "2", "3"]
    assert all(auth == BASIC for m, p, auth in reg.seen if "/referrers/" in p and "page=" in p)
    # a registry that ignores the filter: it is applied to every page here
    code, out, err = run(capsys, "referrers", ref, "--creds", f"{USER}:{PASSWORD}", "--artifact-type",
                         "application/spdx+json", "--json")
    assert code == 0, err
    spdx = [d for d, t in zip(digests, types, strict=True) if t == "application/spdx+json"]
    assert [d["digest"] for d in json.loads(out)["referrers"]] == spdx


@pytest.mark.parametrize("where", sorted(FOREIGN_LINKS))
def test_referrers_through_the_cli_refuse_a_next_page_on_another_origin(httpserver, foreign, cache_dir, capsys,
                                                                       where):
    reg = PagedRegistry(httpserver, PAGES)
    reg.add_referrers(["application/spdx+json"] * 7)
    path = f"/v2/app/img/referrers/{reg.subject_digest}"
    reg.links[0] = f"{path}?page=1"
    reg.links[1] = FOREIGN_LINKS[where](reg, foreign).replace("/v2/app/img/tags/list", path)
    code, out, err = run(capsys, "referrers", f"{reg.host}/app/img@{reg.subject_digest}", "--creds",
                         f"{USER}:{PASSWORD}")
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert len(lines) == 1 and "another host" in lines[0] and "refused" in lines[0], err
    assert [p.partition("page=")[2] for p in reg.list_requests("referrers")] == ["", "1"]
    assert foreign.log == []


def test_a_next_page_on_the_same_origin_but_another_list_is_refused(httpserver, cache_dir, capsys):
    """The origin is not all: a referrers page may only link to referrers, a tag page to tags."""
    reg = PagedRegistry(httpserver, PAGES)
    reg.add_referrers(["application/spdx+json"] * 4)
    reg.links[0] = "/v2/app/img/tags/list?page=1"
    code, _, err = run(capsys, "referrers", f"{reg.host}/app/img@{reg.subject_digest}", "--creds",
                       f"{USER}:{PASSWORD}")
    assert code == 1 and "not a referrers list" in err and len(err.strip().splitlines()) == 1
    reg.links[0] = f"/v2/app/img/manifests/{reg.subject_digest}?page=1"
    code, _, err = run(capsys, "tags", f"{reg.host}/app/img", "--creds", f"{USER}:{PASSWORD}")
    assert code == 1 and "not a tag list" in err and len(err.strip().splitlines()) == 1
