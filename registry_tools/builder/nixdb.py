"""includeNixDB: a Nix database in the image registering every store path of the closure, so
`nix` inside the container knows them (valid paths, NAR hashes and sizes, references).

Written as Nix 2's schema 10 (`nix/var/nix/db/db.sqlite` and `schema`), rows in sorted path
order, registration time fixed at 1: the same closure gives the same file with the same
SQLite library. NAR hashes and sizes come from the reference graph (`narHash`, `narSize`)
and are computed from the store paths where the graph lacks them.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable

from registry_tools.builder.closure import Graph
from registry_tools.formats.nar import nar_sha256_and_size

SCHEMA_VERSION = "10"
SCHEMA = """
create table ValidPaths (
    id integer primary key autoincrement not null,
    path text unique not null,
    hash text not null,
    registrationTime integer not null,
    deriver text,
    narSize integer,
    ultimate integer,
    sigs text,
    ca text
);
create table Refs (
    referrer integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index IndexReferrer on Refs(referrer);
create index IndexReference on Refs(reference);
create trigger DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table DerivationOutputs (
    drv integer not null,
    id text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index IndexDerivationOutputs on DerivationOutputs(path);
"""


def write_nix_db(root: Path, graph: Graph, real_path: Callable[[str], str]) -> None:
    """The database under `root` (the final layer's tree) for every path of `graph`."""
    db_dir = root / "nix" / "var" / "nix" / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    facts: dict[str, tuple[str, int]] = {}
    for path in graph.paths:
        digest, size = graph.nar_hashes.get(path), graph.sizes.get(path)
        if digest is None or size is None:
            computed, computed_size = nar_sha256_and_size(real_path(path))
            digest, size = digest or computed, size if size is not None else computed_size
        facts[path] = ("sha256:" + digest.hex(), size)
    db = db_dir / "db.sqlite"
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("pragma page_size = 4096")
        con.executescript(SCHEMA)
        con.execute("begin")
        ids = {}
        for i, path in enumerate(graph.paths, 1):
            ids[path] = i
            con.execute("insert into ValidPaths (id, path, hash, registrationTime, narSize) values (?, ?, ?, 1, ?)",
                        (i, path, facts[path][0], facts[path][1]))
        for path in graph.paths:
            for ref in graph.refs[path]:
                con.execute("insert into Refs (referrer, reference) values (?, ?)", (ids[path], ids[ref]))
        con.execute("commit")
    finally:
        con.close()
    (db_dir / "schema").write_text(SCHEMA_VERSION)
    for p in (db, db_dir / "schema"):
        os.chmod(p, 0o644)
