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
        self.links: set[tuple[str, str]] = set()  # (repository, digest): the blobs each repository holds
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}  # (repo, digest or tag) -> (raw, type)
        self.uploads: dict[str, bytearray] = {}
        self.log: list[tuple[str, str]] = []
        self.referrers_override: dict[str, bytes] = {}  # subject digest -> body served as its referrers
        self.page_size = 0  # >0: the referrers list in pages of this many, linked by Link rel="next"
        self.quirks: set[str] = set()  # registry behaviours to reproduce (see tests/test_quirks.py)
        self.challenge: str | None = None  # a WWW-Authenticate value: requests need "Bearer <token>"
        self.token = "quirk-token"
        self.seen: list[tuple[str, str, dict]] = []  # method, path with query, headers
        self.budget_429 = 0  # answer this many manifest GETs with 429 first
        self.retry_after: str | None = None
        self.part_limit = 6 << 20  # ecr-parts: the largest single PATCH taken whole
        self.parts: dict[str, list[int]] = {}  # ecr-parts: the PATCH sizes of each upload
        server.expect_request(re.compile(r"^/v2/.*")).respond_with_handler(self.handle)

    @property
    def host(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        self.log.append((method, request.full_path.rstrip("?")))
        self.seen.append((method, request.full_path.rstrip("?"), dict(request.headers)))
        if self.challenge and request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response(json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}),
                            status=401, headers={"WWW-Authenticate": self.challenge},
                            content_type="application/json")
        if path == "/v2/":
            return Response("{}", content_type="application/json")
        t = re.match(r"^/v2/(.+)/tags/list$", path)
        if t:
            tags = sorted(ref for (r, ref) in self.manifests if r == t.group(1) and not ref.startswith("sha256:"))
            if not tags:
                return Response(json.dumps({"errors": [{"code": "NAME_UNKNOWN", "message": "unknown"}]}), status=404,
                                content_type="application/json")
            return Response(json.dumps({"name": t.group(1), "tags": tags}), content_type="application/json")
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
        if request.method == "GET" and self.budget_429 > 0:
            self.budget_429 -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return Response(json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}),
                            status=429, headers=headers, content_type="application/json")
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
            if request.method == "HEAD" and "artifactory-head-403" in self.quirks:
                return Response(status=403)
            return Response(json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}),
                            status=404, content_type="application/json")
        raw, ctype = found
        headers = {"Docker-Content-Digest": "sha256:" + hashlib.sha256(raw).hexdigest(),
                   "Content-Length": str(len(raw))}
        if "no-digest-header" in self.quirks:
            del headers["Docker-Content-Digest"]
        if "wrong-digest-header" in self.quirks and not ref.startswith("sha256:"):
            others = sorted(d for (r, d) in self.manifests if r == repo and d.startswith("sha256:")
                            and d != headers["Docker-Content-Digest"])
            if others:
                headers["Docker-Content-Digest"] = others[0]
        if request.method == "HEAD":
            return Response(status=200, headers=headers, content_type=ctype)
        return Response(raw, headers=headers, content_type=ctype)

    def _blob(self, repo: str, ref: str, request: Request) -> Response:
        if ref.startswith("uploads"):
            rest = ref[len("uploads"):].strip("/")
            if request.method == "POST":
                mount = request.args.get("mount")
                if mount and not request.args.get("from") and "quay-mount-needs-from" in self.quirks:
                    return Response(json.dumps({"errors": [{"code": "BAD_REQUEST"}]}), status=400)
                if mount and "harbor-mount-401" in self.quirks:
                    return Response(json.dumps({"errors": [{"code": "UNAUTHORIZED",
                                                            "message": "project not found"}]}), status=401)
                source = request.args.get("from")
                if mount and (source, mount) in self.links and "ecr-no-mount" not in self.quirks:
                    self.links.add((repo, mount))
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
            if request.method == "DELETE":
                del self.uploads[rest]
                return Response(status=204)
            if request.method == "PUT" and "fail-commit" in self.quirks:
                return Response(json.dumps({"errors": [{"code": "UNKNOWN", "message": "storage down"}]}),
                                status=500)
            body = request.get_data()
            if request.method == "PATCH" and "ecr-parts" in self.quirks:
                if not request.headers.get("Content-Range") and len(body) > self.part_limit:
                    return Response(status=413)  # too large for one part: send it in parts
                self.parts.setdefault(rest, []).append(len(body))
            buf += body
            if request.method == "PATCH":
                return Response(status=202, headers={"Location": f"/v2/{repo}/blobs/uploads/{rest}",
                                                     "Range": f"0-{len(buf) - 1}"})
            del self.uploads[rest]
            parts = self.parts.get(rest, [])
            if "ecr-parts" in self.quirks and any(n < 5 << 20 for n in parts[:-1]):
                return Response(json.dumps({"errors": [{"code": "LAYER_PART_TOO_SMALL", "message":
                                "All layer parts except the last part should be at least 5MB"}]}), status=400)
            return self._commit(repo, request.args["digest"], buf)
        data = self.blobs.get(ref) if (repo, ref) in self.links else None
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
        self.links.add((repo, digest))
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
