"""inspect and digest: what a reference points to, without pulling any layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry_tools.model import manifest as mf
from registry_tools.model import reference as refs
from registry_tools.model.digest import Digest
from registry_tools.model.platform import Platform, choose_in_index, format_platform, offered_platforms
from registry_tools.session import Session


@dataclass(frozen=True)
class Resolved:
    ref: refs.Reference
    digest: Digest  # what the tag (or digest) names: an index for a multi-platform image
    raw: bytes  # those manifest bytes, verified against `digest`
    doc: mf.ImageManifest | mf.Index


def resolve(image: str, session: Session) -> Resolved:
    ref = refs.parse_docker_ref(image)
    source = session.source(ref)
    digest = Digest.parse(ref.digest) if ref.digest else source.resolve_tag(ref.tag)
    raw, ctype = source.manifest_bytes(digest)
    return Resolved(ref, digest, raw, mf.parse(raw, ctype, f"manifest {ref.name}@{digest}"))


def platform_digest(r: Resolved, wanted: Platform | None) -> Digest:
    """The digest itself, or (for an index, when a platform is asked for) the chosen entry's."""
    if wanted is None or not isinstance(r.doc, mf.Index):
        return r.digest
    return r.doc.manifests[choose_in_index(r.doc.choice_view(), wanted)].digest


def summary(r: Resolved, session: Session, wanted: Platform | None) -> dict[str, Any]:
    """What a reference names, as skopeo inspect tells it (camelCase keys, as every document of
    ours): name, digest and media type; an index's platforms; one image's platform, creation
    time, layers, size and run config (an index's, when a platform is asked for)."""
    out: dict[str, Any] = {"name": r.ref.name, "digest": str(r.digest), "mediaType": r.doc.media_type}
    if r.ref.tag:
        out["tag"] = r.ref.tag
    doc, digest = r.doc, r.digest
    if isinstance(doc, mf.Index):
        out["platforms"] = offered_platforms([d.raw for d in doc.manifests])
        if wanted is None:
            return out
        chosen = doc.manifests[choose_in_index(doc.choice_view(), wanted)]
        raw, ctype = session.source(r.ref).manifest_bytes(chosen.digest, chosen.size)
        doc, digest = mf.parse(raw, ctype), chosen.digest
        out["manifestDigest"] = str(digest)
    assert isinstance(doc, mf.ImageManifest)
    source = session.source(r.ref)
    config = mf.parse_config(source.blob_bytes(doc.config, f"config of {r.ref.name}@{digest}"))
    plat = Platform(str(config.get("os") or ""), str(config.get("architecture") or ""),
                    str(config.get("variant") or ""))
    cfg = config.get("config") or {}
    out.update({
        "platform": format_platform(plat),
        "created": config.get("created"),
        "layers": [str(layer.digest) for layer in doc.layers],
        "size": sum(layer.size for layer in doc.layers),
        "env": cfg.get("Env"), "entrypoint": cfg.get("Entrypoint"), "cmd": cfg.get("Cmd"),
        "labels": cfg.get("Labels"),
    })
    return out
