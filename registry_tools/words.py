"""How numbers read in what the commands print: a count with its noun, a size in bytes."""
from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 layer`, `0 layers`, `2 entries`; `plural` where the usual English ending is wrong."""
    if n == 1:
        return f"1 {noun}"
    if plural is None:
        plural = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{n} {plural}"


def size(n: float) -> str:
    """A size as people read it, in SI units as registries and rich show them: `512 B`, `1.2 kB`,
    `34.5 MB` (never `0.0 MB`)."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 999.95:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"
