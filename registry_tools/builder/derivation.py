"""Nix derivations (`.drv` files) as Nix writes them: the ATerm `Derive(...)` form.

    Derive([(output, path, hashAlgo, hash)...], [(inputDrv, [output...])...], [inputSrc...],
           system, builder, [arg...], [(name, value)...])

Read here without Nix (`nix show-derivation` prints the same as JSON), so a derivation can be
read where no Nix database answers, such as inside a Nix build. A file that is not this form,
or is larger than any derivation, is bad input in one line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from registry_tools.errors import UsageError

MAX_DRV = 64 << 20  # the largest .drv read (nixpkgs' biggest are a few MiB)
T = TypeVar("T")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


@dataclass(frozen=True)
class Derivation:
    path: str  # where it was read from
    outputs: dict[str, str]  # output name -> store path ("" for a content-addressed output)
    input_drvs: dict[str, tuple[str, ...]]  # .drv path -> the outputs of it used
    input_srcs: tuple[str, ...]
    system: str
    builder: str
    args: tuple[str, ...]
    env: dict[str, str]

    @property
    def name(self) -> str:
        return self.env.get("name") or os.path.basename(self.path).split("-", 1)[-1].removesuffix(".drv")

    @property
    def store_dir(self) -> str:
        return os.path.dirname(self.path)


class _Reader:
    def __init__(self, text: str, where: str):
        self.text, self.at, self.where = text, 0, where

    def fail(self, wanted: str) -> UsageError:
        return UsageError(f"{self.where}: not a Nix derivation (expected {wanted} at byte {self.at})")

    def take(self, literal: str) -> None:
        if not self.text.startswith(literal, self.at):
            raise self.fail(repr(literal))
        self.at += len(literal)

    def string(self) -> str:
        self.take('"')
        out: list[str] = []
        while True:
            end = self.text.find('"', self.at)
            slash = self.text.find("\\", self.at, end if end >= 0 else None)
            if end < 0:
                raise self.fail("the end of a string")
            if slash < 0:
                out.append(self.text[self.at:end])
                self.at = end + 1
                return "".join(out)
            out.append(self.text[self.at:slash])
            escaped = self.text[slash + 1:slash + 2]
            out.append(_ESCAPES.get(escaped, escaped))
            self.at = slash + 2

    def items(self, opening: str, closing: str, item: Callable[[], T]) -> list[T]:
        """`opening item, item... closing`, each item read by `item`."""
        self.take(opening)
        out: list[T] = []
        if self.text.startswith(closing, self.at):
            self.at += 1
            return out
        while True:
            out.append(item())
            if self.text.startswith(closing, self.at):
                self.at += 1
                return out
            self.take(",")

    def strings(self) -> list[str]:
        return self.items("[", "]", self.string)

    def tuple_of(self, *parts: Callable[[], Any]) -> Callable[[], list[Any]]:
        def read() -> list[Any]:
            self.take("(")
            values: list[Any] = []
            for i, part in enumerate(parts):
                if i:
                    self.take(",")
                values.append(part())
            self.take(")")
            return values
        return read


def parse_derivation(text: str, path: str) -> Derivation:
    r = _Reader(text, path)
    r.take("Derive(")
    outputs = r.items("[", "]", r.tuple_of(r.string, r.string, r.string, r.string))
    r.take(",")
    inputs = r.items("[", "]", r.tuple_of(r.string, r.strings))
    r.take(",")
    srcs = r.strings()
    r.take(",")
    system = r.string()
    r.take(",")
    builder = r.string()
    r.take(",")
    args = r.strings()
    r.take(",")
    env = r.items("[", "]", r.tuple_of(r.string, r.string))
    r.take(")")
    if r.at != len(text):
        raise r.fail("the end of the file")
    return Derivation(path, {o[0]: o[1] for o in outputs}, {i[0]: tuple(i[1]) for i in inputs}, tuple(srcs),
                      system, builder, tuple(args), {e[0]: e[1] for e in env})


def read_derivation(path: str) -> Derivation:
    """The derivation at `path` (a `.drv` file)."""
    if not path.endswith(".drv"):
        raise UsageError(f"{path} is not a derivation (a .drv file; nix-instantiate prints its path)")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DRV + 1)
    except OSError as e:
        raise UsageError(f"cannot read the derivation {path}: {e.strerror}") from None
    if len(data) > MAX_DRV:
        raise UsageError(f"{path}: larger than {MAX_DRV >> 20} MiB: not a derivation")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a Nix derivation (not UTF-8 text)") from None
    return parse_derivation(text, path)
