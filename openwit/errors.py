"""The one error type for user mistakes (bad input files, bad options).

The CLIs catch it, print the message and exit with status 2; it never reaches a user as a traceback.
A message says what is wrong, where (file, and row or line where it applies), and how to fix it.
"""

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A whole input is unusable: missing file, missing column, unreadable list, unwritable output."""
