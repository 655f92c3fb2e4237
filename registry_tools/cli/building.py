"""build: one image or a multi-platform index, to a file, a layout, a stream or a registry, with an
SBOM if asked."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from registry_tools.cli.common import emit, note, report_push, session_of
from registry_tools.cli.options import add_common, complete_platforms
from registry_tools.errors import UsageError


def _build(sub: Any) -> None:
    p = sub.add_parser("build", help="build a layered image from a JSON spec (buildLayeredImage)")
    p.add_argument("spec", metavar="SPEC.json", help="the build spec")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="ARCHIVE", help="write a docker-archive file")
    out.add_argument("--oci", metavar="DIR", help="write an OCI image layout directory")
    out.add_argument("--stream", action="store_true",
                     help="stream an uncompressed docker-archive to stdout (streamLayeredImage)")
    out.add_argument("--push", metavar="REF", help="push straight to a registry (no tarball is written)")
    p.add_argument("--format", choices=("docker-archive", "oci-archive"), default=None,
                   help="what -o writes (default docker-archive; a spec naming several platforms needs "
                        "oci-archive: a docker-archive holds one image)")
    complete_platforms(p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                                       help="build only this platform of a spec that names several"))
    p.add_argument("--sbom", metavar="FILE",
                   help="also write an SPDX 2.3 SBOM of the image (every store path of the closure with its name, "
                        "version and NAR hash; every plain path); with --push, attach it to the pushed image as a "
                        "referrer (application/spdx+json)")
    add_common(p)


def cmd_build(args: argparse.Namespace) -> int:
    from registry_tools.api.build import IndexBuildResult, build
    from registry_tools.api.push import build_and_push, build_and_push_index
    from registry_tools.builder.multispec import MultiSpec

    spec = _checked_spec(args)
    if args.push:
        with session_of(args) as session:
            if isinstance(spec, MultiSpec):
                multi = spec
                pushed, built = build_and_push_index(multi, args.push, session)
                note(args, f"built {len(built.images)} platforms ({', '.join(built.images)}): "
                           f"{built.layers_packed} layer(s) packed ({built.bytes_packed / 1e6:.1f} MB)")
            else:
                single = spec
                pushed, _ = build_and_push(single, args.push, session)
                if args.sbom:
                    _sbom(args, single, pushed, session)
        report_push(args, pushed)
        return 0
    fmt = "oci" if args.oci else (args.format or "docker-archive")
    with session_of(args) as session:
        result = build(spec, output=args.output, oci=args.oci, stream=sys.stdout.buffer if args.stream else None,
                       session=session, format=args.format or "docker-archive")
    where = args.output or args.oci or "stdout"
    if isinstance(result, IndexBuildResult):
        if args.json:
            emit({"output": where, "format": fmt, "reference": f"{result.name}:{result.tag}",
                  "indexDigest": str(result.index_digest), "images": {p: str(d) for p, d in result.images.items()},
                  "layersPacked": result.layers_packed, "bytesPacked": result.bytes_packed})
            return 0
        note(args, f"built {result.name}:{result.tag} (index {result.index_digest}: {', '.join(result.images)}; "
                   f"{result.layers_packed} layer(s) packed) to {where}")
        print(f"{result.name}:{result.tag}")
        return 0
    if args.sbom and not isinstance(spec, MultiSpec):
        from registry_tools.api.build import write_sbom

        write_sbom(spec, result.tag, args.sbom)
    digest = f", manifest {result.manifest_digest}" if result.manifest_digest else ""
    if args.json and not args.stream:
        emit({"output": where, "format": fmt, "reference": f"{result.name}:{result.tag}",
              "configDigest": str(result.config_digest),
              "manifestDigest": str(result.manifest_digest) if result.manifest_digest else None,
              "layers": result.layers})
        return 0
    if not args.quiet:
        print(f"built {result.name}:{result.tag} ({result.layers} layers, config {result.config_digest}{digest}) "
              f"to {where}", file=sys.stderr)
    if not args.stream:
        print(f"{result.name}:{result.tag}")
    return 0


def _checked_spec(args: argparse.Namespace):
    """The spec (one platform of it with --platform), and the options checked against it."""
    from registry_tools.builder.multispec import MultiSpec, load_spec
    from registry_tools.model.platform.values import parse as parse_platform

    spec = load_spec(args.spec)
    if args.platform:
        if not isinstance(spec, MultiSpec):
            raise UsageError("--platform picks one platform of a spec that names several (\"platforms\"); this "
                             "one builds one image (set its os/architecture/variant)")
        spec = spec.only(parse_platform(args.platform))
    if args.format and not args.output:
        raise UsageError("--format says what -o writes; --oci writes a layout, --stream a docker-archive")
    if args.stream and args.json:
        raise UsageError("--stream writes the archive to stdout; --json cannot go there too")
    if args.stream and sys.stdout.isatty():
        raise UsageError("--stream writes a tar archive: send it to a pipe or a file, not a terminal")
    if args.sbom and isinstance(spec, MultiSpec):
        raise UsageError("--sbom describes one image: build one platform of this spec with --platform")
    return spec


def _sbom(args: argparse.Namespace, spec, pushed, session) -> None:
    """The SBOM written to its file, then attached to the pushed manifest as a referrer."""
    from registry_tools.api.artifacts import attach
    from registry_tools.api.build import write_sbom
    from registry_tools.builder.sbom import SPDX_MEDIA_TYPE

    name, _, tag = pushed.reference.rpartition(":")
    write_sbom(spec, tag, args.sbom)
    attached = attach(f"{name}@{pushed.digest}", SPDX_MEDIA_TYPE, [args.sbom], session=session)
    note(args, f"attached the SBOM {args.sbom} as {attached.digest}")


COMMANDS = {"build": (_build, cmd_build)}
