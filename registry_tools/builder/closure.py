"""Nix-style reference graphs and the two ways nixpkgs cuts them into layers.

Inputs: `nix path-info --json --recursive` (the list form of Nix < 2.19 and the object
form after it), and `exportReferencesGraph` (its JSON, or the plain-text registration
format). Every path ends up in exactly one layer, whatever the budget.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from registry_tools.errors import InvalidDigest, UsageError
from registry_tools.model.digest import parse_output_hash
from registry_tools.model.manifest import load_json


@dataclass
class Graph:
    """Paths, their references (self-references dropped), sizes and NAR hashes (where given)."""

    refs: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    nar_hashes: dict[str, bytes] = field(default_factory=dict)  # sha256 of each path's NAR

    def add(self, path: str, references: Iterable[str], size: int | None = None,
            nar_hash: bytes | None = None) -> None:
        self.refs[path] = sorted({r for r in references if r != path})
        for r in self.refs[path]:
            self.refs.setdefault(r, [])
        if size is not None:
            self.sizes[path] = size
        if nar_hash is not None:
            self.nar_hashes[path] = nar_hash

    @property
    def paths(self) -> list[str]:
        return sorted(self.refs)

    def without(self, paths: Iterable[str]) -> "Graph":
        """The graph less `paths` (and every reference to them)."""
        gone = set(paths)
        g = Graph()
        for p, refs in self.refs.items():
            if p not in gone:
                g.refs[p] = [r for r in refs if r not in gone]
        g.sizes = {p: n for p, n in self.sizes.items() if p not in gone}
        g.nar_hashes = {p: h for p, h in self.nar_hashes.items() if p not in gone}
        return g

    def roots(self) -> list[str]:
        referenced = {r for refs in self.refs.values() for r in refs}
        return [p for p in self.paths if p not in referenced]

    def closure(self, path: str, stop: frozenset[str] = frozenset()) -> set[str]:
        """Everything reachable from `path` (itself included), not going through `stop`."""
        seen = {path}
        todo = [path]
        while todo:
            for r in self.refs[todo.pop()]:
                if r not in seen and r not in stop:
                    seen.add(r)
                    todo.append(r)
        return seen


def parse_graph(text: str, source: str = "closure") -> Graph:
    """Read any of the supported reference-graph formats."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return _from_json(load_json(text, source, UsageError), source)
    return _from_registration(text, source)


def _from_json(data: Any, source: str) -> Graph:
    g = Graph()
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # exportReferencesGraph with structured attrs: {"closure": [...]}
    if isinstance(data, list):  # nix path-info --json (Nix < 2.19), exportReferencesGraph JSON
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise UsageError(f"{source}: entry {i} has no 'path'")
            g.add(entry["path"], _refs(entry, source), _size(entry), _nar_hash(entry, entry["path"], source))
    elif isinstance(data, dict):  # nix path-info --json (Nix >= 2.19): path -> info
        for path, entry in data.items():
            if entry is None:
                raise UsageError(f"{source}: {path} is not valid in the store it was read from")
            if not isinstance(entry, dict):
                raise UsageError(f"{source}: the entry for {path} is not an object")
            g.add(path, _refs(entry, source), _size(entry), _nar_hash(entry, path, source))
    else:
        raise UsageError(f"{source}: expected a list or an object of store paths")
    return g


def _refs(entry: dict, source: str) -> list[str]:
    refs = entry.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise UsageError(f"{source}: 'references' must be a list of paths")
    return refs


def _size(entry: dict) -> int | None:
    size = entry.get("narSize")
    return size if isinstance(size, int) and size >= 0 else None


def _nar_hash(entry: dict, path: str, source: str) -> bytes | None:
    """narHash as Nix writes it (`sha256:` + Nix base32, or SRI), checked."""
    value = entry.get("narHash")
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise InvalidDigest("not a string")
        return parse_output_hash(value)
    except InvalidDigest:
        raise UsageError(f"{source}: {path}: narHash {str(value)[:80]!r} is not a sha256") from None


def _from_registration(text: str, source: str) -> Graph:
    """path, deriver (may be empty), reference count, references — repeated."""
    lines = text.splitlines()
    g = Graph()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            path, count = lines[i], int(lines[i + 2])
            if count < 0:
                raise ValueError
        except (IndexError, ValueError):
            raise UsageError(f"{source}:{i + 1}: expected a store path, a deriver line and a reference count") from None
        refs = lines[i + 3:i + 3 + count]
        if len(refs) != count:
            raise UsageError(f"{source}:{i + 1}: {path} lists {count} references but the file ends")
        g.add(path, refs)
        i += 3 + count
    if not g.refs:
        raise UsageError(f"{source}: no store paths in it")
    return g


# --- popularity (nixpkgs' referencesByPopularity) ----------------------------------------

def _post_order(graph: Graph, roots: list[str]) -> list[str]:
    """Every path reachable from `roots`, each after all it references (iteratively: graphs
    may be deep). A cycle is refused: store paths cannot reference each other in a circle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current walk, 2: done
    for root in roots:
        if state.get(root) == 2:
            continue
        stack = [(root, iter(graph.refs[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state.get(child) == 1:
                raise UsageError(f"reference graph: {child} is part of a reference cycle")
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(graph.refs[child])))
    return order


def popularity(graph: Graph, roots: list[str] | None = None) -> dict[str, int]:
    """Each path's popularity in the graph expanded into a tree from its roots.

    A path scores 1 for each place it hangs directly below a parent in the tree, plus,
    for each ancestor at distance d above that place, d more: the deeper and the more
    often a path is shared, the more popular it is.
    """
    roots = roots if roots is not None else graph.roots()
    unknown = [r for r in roots if r not in graph.refs]
    if unknown:
        raise UsageError(f"reference graph: root {unknown[0]} is not in the graph")
    order = _post_order(graph, roots)
    parents: dict[str, int] = defaultdict(int)  # how many reachable paths still need a contest
    for path in order:
        for child in graph.refs[path]:
            parents[child] += 1
    wanted_roots = set(roots)
    contest: dict[str, dict[str, int]] = {}
    total: dict[str, int] = defaultdict(int)
    for path in order:  # children first, so each contest is ready when needed
        score: dict[str, int] = defaultdict(int)
        for child in graph.refs[path]:
            score[child] += 1
            for sub, s in contest[child].items():
                score[sub] += s + 1
            parents[child] -= 1
            if parents[child] == 0:
                del contest[child]  # no one else needs it: memory stays linear in a deep chain
        if path in wanted_roots:
            total[path] += roots.count(path)
            for sub, s in score.items():
                total[sub] += (s + 1) * roots.count(path)
        if parents[path]:
            contest[path] = dict(score)
    return dict(total)


def package_name(path: str) -> str:
    """Sort key: the name before the hash, so the order survives a rebuild that changes hashes."""
    base = path.rsplit("/", 1)[-1]
    first, _, rest = base.partition("-")
    return f"{rest}-{first}" if rest else first


def by_popularity(graph: Graph, roots: list[str] | None = None) -> list[str]:
    """Most popular first; equal scores by package name; unreachable paths last."""
    scores = popularity(graph, roots)
    ordered = sorted(scores, key=lambda p: (-scores[p], package_name(p)))
    return ordered + [p for p in graph.paths if p not in scores]


def popularity_layers(graph: Graph, budget: int, roots: list[str] | None = None) -> list[list[str]]:
    """The first budget-1 paths a layer each, the rest together in the last."""
    if budget < 1:
        raise UsageError("no layers left for the store paths: raise maxLayers or use fewer base layers")
    order = by_popularity(graph, roots)
    if len(order) <= budget:
        return [[p] for p in order]
    return [[p] for p in order[: budget - 1]] + [sorted(order[budget - 1:])]


# --- auto ---------------------------------------------------------------------------------

def auto_layers(graph: Graph, budget: int, sizes: dict[str, int]) -> list[list[str]]:
    """Largest paths own layers; what only one owner reaches goes with it; shared paths get a
    layer per distinct set of owners. Owners are added while the layers fit the budget.
    Layers come out smallest closure first."""
    if budget < 1:
        raise UsageError("no layers left for the store paths: raise maxLayers or use fewer base layers")
    candidates = sorted(graph.paths, key=lambda p: (-sizes.get(p, 0), p))
    owners: list[str] = []
    best = _assign(graph, owners)
    for candidate in candidates:
        trial = _assign(graph, owners + [candidate])
        if len(trial) > budget:
            break
        owners.append(candidate)
        best = trial
    layers = [sorted(paths) for paths in best.values()]
    return sorted(layers, key=lambda ps: (sum(sizes.get(p, 0) for p in ps), ps))


def _assign(graph: Graph, owners: list[str]) -> dict[frozenset[str], set[str]]:
    """Group every path by the set of owners that reach it without passing another owner."""
    owner_set = frozenset(owners)
    reached_by: dict[str, set[str]] = defaultdict(set)
    for o in owners:
        for p in graph.closure(o, stop=owner_set - {o}):
            reached_by[p].add(o)
    groups: dict[frozenset[str], set[str]] = defaultdict(set)
    for p in graph.paths:
        if p in owner_set:
            groups[frozenset([p])].add(p)
        else:
            groups[frozenset(reached_by.get(p, ()))].add(p)
    return dict(groups)
