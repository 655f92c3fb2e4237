"""An SPDX 2.3 SBOM of a build, derived from what the image holds: one package per store path
of the closure (its name and version as Nix splits them, its NAR hash where the graph gives
it, what it depends on as the graph says), one per plain `paths` entry, and the image.

Written deterministically: entries sorted, the time the spec's `created`, the namespace a
hash of the content, nothing of the machine (no host paths, users or clock).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from registry_tools import __version__
from registry_tools.builder.closure import Graph, parse_graph
from registry_tools.builder.spec import BuildSpec

SPDX_MEDIA_TYPE = "application/spdx+json"
_VERSION_START = re.compile(r"-(?=\d)")


def split_name(name: str) -> tuple[str, str]:
    """Nix's parseDrvName: the version starts at the first dash followed by a digit."""
    m = _VERSION_START.search(name)
    return (name[:m.start()], name[m.end():]) if m else (name, "")


def _id_part(text: str) -> str:
    """`text` in SPDX's ID alphabet ([A-Za-z0-9.-]), one to one: letters, digits and `-` as they
    are, `.` doubled, any other byte (of its UTF-8) as `.` and two hex digits. Distinct texts give
    distinct IDs, so no two packages can share one."""
    out = []
    for byte in text.encode("utf-8", "surrogatepass"):
        c = chr(byte)
        out.append(c if c.isascii() and (c.isalnum() or c == "-") else ".." if c == "." else f".{byte:02x}")
    return "".join(out)


def _uri_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _graph(spec: BuildSpec) -> Graph:
    if spec.closure is None:
        return Graph()
    return parse_graph(spec.closure.graph.read_text(encoding="utf-8"), str(spec.closure.graph))


def spdx_document(spec: BuildSpec, tag: str) -> bytes:
    graph = _graph(spec)
    image_id = "SPDXRef-Image"
    packages: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = []
    ids: dict[str, str] = {}
    store = spec.closure.store_dir if spec.closure else "/nix/store"
    for path in graph.paths:
        in_store = path.startswith(store + "/")
        base = path[len(store) + 1:] if in_store else path.rsplit("/", 1)[-1]
        _, _, name = base.partition("-")
        pname, version = split_name(name or base)
        # from the whole path (its name in the store, else all of it), so two paths never share an ID
        ids[path] = f"SPDXRef-StorePath-{_id_part(base)}" if in_store else f"SPDXRef-GraphPath-{_id_part(path)}"
        pkg: dict[str, Any] = {"SPDXID": ids[path], "name": pname or base, "downloadLocation": "NOASSERTION",
                               "filesAnalyzed": False, "comment": f"Nix store path {path}"}
        if version:
            pkg["versionInfo"] = version
        if path in graph.nar_hashes:
            pkg["checksums"] = [{"algorithm": "SHA256", "checksumValue": graph.nar_hashes[path].hex()}]
            pkg["comment"] += " (checksum: the sha256 of its NAR serialisation)"
        packages.append(pkg)
    for i, p in enumerate(sorted(spec.paths, key=lambda p: p.target), 1):
        packages.append({"SPDXID": f"SPDXRef-Path-{i}", "name": p.target, "downloadLocation": "NOASSERTION",
                         "filesAnalyzed": False, "comment": f"the file tree at {p.target} in the image"})
    for pkg in packages:
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": pkg["SPDXID"]})
    for path in graph.paths:
        for ref in graph.refs[path]:
            relationships.append({"spdxElementId": ids[path], "relationshipType": "DEPENDS_ON",
                                  "relatedSpdxElement": ids[ref]})
    image = {"SPDXID": image_id, "name": spec.name, "versionInfo": tag, "downloadLocation": "NOASSERTION",
             "filesAnalyzed": False, "primaryPackagePurpose": "CONTAINER",
             "comment": f"the image {spec.name}:{tag} ({spec.platform})"}
    body = {"packages": [image, *packages],
            "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                               "relatedSpdxElement": image_id}, *relationships]}
    content = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    doc = {"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
           "name": f"{spec.name}:{tag}",
           "documentNamespace": f"https://spdx.org/spdxdocs/registry-tools/{_uri_part(spec.name)}-{content}",
           "creationInfo": {"created": spec.created.split(".")[0].rstrip("Z") + "Z",
                            "creators": [f"Tool: registry-tools-{__version__}"]},
           **body}
    return json.dumps(doc, indent=2, sort_keys=False).encode() + b"\n"
