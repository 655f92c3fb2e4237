"""Blobs other than announced, and the sources that hold them: a scripted registry, an OCI
layout, an oci-archive, a docker-archive and the cache, each given bytes too many, too few
or wrong."""
from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

from . import imagegen
from .fakeregistry import serve_layout

FAR = 3 << 20  # more than the transport's slack past a blob's size (registry/blob.py SLACK)
HOW = ("long", "far", "short", "wrong")  # a byte too many, megabytes too many, bytes too few, one byte changed


def damaged(data: bytes, how: str) -> bytes:
    """`data` with bytes too many, too few, or one byte changed (the same size)."""
    if how == "long":
        return data + b"\n"
    if how == "far":
        return data + bytes(FAR)
    if how == "short":
        return data[: len(data) - max(1, len(data) // 3)]
    if how == "wrong":
        mid = len(data) // 2
        return data[:mid] + bytes([data[mid] ^ 0x01]) + data[mid + 1:]
    raise ValueError(how)


def mismatch(how: str) -> str:
    """The words the error gives for such a blob, when its size is announced."""
    return "digest mismatch" if how == "wrong" else "size mismatch"


def serve_damaged(httpserver, lay: imagegen.Layout, served: dict[str, bytes]) -> None:
    """Serve `lay` at /v2/x/y, each blob of `served` with those bytes instead (its own length
    announced in Content-Length, so only the reader can tell)."""
    serve_layout(httpserver, lay, skip=set(served))
    for digest, data in served.items():
        httpserver.expect_request(f"/v2/x/y/blobs/{digest}").respond_with_data(
            data, content_type="application/octet-stream")


def rewrite(path: Path, data: bytes) -> None:
    """A read-only file (a cached blob, a layout's blob) replaced by a new one holding `data`;
    files hard-linked to the old one (a layout written from the cache) keep their bytes."""
    path.unlink()
    path.write_bytes(data)
    os.chmod(path, stat.S_IRUSR)


def tar_directory(root: Path, out: Path) -> Path:
    """An oci-archive: the layout's files in a plain tar, directories first."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                tf.add(full, arcname=str(full.relative_to(root)), recursive=False)
    return out


def docker_archive(out: Path, layers: list[bytes], diff_ids: list[str], repo_tag: str = "example/img:1") -> Path:
    """A docker-archive whose config names `diff_ids` and whose layer members hold `layers`."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    members = {"config.json": config}
    names = []
    for i, data in enumerate(layers):
        names.append(f"{i}/layer.tar")
        members[names[-1]] = data
    members["manifest.json"] = json.dumps([{"Config": "config.json", "RepoTags": [repo_tag],
                                            "Layers": names}]).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out
