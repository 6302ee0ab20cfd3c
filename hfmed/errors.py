"""Errors a user can fix, and how a library error is quoted in one line.

Anything raised as :class:`UserError` reaches the command-line user as one line on stderr and
exit code 2; the message must say what is wrong, which file or option, and what to do about it.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or environment: reported as one line, exit code 2, no traceback.

    A ``ValueError``, so that library callers catch a bad argument the ordinary way.
    """


def first_line(e: BaseException, *, with_type: bool = False, limit: int = 200) -> str:
    """The first line of an error's message (its type where it has none), to quote inside one of ours."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = lines[0][:limit] if lines else ""
    if with_type:
        return f"{type(e).__name__}: {text}".rstrip(": ")
    return text or type(e).__name__
