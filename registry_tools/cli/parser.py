"""The argument parser: the table of commands, each defined (its options and what it runs) in
the module that holds it; only the command named on the command line is built."""
from __future__ import annotations

import argparse
import importlib

from registry_tools import __version__
from registry_tools.cli.help import teach
from registry_tools.cli.options import Parser

# command -> the module of registry_tools.cli that defines it (its COMMANDS: parser and runner)
TABLE = {
    "pull": "pulling", "export": "pulling", "prefetch": "pulling", "assemble": "pulling", "fetch-blob": "pulling",
    "build": "building", "build-shell": "building",
    "copy": "copying", "sync": "copying", "push": "copying",
    "diff": "diffing",
    "lock": "locks",
    "mutate": "surgery", "append": "surgery", "flatten": "surgery", "rebase": "surgery", "check-base": "surgery",
    "index": "indexing",
    "inspect": "reading", "digest": "reading", "tags": "reading", "tag": "reading", "delete": "reading",
    "attach": "reading", "referrers": "reading",
    "generate-key": "signing", "sign": "signing", "verify": "signing",
    "cache": "account", "login": "account", "logout": "account", "completion": "account",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; `only` (the command named on the command line): that command's parser
    alone, which reads its arguments, help and errors the same (the others cost ~15 ms of
    every start). Each command's parser runs its command (`args.run`)."""
    parser = Parser(prog="registry-tools", description="Pin, pull, build and push OCI and Docker images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND",
                                help=argparse.SUPPRESS)
    for name, module in TABLE.items():
        if only is None or only not in TABLE or name == only:
            add, run = importlib.import_module(f"registry_tools.cli.{module}").COMMANDS[name]
            add(sub)
            sub.choices[name].set_defaults(run=run)
    teach(parser, sub)
    return parser
