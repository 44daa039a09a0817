"""Formatting shared by the report's sections: numbers, tables, ratio phrases."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["code", "factor", "num", "ratio_phrase", "short_triple", "table"]


def code(key: str) -> str:
    """An engine key as the report shows it (the "Engines" table says what each one is)."""
    return f"`{key}`"


def num(value: float | None) -> str:
    """Three significant digits, with k and M: 0.473, 46.4, 7.68k, 1.23M; n/a for None."""
    if value is None:
        return "n/a"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def factor(value: float) -> str:
    """3 significant digits, without an exponent: 1.27, 355, 1,830."""
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def ratio_phrase(ours: float, theirs: float, *, higher_is_better: bool, good: str, bad: str) -> str:
    """'4.2x faster' or '1.3x slower': how ours compares with theirs."""
    ratio = ours / theirs if higher_is_better else theirs / ours
    if ratio >= 1:
        return f"{factor(ratio)}x {good}"
    return f"{factor(1 / ratio)}x {bad}"


def short_triple(triple: str) -> str:
    """'aarch64-linux-gnu' -> 'aarch64'."""
    return triple.split("-")[0]
