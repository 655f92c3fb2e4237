"""The README and the pages in docs/ stay honest where that is cheap to check: the README is short,
its map names every command as the generated reference does, every relative link (and anchor)
leads somewhere, every `registry-tools ...` line in their shell examples is one the parser
accepts, and no line tells users to install a package of PyPI that is not this one."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from registry_tools.cli.help import GROUPS
from registry_tools.cli.parser import TABLE, build_parser

from .helpers import ROOT

README = ROOT / "README.md"
TOPICS = sorted((ROOT / "docs").glob("*.md"))  # the topic pages and architecture.md (hand-written)
PAGES = [README, *TOPICS, *sorted((ROOT / "docs" / "commands").glob("*.md"))]
MAX_LINES = 250

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]+`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
MAP_LINE = re.compile(r"^- \[`([a-z-]+)`\]\(([^)]+)\): (.+)$", re.M)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The text outside fenced blocks, inline code made plain words (a link's text may be code)."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered (code, links and emphasis made plain),
    lower case, without punctuation but hyphens and underscores, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines < MAX_LINES, f"{rel(README)} has {lines} lines; the reference goes in docs/ (keep under {MAX_LINES})"


def test_readme_maps_every_command_as_the_reference_names_it():
    """One line per command, in the groups' order, linking to its generated page with the summary
    the parser gives it (the same line as docs/commands/README.md's)."""
    generated = {name: summary for name, _, summary in MAP_LINE.findall(
        (ROOT / "docs" / "commands" / "README.md").read_text())}
    mapped = MAP_LINE.findall(README.read_text())
    names = [name for name, _, _ in mapped]
    missing = sorted(set(TABLE) - set(names))
    assert not missing, f"{rel(README)}'s map of commands lacks: {', '.join(missing)}"
    assert names == [name for group in GROUPS.values() for name in group], "the map follows cli/help.py GROUPS"
    for name, target, summary in mapped:
        assert target == f"docs/commands/{name}.md" and (ROOT / target).is_file(), (name, target)
        assert summary == generated[name], f"{name}: README says {summary!r}, the parser {generated[name]!r}"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_leads_somewhere(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{rel(page)}: links that lead nowhere: {broken}"


def shell_commands(text: str):
    """Each `registry-tools ...` command of the text's sh blocks, as the words the program gets."""
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        block = re.sub(r"<<'?(\w+)'?\n.*?^\1$", "", block, flags=re.S | re.M)  # here-documents
        block = re.sub(r"\$\([^)]*\)", "SUBSTITUTED", block.replace("\\\n", " "))
        for line in block.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for word in [*lexer, ";"]:
                if word and set(word) <= set("|&;<>()"):
                    while words and re.match(r"\w+=", words[0]):  # VAR=value before the command
                        del words[0]
                    if words[:1] == ["registry-tools"]:
                        yield line, words[1:]
                    words = []
                    if word in (">", "<", ">>"):
                        words = ["redirect"]  # the file name that follows is no command
                else:
                    words.append(word)


EXAMPLES = [(rel(page), line, argv) for page in (README, *TOPICS)
            for line, argv in shell_commands(page.read_text())]


def test_the_pages_have_examples_to_check():
    assert len(EXAMPLES) > 50
    assert {page for page, _, _ in EXAMPLES} >= {rel(README), "docs/pins.md", "docs/build.md"}


@pytest.mark.parametrize("page,line,argv", EXAMPLES, ids=[f"{p}:{a[0] if a else ''}" for p, _, a in EXAMPLES])
def test_every_example_command_line_is_one_the_parser_takes(page, line, argv, capsys):
    """Options renamed or removed, a value no longer among the choices: the example would fail."""
    assert argv and argv[0] in TABLE, f"{page}: {line!r} names no command"
    try:
        build_parser(argv[0]).parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: {line!r}: {capsys.readouterr().err.strip()} (exit {e.code})")


def test_the_readme_installs_this_package_not_pypis_namesake():
    """`registry-tools` on PyPI is an unrelated project: installing by that name gets it."""
    wrong = re.findall(r"pipx? install (?:-\S+ )*registry[-_]tools\b", README.read_text())
    assert not wrong, f"{rel(README)} installs PyPI's registry-tools, another project: {wrong}"
