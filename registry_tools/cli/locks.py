"""lock: work on lock files themselves (merge the mirror locks of a sharded sync)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from registry_tools.cli.common import dump, note
from registry_tools.cli.options import Parser
from registry_tools import words
from registry_tools.errors import UsageError


def _lock(sub: Any) -> None:
    p = sub.add_parser(
        "lock", help="merge lock files (the mirror locks the shards of a sync wrote)",
        description="Work on JSON locks. Nothing is sent to a registry.")
    actions = p.add_subparsers(dest="lock_action", required=True, parser_class=Parser, metavar="ACTION")
    m = actions.add_parser(
        "merge", help="join the mirror locks of `sync --shard` into the one an unsharded sync writes",
        description="Join LOCK files into one. The mirror locks of every shard of one sync (`sync --shard I/N`) "
                    "become byte for byte the lock the unsharded sync writes; a shard missing or given twice, "
                    "shards of another lock, or two that disagree are refused. Locks without shards are joined "
                    "each pin once, first seen first; the same image and platform pinned differently is refused.")
    m.add_argument("locks", nargs="+", metavar="LOCK", help="the locks to join (the mirror locks of every shard)")
    m.add_argument("-o", "--output", metavar="FILE", help="write the merged lock here (default: stdout)")
    m.add_argument("--json", action="store_true",
                   help="print {output, images, inputs} as one JSON document (needs -o)")
    m.add_argument("--quiet", "-q", action="store_true", help="print only the result")
    m.formatter_class = argparse.RawDescriptionHelpFormatter


def cmd_lock(args: argparse.Namespace) -> int:
    from registry_tools.api.lock import write_lock
    from registry_tools.api.shards import merge_locks

    if args.json and not args.output:
        raise UsageError("lock merge --json prints a summary: give -o FILE for the lock")
    text, count = merge_locks(args.locks)
    if not args.output:
        sys.stdout.write(text)
        return 0
    write_lock(args.output, text)
    if args.json:
        dump({"output": args.output, "images": count, "inputs": args.locks})
    else:
        note(args, f"wrote {args.output}: {words.count(count, 'entry')} from {words.count(len(args.locks), 'lock')}")
    return 0


COMMANDS = {"lock": (_lock, cmd_lock)}
