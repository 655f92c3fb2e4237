"""mutate, append, flatten, rebase and check-base: image surgery without pulling."""
from __future__ import annotations

import argparse
import json
import shlex
from typing import Any

from registry_tools.cli.common import dump, note, sent, session_of
from registry_tools.cli.options import add_common, add_podman, complete_platforms
from registry_tools.errors import UsageError

ENDS = ("SRC and DEST: a registry reference (docker://REF or REF; a DEST must name its registry), "
        "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG], or an existing path; a DEST "
        "may be podman:NAME[:TAG] (loaded into podman's storage). ")
UNTOUCHED = ("Blobs the edit does not touch are never downloaded or uploaded again: between registries "
             "DEST HEADs or mounts them. ")


def _ends(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SRC", help="the image to edit (any source; see above)")
    p.add_argument("dest", metavar="DEST", help="where the edited image goes (see above)")
    complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="the image to edit from an index (default: this machine's); DEST "
                                            "gets that image alone"))
    p.add_argument("--all", action="store_true",
                   help="edit every image of an index, under a new index (attestations are dropped: they name "
                        "the old digests)")


def _parser(sub: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description + ENDS + UNTOUCHED)
    _ends(p)
    return p


def _mutate(sub: Any) -> None:
    p = _parser(sub, "mutate", "edit an image's config, annotations or format on its way from SRC to DEST",
                "Copy SRC to DEST with its config edited (environment, entrypoint, command, user, working "
                "directory, labels, exposed ports, created time), annotations added to its manifest, or its media "
                "types converted; no layer changes. ")
    g = p.add_argument_group("edits")
    g.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="set a variable (repeatable)")
    g.add_argument("--env-unset", action="append", default=[], metavar="KEY", help="remove a variable (repeatable)")
    g.add_argument("--entrypoint", metavar="COMMAND",
                   help='the entrypoint: a JSON array (\'["/bin/app", "-v"]\') or words as a shell splits them; '
                        '"" removes it')
    g.add_argument("--cmd", metavar="COMMAND", help="the command (arguments to the entrypoint), as --entrypoint")
    g.add_argument("--user", metavar="USER[:GROUP]", help="the user the container runs as")
    g.add_argument("--workdir", metavar="DIR", help="the working directory")
    g.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a config label (repeatable)")
    g.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]",
                   help="an exposed port, tcp unless named (repeatable)")
    g.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                   help="a manifest annotation (repeatable; OCI manifests only)")
    g.add_argument("--created", metavar="TIME|now", help="the config's created time (ISO 8601, or now)")
    g.add_argument("--format", choices=("oci", "docker"),
                   help="convert the manifest's, config's and layers' media types (the bytes stay the same)")
    add_podman(p)
    add_common(p)


def words(text: str | None, flag: str) -> tuple[str, ...] | None:
    """--entrypoint and --cmd: a JSON array of strings, or words as a shell splits them ("": none)."""
    if text is None:
        return None
    if text.lstrip().startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{flag}: {text!r} is not a JSON array of strings")
        return tuple(value)
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise UsageError(f"{flag}: {text!r}: {e}") from None


def _ends_of(args: argparse.Namespace) -> Any:
    from registry_tools.api.surgery import Ends
    from registry_tools.model.platform.values import parse

    return Ends(args.source, args.dest, parse(args.platform) if args.platform else None, args.all,
                tuple(args.podman_arg))


def cmd_mutate(args: argparse.Namespace) -> int:
    from registry_tools.api.surgery import MutateOptions, created, mutate, pairs, port
    from registry_tools.surgery import Edits

    edits = Edits(env=tuple(args.env), env_unset=tuple(args.env_unset), entrypoint=words(args.entrypoint,
                  "--entrypoint"), cmd=words(args.cmd, "--cmd"), user=args.user, workdir=args.workdir,
                  labels=pairs(args.label, "--label"), ports=tuple(port(p) for p in args.expose),
                  created=created(args.created) if args.created is not None else None,
                  annotations=pairs(args.annotation, "--annotation"), format=args.format)
    with session_of(args) as session:
        return _report(args, "mutated", mutate(MutateOptions(_ends_of(args), edits), session))


def _append(sub: Any) -> None:
    p = _parser(sub, "append", "add layers on top of an image on its way from SRC to DEST",
                "Copy SRC to DEST with new layers on top: a directory is packed as build packs one (entries "
                "sorted, owned by root, mtime 1970-01-01T00:00:01Z, gzip with no timestamp); a tar (plain, gzip "
                "or zstd) is taken as it is, its entries' owners, times and whiteouts kept (as crane append "
                "takes one), and compressed with gzip. diff_ids and history are extended. ")
    p.add_argument("--layer", action="append", default=[], required=True, metavar="DIR|TAR",
                   help="a layer to add, bottom first (repeatable)")
    add_podman(p)
    add_common(p)


def cmd_append(args: argparse.Namespace) -> int:
    from registry_tools.api.surgery import AppendOptions, append

    with session_of(args) as session:
        return _report(args, "appended to", append(AppendOptions(_ends_of(args), tuple(args.layer)), session))


def _flatten(sub: Any) -> None:
    p = _parser(sub, "flatten", "squash an image's layers into one on its way from SRC to DEST",
                "Copy SRC to DEST as an image of one layer: the root filesystem its layers make (whiteouts and "
                "opaque directories resolved; exactly the tar export writes). The config is kept, its history "
                "one entry. ")
    add_podman(p)
    add_common(p)


def cmd_flatten(args: argparse.Namespace) -> int:
    from registry_tools.api.surgery import FlattenOptions, flatten

    with session_of(args) as session:
        return _report(args, "flattened", flatten(FlattenOptions(_ends_of(args)), session))


def _rebase(sub: Any) -> None:
    p = _parser(sub, "rebase", "swap the base image under an image on its way from SRC to DEST",
                "Copy SRC to DEST with its base image's layers (which must be its first layers) replaced by "
                "another base's; the image's own layers, config and history are kept, diff_ids and the base "
                "annotations (org.opencontainers.image.base.name and .digest) rebuilt. An image built with "
                "fromImage records its base: then neither option is needed. ")
    p.add_argument("--old-base", metavar="REF", help="the base the image was built on (default: the one it records, "
                                                     "at the digest it records)")
    p.add_argument("--new-base", metavar="REF", help="the base to put under it (default: the base name it records, "
                                                     "as that name resolves now)")
    add_podman(p)
    add_common(p)


def cmd_rebase(args: argparse.Namespace) -> int:
    from registry_tools.api.surgery import RebaseOptions, rebase

    with session_of(args) as session:
        return _report(args, "rebased", rebase(RebaseOptions(_ends_of(args), args.old_base, args.new_base), session))


def _report(args: argparse.Namespace, verb: str, r: Any) -> int:
    if args.json:
        dump(r.to_json())
        return 0
    p = r.pushed
    if p is not None:
        note(args, f"{verb} {r.source} into {r.destination}: {sent(p)}")
    else:
        note(args, f"{verb} {r.source} into {r.destination} ({', '.join([*r.platforms, f'manifest {r.digest}'])})")
    print(r.digest)
    return 0


def _check_base(sub: Any) -> None:
    p = sub.add_parser("check-base", help="say whether the base image an image records has moved",
                       description="Read the base SRC records (org.opencontainers.image.base.name and .digest, "
                                   "which build writes for fromImage and rebase updates) and resolve that name "
                                   "now: exit 0 if it names the same digest, 1 if it moved (both digests named).")
    p.add_argument("source", metavar="SRC", help="the image whose base to check: a registry reference, "
                   "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or a path")
    complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="the image to read from an index (default: this machine's)"))
    add_common(p)


def cmd_check_base(args: argparse.Namespace) -> int:
    from registry_tools.api.surgery import CheckBaseOptions, check_base
    from registry_tools.model.platform.values import parse

    with session_of(args) as session:
        r = check_base(CheckBaseOptions(args.source, parse(args.platform) if args.platform else None), session)
    if args.json:
        dump(r.to_json())
    elif r.moved:
        print(f"base {r.base_name} moved: {r.recorded} (recorded) -> {r.current} (now)")
    else:
        print(f"base {r.base_name} unchanged: {r.current}")
    return 1 if r.moved else 0


COMMANDS = {"mutate": (_mutate, cmd_mutate), "append": (_append, cmd_append), "flatten": (_flatten, cmd_flatten),
            "rebase": (_rebase, cmd_rebase), "check-base": (_check_base, cmd_check_base)}
