"""Errors that carry a message for the user.

`run.py` turns any `SuiteError` into one line on stderr and a non-zero exit, without a
traceback. Raise them for problems the user can fix (a missing file, a malformed CSV, a bad
option), never for bugs.
"""


class SuiteError(Exception):
    """A problem the user can fix; the message names the file or option and the problem."""


class DataError(SuiteError):
    """Missing, malformed or unreadable data (annotations, audio, cache, checkpoint)."""


class ConfigError(SuiteError):
    """An option or combination of options that cannot work (e.g. too few Mel frames)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a stage of the command; `message` says what is kept and how to continue."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
