"""Small facts about SQL text that both the magics and the readers need."""

from __future__ import annotations


def end_of_block_comment(text: str, start: int) -> int:
    """The offset just after the ``/* ... */`` comment opening at ``start`` (they nest in SQL)."""
    depth, i = 1, start + 2
    while depth and i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i
