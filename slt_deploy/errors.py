"""The one exception type for mistakes a user can fix; the CLI prints it as one line, exit 2."""


class SltError(Exception):
    """A user error: bad input, a missing file, a mismatched artifact. Never a bug."""
