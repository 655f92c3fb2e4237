"""A scripted registry on pytest-httpserver serving an image layout, for faults a real one won't make."""
from __future__ import annotations

import json
import re
import time

from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request

from werkzeug.wrappers import Response

from . import imagegen


def serve_layout(httpserver, lay: imagegen.Layout, slow: set[str] = frozenset(), delay: float = 0.0,
                 skip: set[str] = frozenset()) -> None:
    """Serve `lay` at /v2/x/y; blobs in `slow` trickle, blobs in `skip` are left to the caller."""
    httpserver.expect_request("/v2/").respond_with_data("{}", content_type="application/json")
    for digest, data in lay.blobs.items():
        if digest in skip:
            continue
        obj = None
        try:
            obj = json.loads(data)
        except ValueError:
            pass
        if isinstance(obj, dict) and "schemaVersion" in obj:
            httpserver.expect_request(f"/v2/x/y/manifests/{digest}").respond_with_data(
                data, content_type=obj["mediaType"], headers={"Docker-Content-Digest": digest})
        if digest in slow:
            def trickle(request, data=data):
                def gen():
                    for i in range(0, len(data), 4096):
                        time.sleep(delay)
                        yield data[i:i + 4096]
                return Response(gen(), headers={"Content-Length": str(len(data))},
                                content_type="application/octet-stream")
            httpserver.expect_request(f"/v2/x/y/blobs/{digest}").respond_with_handler(trickle)
        else:
            httpserver.expect_request(f"/v2/x/y/blobs/{digest}").respond_with_data(data)


TOKEN = "fake-bearer-token-8c1d"


class FakeRegistry:
    """Serves one image at /v2/x/y; `faults[path]` lists what to do to the next requests of that path."""

    def __init__(self, server: HTTPServer, bearer: bool = False, realm: str | None = None,
                 layers: list[tuple[imagegen.Blob, str]] | None = None, lay: imagegen.Layout | None = None):
        self.server = server
        self.lay = lay or imagegen.Layout()
        if layers is None:
            big, big_diff = self.lay.layer({"data.bin": bytes(range(256)) * 2048}, "gzip")  # ~512 KiB of tar
            small, small_diff = self.lay.layer({"etc/hello": b"hello\n"}, "none")
            layers = [(big, big_diff), (small, small_diff)]
        self.image = self.lay.image(layers)
        self.big = layers[0][0]
        self.faults: dict[str, list[str]] = {}
        self.seen: list[tuple[str, str, dict]] = []
        self.bearer = bearer
        self.realm = realm or f"http://{server.host}:{server.port}/token"
        server.expect_request(re.compile(r"^/(v2/.*|token)$")).respond_with_handler(self.handle)

    @property
    def ref(self) -> str:
        return f"{self.server.host}:{self.server.port}/x/y@{self.image.digest}"

    def blob_path(self, blob) -> str:
        return f"/v2/x/y/blobs/{blob.digest}"

    def handle(self, request: Request) -> Response:
        path = request.path
        self.seen.append((request.method, path, dict(request.headers)))
        if path == "/token":
            return Response(json.dumps({"token": TOKEN, "expires_in": 300}), content_type="application/json")
        if self.bearer and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{self.realm}",service="fake"'})
        fault = self.faults.get(path, []).pop(0) if self.faults.get(path) else "ok"
        if fault == "500":
            return Response("boom", status=500)
        if fault in ("503", "408", "502"):
            return Response("busy", status=int(fault))
        if fault == "429":
            return Response("slow down", status=429, headers={"Retry-After": "1"})
        if fault == "stall":
            time.sleep(3)
        if path == "/v2/":
            return Response("{}", content_type="application/json")
        digest = path.rsplit("/", 1)[-1]
        data = original = self.lay.blobs.get(digest)
        if data is None:
            return Response(json.dumps({"errors": [{"code": "BLOB_UNKNOWN"}]}), status=404)
        if fault == "redirect":
            return Response(status=307, headers={"Location": self.foreign_url + path})
        if fault == "wrong-bytes":
            data = bytes(b ^ 0x55 for b in data)
        if fault == "truncate":
            data = data[: len(data) // 2]
        if "/manifests/" in path:
            return Response(data, content_type=json.loads(original)["mediaType"])
        start = 0
        rng = request.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = data[start:]
        headers = {"Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
        status = 200
        if rng:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if fault == "reset":
            def cut():
                yield body[: len(body) // 2]
                raise ConnectionResetError("cut by the test")
            return Response(cut(), status=status, headers=headers, content_type="application/octet-stream")
        return Response(body, status=status, headers=headers, content_type="application/octet-stream")
