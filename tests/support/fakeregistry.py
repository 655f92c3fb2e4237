"""A scripted registry on pytest-httpserver serving an image layout, for faults a real one won't make."""
from __future__ import annotations

import json
import time

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
