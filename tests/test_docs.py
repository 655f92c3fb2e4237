"""The generated reference cannot drift: docs/commands/, man/ and completions/ must be what
scripts/gen_docs.py writes from the parser now (regenerate: `python3 scripts/gen_docs.py`), every
option has help text, and every man page renders without a groff warning."""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
from importlib.metadata import version

import pytest

from .helpers import ROOT


def gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_is_what_the_parser_says_now():
    g = gen_docs()
    stale = [p.relative_to(ROOT) for p in g.stale()]
    pages = [p for p in stale if p.parts[0] != "completions"]
    assert not pages, f"stale or missing: {', '.join(map(str, pages))}; run: python3 scripts/gen_docs.py"
    if stale:
        # The completion scripts are argcomplete's glue (the parser is asked at completion time), so
        # they change only with argcomplete itself: say which version made them.
        made = re.search(r"\(argcomplete ([^)]+)\)", (ROOT / "completions" / g.SHELLS["bash"]).read_text())
        here = version("argcomplete")
        if made and made.group(1) != here:
            pytest.skip(f"completions/ were made with argcomplete {made.group(1)}; this machine has {here}")
        pytest.fail(f"stale: {', '.join(map(str, stale))}; run: python3 scripts/gen_docs.py")


def test_every_command_and_action_has_a_page_and_a_man_page():
    from registry_tools.cli.parser import TABLE

    for name in TABLE:
        assert (ROOT / "docs" / "commands" / f"{name}.md").is_file(), name
        assert (ROOT / "man" / f"registry-tools-{name}.1").is_file(), name
    index = (ROOT / "docs" / "commands" / "README.md").read_text()
    assert all(f"]({name}.md)" in index for name in TABLE)


def _parsers(p: argparse.ArgumentParser, prog: str):
    yield prog, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, child in a.choices.items():
                yield from _parsers(child, f"{prog} {name}")


def test_every_argument_has_help_text():
    """An argument without help would be an empty line of the reference."""
    from registry_tools.cli.parser import build_parser

    bare = [f"{prog} {'/'.join(a.option_strings) or a.metavar or a.dest}"
            for prog, p in _parsers(build_parser(), "registry-tools") for a in p._actions
            if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert not bare, f"arguments without help=: {bare}"


def test_man_pages_render_without_warnings():
    if shutil.which("groff") is None:
        pytest.fail("groff is missing: run ./scripts/setup (Debian's groff-base)", pytrace=False)
    pages = sorted((ROOT / "man").glob("*.1"))
    assert len(pages) > 1
    for page in pages:
        res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True)
        assert res.returncode == 0 and res.stderr == "", f"{page.name}: {res.stderr}"


def test_a_page_says_what_the_parser_says(tmp_path):
    """The pages hold the parser's own words: an option's help, the summary, the examples."""
    from registry_tools.cli.help import EXAMPLES

    page = (ROOT / "docs" / "commands" / "pull.md").read_text()
    assert "| `--check-registry` |" in page and "contacts no registry" in page
    assert all(example in page for example in EXAMPLES["pull"])
    man = (ROOT / "man" / "registry-tools-pull.1").read_text()
    assert "\\-\\-check\\-registry" in man
