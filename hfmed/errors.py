"""Errors a user can fix.

Anything raised as :class:`UserError` reaches the user as one line on stderr and exit code 2;
the message must say what is wrong, which file or option, and what to do about it.
Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input or environment: reported as one line, exit code 2, no traceback."""
