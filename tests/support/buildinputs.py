"""Build inputs shared by the build and push tests: a small fake Nix store, its graph, a spec."""
from __future__ import annotations

import json
import os
from pathlib import Path


def make_store(root: Path) -> dict[str, Path]:
    """A small fake store: app -> lib -> base, app -> data; each path a directory with files."""
    store = root / "store"
    paths = {
        "aaaa-base": {"lib/libbase.so": b"base" * 3000},
        "bbbb-lib": {"lib/libfoo.so": b"foo" * 2000, "share/doc": b"docs"},
        "cccc-data": {"share/data.bin": bytes(range(256)) * 100},
        "dddd-app": {"bin/app": b"#!/bin/sh\necho app\n"},
    }
    for name, files in paths.items():
        for rel, data in files.items():
            p = store / name / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    (store / "dddd-app" / "bin" / "app").chmod(0o755)
    os.symlink("../lib/libfoo.so", store / "bbbb-lib" / "share" / "link")
    return {n: store / n for n in paths}


GRAPH = {
    "/nix/store/dddd-app": ["/nix/store/bbbb-lib", "/nix/store/cccc-data"],
    "/nix/store/bbbb-lib": ["/nix/store/aaaa-base"],
    "/nix/store/cccc-data": [],
    "/nix/store/aaaa-base": [],
}


def write_graph(root: Path, form: str) -> Path:
    path = root / f"graph-{form}"
    if form == "list":
        path.write_text(json.dumps([{"path": p, "references": refs + [p], "narSize": 1000 * (i + 1)}
                                    for i, (p, refs) in enumerate(sorted(GRAPH.items()))]))
    elif form == "object":
        path.write_text(json.dumps({p: {"references": refs, "narSize": 100} for p, refs in GRAPH.items()}))
    elif form == "export-json":
        path.write_text(json.dumps({"closure": [{"path": p, "references": refs} for p, refs in GRAPH.items()]}))
    else:  # exportReferencesGraph's plain registration format
        lines = []
        for p, refs in GRAPH.items():
            lines += [p, "", str(len(refs))] + refs
        path.write_text("\n".join(lines) + "\n")
    return path


def spec_file(workdir: Path, **overrides) -> Path:
    spec = {
        "name": "example/app", "tag": "1.0",
        "paths": [{"source": "app", "target": "/opt/app"}],
        "closure": {"graph": str(write_graph(workdir, "list").name), "realStoreDir": "store"},
        "contents": ["root1"],
        "config": {"Cmd": ["/opt/app/bin/busybox", "echo", "hello from the image"], "Env": ["A=1"]},
        "architecture": "amd64",
    }
    spec.update(overrides)
    spec = {k: v for k, v in spec.items() if v is not None}
    path = workdir / "spec.json"
    path.write_text(json.dumps(spec))
    return path
