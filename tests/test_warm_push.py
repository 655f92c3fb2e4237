"""A push from an empty cache of an image the registry holds already: the layers' input keys,
recorded in their descriptors, are read back and nothing is packed or uploaded again."""
from __future__ import annotations

import json



from .support.buildinputs import make_store, write_graph
from .helpers import run


def uploads(reg, mark) -> list[str]:
    return [p for m, p in reg.requests_since(mark) if m in ("POST", "PATCH") or (m == "PUT" and "/blobs/" in p)]


def closure_spec(tmp_path, **extra):
    make_store(tmp_path)
    spec = {"name": "example/closure", "tag": "1.0", "architecture": "amd64",
            "closure": {"graph": write_graph(tmp_path, "list").name, "realStoreDir": "store"}, **extra}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return tmp_path / "spec.json"


def test_a_push_from_an_empty_cache_packs_and_uploads_nothing(target, tmp_path, capsys, monkeypatch):
    spec = closure_spec(tmp_path)
    ref = f"{target.host}/closure/app:1.0"
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "cache-a"))
    code, out, err = run(capsys, "build", str(spec), "--push", ref, "--json", "-v")
    assert code == 0, err
    first = json.loads(out)
    assert first["blobsUploaded"] > 0
    packed_lines = [line for line in err.splitlines() if line.startswith("layer ") and "(unchanged)" not in line]
    assert packed_lines  # -v says each layer packed
    manifest = json.loads(__import__("subprocess").run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True,
        check=True).stdout)
    keys = [layer.get("annotations", {}).get("dev.registry-tools.layer.key") for layer in manifest["layers"]]
    assert all(keys), keys  # every layer of a closure-only image is portable
    # another machine: an empty cache
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "cache-b"))
    mark = target.log_offset()
    code, out, err = run(capsys, "build", str(spec), "--push", ref, "--json", "-v")
    assert code == 0, err
    second = json.loads(out)
    assert second["digest"] == first["digest"]
    assert second["blobsUploaded"] == 0 and uploads(target, mark) == []
    layer_lines = [line for line in err.splitlines() if line.startswith("layer ")]
    assert layer_lines and all("(unchanged)" in line for line in layer_lines)  # none packed
    blobs = tmp_path / "cache-b" / "blobs" / "sha256"
    layer_digests = {layer["digest"].split(":")[1] for layer in manifest["layers"]}
    assert not (layer_digests & {p.name for p in blobs.iterdir()})  # no layer was made here


def test_a_changed_store_path_is_packed_and_only_it_uploaded(target, tmp_path, capsys, monkeypatch):
    spec = closure_spec(tmp_path)
    ref = f"{target.host}/closure/app:1.0"
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "cache-a"))
    assert run(capsys, "build", str(spec), "--push", ref)[0] == 0
    (tmp_path / "store" / "cccc-data" / "share" / "data.bin").write_bytes(b"other data" * 1000)
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "cache-b"))
    mark = target.log_offset()
    code, out, err = run(capsys, "build", str(spec), "--push", ref, "--json")
    assert code == 0, err
    committed = [p for m, p in target.requests_since(mark) if m == "PUT" and "/blobs/uploads/" in p]
    assert len(committed) == 2  # the changed layer and the config


def test_layers_of_plain_paths_carry_no_key(tmp_path, cache_dir, capsys):
    """A layer whose files were recognised by their mtime and inode is not portable: no key is
    recorded for it (another machine could not trust it)."""
    spec = closure_spec(tmp_path, paths=[{"source": "store/aaaa-base", "target": "/opt/base"}])
    code, out, err = run(capsys, "build", str(spec), "--oci", str(tmp_path / "layout"), "--json")
    assert code == 0, err
    layout = tmp_path / "layout"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    keyed = [bool(layer.get("annotations")) for layer in manifest["layers"]]
    assert any(keyed) and not all(keyed)


def test_a_warm_cache_does_not_ask_the_registry_what_it_holds(target, tmp_path, capsys, monkeypatch):
    """The destination is read back only when a layer is missing from the cache: from a warm cache a
    second push is HEADs and nothing else."""
    spec = closure_spec(tmp_path)
    ref = f"{target.host}/closure/app:1.0"
    monkeypatch.setenv("REGISTRY_TOOLS_CACHE", str(tmp_path / "cache-a"))
    assert run(capsys, "build", str(spec), "--push", ref)[0] == 0
    mark = target.log_offset()
    assert run(capsys, "build", str(spec), "--push", ref)[0] == 0
    methods = {m for m, p in target.requests_since(mark) if p != "/v2/"}
    assert methods == {"HEAD"}, target.requests_since(mark)
