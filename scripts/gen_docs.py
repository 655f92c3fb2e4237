#!/usr/bin/env python3
"""The command reference, generated from the parser itself: one Markdown page per command in
docs/commands/, man pages (registry-tools.1 and one per command) in man/, and the shell
completion scripts in completions/ (what `registry-tools completion SHELL` prints).

Everything comes from the parser's own help (descriptions, options, defaults) and the
examples in registry_tools/cli/help.py, so the reference cannot drift from the commands:
tests/test_docs.py fails when a committed file differs from what this script writes now.

    python3 scripts/gen_docs.py            # write docs/commands/, man/ and completions/
    python3 scripts/gen_docs.py --check    # exit 1, naming the files, if any is stale
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry_tools import __version__  # noqa: E402
from registry_tools.cli import main as cli_main  # noqa: E402
from registry_tools.cli.help import EXAMPLES, GROUPS  # noqa: E402
from registry_tools.cli.parser import TABLE, build_parser  # noqa: E402

DOCS = ROOT / "docs" / "commands"
MAN = ROOT / "man"
COMPLETIONS = ROOT / "completions"
# shell -> the file under completions/, named as each shell looks it up once installed
# (share/bash-completion/completions/, share/zsh/site-functions/, share/fish/vendor_completions.d/)
SHELLS = {"bash": "bash/registry-tools", "zsh": "zsh/_registry-tools", "fish": "fish/registry-tools.fish"}
WIDTH = 92  # usage lines in the Markdown pages
SHARED_GROUP = "registry and cache"  # options.add_common's group, described once per command page


# --- what the parser says ---------------------------------------------------------------------

def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser], dict[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help or "" for a in sub._choices_actions}
    return parser, dict(sub.choices), summaries


def _children(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _actions(p: argparse.ArgumentParser) -> list[tuple[str, list[argparse.Action]]]:
    """The parser's arguments by group (title, actions), without --help and the subcommand chooser."""
    out = []
    for group in p._action_groups:
        acts = [a for a in group._group_actions
                if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                and a.help != argparse.SUPPRESS]
        if acts:
            title = group.title or "options"
            out.append(({"positional arguments": "arguments"}.get(title, title), acts))
    return out


def _flags(a: argparse.Action) -> tuple[str, str]:
    """(the option strings, the metavar): ("-o, --output", "FILE"); a positional: ("IMAGE", "")."""
    if not a.option_strings:
        return str(a.metavar or a.dest.upper()), ""
    metavar = "" if a.nargs == 0 else str(a.metavar or a.dest.upper())
    return ", ".join(a.option_strings), metavar


def _help(p: argparse.ArgumentParser, a: argparse.Action) -> str:
    """The help text as --help prints it (%(default)s expanded), on one line, with the choices."""
    text = " ".join(p._get_formatter()._expand_help(a).split()) if a.help else ""
    if a.choices and a.metavar is None:
        text += f"{' ' if text else ''}(one of: {', '.join(map(str, a.choices))})"
    return text


def _paragraphs(text: str | None) -> list[str]:
    """A description's paragraphs (blank lines apart), each on one line."""
    return [" ".join(part.split()) for part in re.split(r"\n\s*\n", text or "") if part.strip()]


def _usage_words(p: argparse.ArgumentParser) -> list[str]:
    """The usage line as words that must not break: `[--format {a,b}]` is one."""
    line = " ".join(p.format_usage().removeprefix("usage: ").split())
    words, depth, current = [], 0, ""
    for c in line:
        depth += (c in "[({") - (c in "])}")
        if c == " " and depth == 0:
            words.append(current)
            current = ""
        else:
            current += c
    return words + [current]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- Markdown ---------------------------------------------------------------------------------

def _md(text: str) -> str:
    """Text for a Markdown page: `code` kept as code, the rest escaped, | escaped everywhere (tables)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code span
        parts = ["\\`".join(parts)]
    # *, <, > and a _ not inside a word (SSL_CERT_FILE stays as it is) would be emphasis or HTML
    out = [re.sub(r"([\\*<>]|(?<!\w)_|_(?!\w))", r"\\\1", part) if i % 2 == 0 else f"`{part}`"
           for i, part in enumerate(parts)]
    return "".join(out).replace("|", "\\|")


def _md_usage(p: argparse.ArgumentParser) -> list[str]:
    lines, line = [], ""
    for word in _usage_words(p):
        if line and len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    return ["```", *lines, line, "```", ""]


def _md_table(p: argparse.ArgumentParser, acts: list[argparse.Action]) -> list[str]:
    rows = ["| | |", "|---|---|"]
    for a in acts:
        flags, metavar = _flags(a)
        rows.append(f"| `{(flags + ' ' + metavar).strip()}` | {_md(_help(p, a))} |".replace("``", ""))
    return rows + [""]


def _shared(p: argparse.ArgumentParser) -> tuple[argparse.ArgumentParser, list[argparse.Action]] | None:
    """The registry and cache options of a command's actions (`index create`, `lock merge`), shown
    once after them; None for a command without actions."""
    for child in _children(p).values():
        for title, acts in _actions(child):
            if title == SHARED_GROUP:
                return child, acts
    return None


def _md_body(p: argparse.ArgumentParser, level: str) -> list[str]:
    lines = _md_usage(p) + [line for para in _paragraphs(p.description) for line in (_md(para), "")]
    for title, acts in _actions(p):
        if title == SHARED_GROUP and level == "###":
            lines += ["Takes the registry and cache options below.", ""]
            continue
        lines += [f"{level} {_capital(title)}", "", *_md_table(p, acts)]
    return lines


def markdown(name: str, p: argparse.ArgumentParser, summary: str) -> str:
    lines = [f"# registry-tools {name}", "", _md(_capital(summary)) + ".", ""] + _md_body(p, "##")
    for child_name, child in _children(p).items():
        lines += [f"## {name} {child_name}", "", *_md_body(child, "###")]
    shared = _shared(p)
    if shared:
        lines += [f"## {_capital(SHARED_GROUP)}", "", *_md_table(*shared)]
    lines += ["## Examples", "", "```sh", *EXAMPLES[name], "```", "",
              f"See also: [all commands](README.md), `man registry-tools-{name}`, "
              f"`registry-tools {name} --help`.", ""]
    return "\n".join(lines)


def index_markdown(parser: argparse.ArgumentParser, summaries: dict[str, str]) -> str:
    lines = ["# Command reference", "",
             _md(f"{parser.description} Every command's page lists its options and examples, as "
                 "`registry-tools COMMAND --help` and `man registry-tools-COMMAND` do."), "",
             "These pages, the man pages in `man/` and the shell completions in `completions/` are generated "
             "from the parser by `python3 scripts/gen_docs.py`; do not edit them by hand "
             "(`tests/test_docs.py` fails when one differs from what the parser says).", ""]
    for group, names in GROUPS.items():
        lines += [f"## {_capital(group)}", ""]
        lines += [f"- [`{n}`]({n}.md): {_md(summaries.get(n, ''))}" for n in names]
        lines.append("")
    lines += ["## Exit status", "", _md(EXIT_STATUS), ""]
    return "\n".join(lines)


EXIT_STATUS = ("0 success; 1 a failure to act on (verification, network, credentials, not found), with one "
               "line on stderr saying what and why; 2 bad usage or bad input; 130 interrupted.")


# --- man pages ------------------------------------------------------------------------------

def _roff(text: str) -> str:
    """Text for roff: backslashes, hyphens and non-ASCII escaped; a leading . or ' made literal."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n"))


def _th(title: str) -> list[str]:
    # no date: the page depends on the parser alone; no hyphenation, ragged right (long option names)
    return [".nr HY 0", f'.TH {title} 1 "" "registry-tools {__version__}" "User Commands"', ".ad l"]


def _man_synopsis(p: argparse.ArgumentParser) -> list[str]:
    """.SY with the command's words, then the rest, breaking between words (and around a | of
    alternatives), never between an option and its value."""
    words = _usage_words(p)
    n = next(i for i, w in enumerate(words) if w.startswith(("[", "-", "(")) or w.isupper() or i == len(words) - 1)
    rest = [_roff(w).replace(" | ", "\0").replace(" ", "\\ ").replace("\0", " | ") for w in words[n:]]
    return ['.SY "' + " ".join(_roff(w) for w in words[:n]) + '"', " ".join(rest), ".YS"]


def _man_options(p: argparse.ArgumentParser, acts: list[argparse.Action]) -> list[str]:
    out = []
    for a in acts:
        flags, metavar = _flags(a)
        head = f"\\fB{_roff(flags)}\\fR" + (f" \\fI{_roff(metavar)}\\fR" if metavar else "")
        out += [".TP", head, _roff(_help(p, a))]
    return out


def _man_body(p: argparse.ArgumentParser, heading: str) -> list[str]:
    lines = []
    for para in _paragraphs(p.description):
        lines += [".PP", _roff(para)]
    for title, acts in _actions(p):
        if title == SHARED_GROUP and heading == ".SS":
            lines += [".PP", "Takes the registry and cache options below."]
            continue
        lines += [f'{heading} "{_roff(title.upper() if heading == ".SH" else _capital(title))}"',
                  *_man_options(p, acts)]
    return lines


def man(name: str, p: argparse.ArgumentParser, summary: str) -> str:
    lines = [*_th(f"REGISTRY-TOOLS-{name.upper()}"), ".SH NAME",
             f"registry\\-tools\\-{_roff(name)} \\- {_roff(summary)}", ".SH SYNOPSIS", *_man_synopsis(p)]
    if p.description:
        lines.append(".SH DESCRIPTION")
    lines += _man_body(p, ".SH")
    for child_name, child in _children(p).items():
        lines += [f'.SH "{_roff(name.upper())} {_roff(child_name.upper())}"', *_man_synopsis(child),
                  *_man_body(child, ".SS")]
    shared = _shared(p)
    if shared:
        lines += [f'.SH "{_roff(SHARED_GROUP.upper())}"', *_man_options(*shared)]
    lines += [".SH EXAMPLES", ".RS", ".nf", *(_roff(e) for e in EXAMPLES[name]), ".fi", ".RE",
              ".SH SEE ALSO", ".BR registry\\-tools (1)"]
    return "\n".join(lines) + "\n"


FILES = [
    ("share/man/man1/", "these pages"),
    ("share/bash-completion/completions/registry-tools, share/zsh/site-functions/_registry-tools, "
     "share/fish/vendor_completions.d/registry-tools.fish", "the shell completions, which `registry-tools "
     "completion SHELL` also prints"),
    ("share/registry-tools/nix/", "the Nix functions: fetcher.nix (pullImage, assembleImage, imagesFromLock), "
     "build.nix (buildImage), shell.nix (buildNixShellImage, streamNixShellImage)"),
    ("share/registry-tools/schemas/cli-output.schema.json", "the JSON Schema of every --json document"),
]


def man_index(parser: argparse.ArgumentParser, summaries: dict[str, str]) -> str:
    lines = [*_th("REGISTRY-TOOLS"), ".SH NAME", "registry\\-tools \\- " + _roff(parser.description or ""),
             ".SH SYNOPSIS", ".SY registry\\-tools", "COMMAND [OPTIONS]", ".YS", ".SY registry\\-tools",
             "COMMAND \\-\\-help", ".YS", ".SH OPTIONS", *_man_options(parser, _actions(parser)[0][1]),
             ".SH COMMANDS"]
    for group, names in GROUPS.items():
        lines.append(f'.SS "{_roff(_capital(group))}"')
        for n in names:
            lines += [".TP 14n", f".B {_roff(n)}", _roff(summaries.get(n, ""))]
    lines += [".SH EXIT STATUS", _roff(EXIT_STATUS), ".SH FILES",
              "Installed under the prefix registry\\-tools is installed into (a virtual environment, ~/.local, /usr):"]
    for path, what in FILES:
        lines += [".TP", f".I {_roff(path)}", _roff(what)]
    lines += [".SH SEE ALSO", ",\n".join(f".BR registry\\-tools\\-{_roff(n)} (1)" for n in TABLE)]
    return "\n".join(lines) + "\n"


# --- shell completions ------------------------------------------------------------------------

def completion(shell: str) -> str:
    """What `registry-tools completion SHELL` prints, with a line saying so (after zsh's #compdef)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(["completion", shell])
    assert code == 0, f"registry-tools completion {shell} failed"
    from importlib.metadata import version

    note = (f"# generated by scripts/gen_docs.py: `registry-tools completion {shell}` "
            f"(argcomplete {version('argcomplete')})")
    first, _, rest = out.getvalue().partition("\n")
    return f"{first}\n{note}\n{rest}" if first.startswith("#compdef") else f"{note}\n{out.getvalue()}"


# --- all of it ------------------------------------------------------------------------------

def pages() -> dict[Path, str]:
    """Every generated file and its text."""
    parser, subs, summaries = _parsers()
    out = {DOCS / "README.md": index_markdown(parser, summaries),
           MAN / "registry-tools.1": man_index(parser, summaries)}
    for name in TABLE:
        out[DOCS / f"{name}.md"] = markdown(name, subs[name], summaries[name])
        out[MAN / f"registry-tools-{name}.1"] = man(name, subs[name], summaries[name])
    for shell, rel in SHELLS.items():
        out[COMPLETIONS / rel] = completion(shell)
    return out


def _existing() -> list[Path]:
    return sorted(p for d in (DOCS, MAN, COMPLETIONS) if d.is_dir() for p in d.rglob("*") if p.is_file())


def stale() -> list[Path]:
    """Generated files that differ from what the parser says now, missing ones, and stray ones."""
    want = pages()
    return sorted({p for p, text in want.items() if not p.exists() or p.read_text() != text}
                  | {p for p in _existing() if p not in want})


def main() -> int:
    if "--check" in sys.argv[1:]:
        bad = stale()
        for p in bad:
            print(f"stale: {p.relative_to(ROOT)}", file=sys.stderr)
        if bad:
            print("run: python3 scripts/gen_docs.py", file=sys.stderr)
        return 1 if bad else 0
    want = pages()
    for p in _existing():
        if p not in want:
            p.unlink()
    changed = 0
    for p, text in want.items():
        if not p.exists() or p.read_text() != text:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            changed += 1
    print(f"{changed} of {len(want)} files written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
