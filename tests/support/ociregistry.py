"""A small in-memory OCI 1.1 registry on pytest-httpserver: the distribution API plus the
referrers API (`GET /v2/<name>/referrers/<digest>`, `OCI-Subject` on PUT), which
distribution 2.8 lacks. Enough of the protocol for registry-tools and oras-py to push and
pull through it; every request is recorded in `log`."""
from __future__ import annotations

import hashlib
import json
import re
import uuid

from werkzeug.wrappers import Request, Response

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


class OciRegistry:
    def __init__(self, server, referrers_api: bool = True):
        self.server = server
        self.referrers_api = referrers_api
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, digest or tag) -> (raw, type)
        self.uploads: dict[str, bytearray] = {}
        self.log: list[tuple[str, str]] = []
        self.referrers_override: dict[str, bytes] = {}  # subject digest -> body served as its referrers
        self.page_size = 0  # >0: the referrers list in pages of this many, linked by Link rel="next"
        server.expect_request(re.compile(r"^/v2/.*")).respond_with_handler(self.handle)

    @property
    def host(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        self.log.append((method, request.full_path.rstrip("?")))
        if path == "/v2/":
            return Response("{}", content_type="application/json")
        m = re.match(r"^/v2/(.+)/(manifests|blobs|referrers)/(.+)$", path)
        if not m:
            return Response(status=404)
        repo, kind, ref = m.groups()
        if kind == "referrers":
            return self._referrers(repo, ref, request)
        if kind == "manifests":
            return self._manifest(repo, ref, request)
        return self._blob(repo, ref, request)

    def _manifest(self, repo: str, ref: str, request: Request) -> Response:
        if request.method == "PUT":
            raw = request.get_data()
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            ctype = request.headers.get("Content-Type", "")
            self.manifests[(repo, digest)] = (raw, ctype)
            self.manifests[(repo, ref)] = (raw, ctype)
            headers = {"Docker-Content-Digest": digest, "Location": f"/v2/{repo}/manifests/{digest}"}
            if self.referrers_api and json.loads(raw).get("subject"):
                headers["OCI-Subject"] = json.loads(raw)["subject"]["digest"]
            return Response(status=201, headers=headers)
        found = self.manifests.get((repo, ref))
        if found is None:
            return Response(json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}),
                            status=404, content_type="application/json")
        raw, ctype = found
        headers = {"Docker-Content-Digest": "sha256:" + hashlib.sha256(raw).hexdigest(),
                   "Content-Length": str(len(raw))}
        if request.method == "HEAD":
            return Response(status=200, headers=headers, content_type=ctype)
        return Response(raw, headers=headers, content_type=ctype)

    def _blob(self, repo: str, ref: str, request: Request) -> Response:
        if ref.startswith("uploads"):
            rest = ref[len("uploads"):].strip("/")
            if request.method == "POST":
                mount = request.args.get("mount")
                if mount and mount in self.blobs:
                    return Response(status=201, headers={"Docker-Content-Digest": mount})
                if request.args.get("digest"):  # monolithic POST
                    return self._commit(repo, request.args["digest"], bytearray(request.get_data()))
                uid = uuid.uuid4().hex
                self.uploads[uid] = bytearray()
                return Response(status=202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}",
                                                     "Range": "0-0"})
            buf = self.uploads.get(rest)
            if buf is None:
                return Response(status=404)
            buf += request.get_data()
            if request.method == "PATCH":
                return Response(status=202, headers={"Location": f"/v2/{repo}/blobs/uploads/{rest}",
                                                     "Range": f"0-{len(buf) - 1}"})
            del self.uploads[rest]
            return self._commit(repo, request.args["digest"], buf)
        data = self.blobs.get(ref)
        if data is None:
            return Response(status=404)
        headers = {"Docker-Content-Digest": ref, "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return Response(status=200, headers=headers)
        return Response(bytes(data), headers=headers, content_type="application/octet-stream")

    def _commit(self, repo: str, digest: str, data: bytearray) -> Response:
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return Response(json.dumps({"errors": [{"code": "DIGEST_INVALID"}]}), status=400)
        self.blobs[digest] = bytes(data)
        return Response(status=201, headers={"Docker-Content-Digest": digest,
                                             "Location": f"/v2/{repo}/blobs/{digest}"})

    def _referrers(self, repo: str, subject: str, request: Request) -> Response:
        if not self.referrers_api:
            return Response(status=404)
        if subject in self.referrers_override:
            return Response(self.referrers_override[subject], content_type=OCI_INDEX)
        wanted = request.args.get("artifactType")
        entries = []
        for (r, ref), (raw, ctype) in sorted(self.manifests.items()):
            if r != repo or not ref.startswith("sha256:"):
                continue
            doc = json.loads(raw)
            if (doc.get("subject") or {}).get("digest") != subject:
                continue
            art = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
            if wanted and art != wanted:
                continue
            entry = {"mediaType": doc.get("mediaType", ctype), "digest": ref, "size": len(raw)}
            if art:
                entry["artifactType"] = art
            if doc.get("annotations"):
                entry["annotations"] = doc["annotations"]
            entries.append(entry)
        headers = {"OCI-Filters-Applied": "artifactType"} if wanted else {}
        if self.page_size:
            start = int(request.args.get("page", "0"))
            if start + self.page_size < len(entries):
                headers["Link"] = f'</v2/{repo}/referrers/{subject}?page={start + self.page_size}>; rel="next"'
            entries = entries[start:start + self.page_size]
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        return Response(body, content_type=OCI_INDEX, headers=headers)
