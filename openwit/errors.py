"""The one error type for user mistakes (bad input files, bad options).

The CLIs catch it, print the message and exit with status 2; it never reaches a user as a traceback.
A message says what is wrong, where (file, and row or line where it applies), and how to fix it.
"""

EXIT_BAD_INPUT = 2


class InputError(Exception):
    """A whole input is unusable: missing file, missing column, unreadable list, unwritable output."""


def parse_command_line(parser, argv: list[str] | None):
    """`parser.parse_args(argv)`, with a bad command line as an InputError (exit 2) rather than argparse's own
    SystemExit; argparse has already printed what is wrong. --help still exits 0."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        if e.code:
            raise InputError("invalid command line (see usage above)") from None
        raise
