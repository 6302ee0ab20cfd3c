"""The part of a dataset card's Markdown that is about one config.

Cards written by hfmed have one section per subset or dataset, and that section names its configs
in code spans (`` `breastmnist` ``); overview tables name every config. So the section chosen for a
config is the one whose own text (before its first sub-heading) names it and names the fewest other
configs; among equals the one with the most text of its own (the prose, not an overview table),
and it comes with its sub-sections. Any card, hfmed's or not, works: with no such section the
whole card is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Section:
    level: int
    start: int  # line index of the heading
    own_end: int  # line index of the first heading after it
    end: int  # line index of the next heading of the same or a higher level


def sections(lines: list[str]) -> list[Section]:
    heads: list[tuple[int, int]] = []  # (line, level), fenced code skipped
    fenced = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            heads.append((i, len(m.group(1))))
    out = []
    for j, (i, level) in enumerate(heads):
        own_end = heads[j + 1][0] if j + 1 < len(heads) else len(lines)
        end = next((k for k, lv in heads[j + 1 :] if lv <= level), len(lines))
        out.append(Section(level, i, own_end, end))
    return out


def for_config(markdown: str, config: str, all_configs: list[str]) -> str:
    """The card's section about ``config``, or the whole card when none is about it alone."""
    lines = markdown.splitlines()
    best: tuple[int, int, Section] | None = None
    for s in sections(lines):
        own = "\n".join(lines[s.start : s.own_end])
        named = {c for c in all_configs if f"`{c}`" in own}
        if config not in named or s.level < 2:
            continue
        key = (len(named), -len(own))
        if best is None or key < best[:2]:
            best = (*key, s)
    if best is None:
        return markdown.strip()
    s = best[2]
    return "\n".join(lines[s.start : s.end]).strip()
