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


class RunStopped(SystemExit):
    """The run stopped before its end for an outside reason; `message` says what and how to resume.

    A `SystemExit` (with the exit status as its code), so that code which stops on Ctrl-C or on
    Lightning's `SIGTERMException` (a sweep requeues its trial) stops on it too, and no
    `except Exception` on the way swallows it.
    """

    def __init__(self, message: str, code: int):
        super().__init__(code)
        self.message = message


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a stage of the command; `message` says what is kept and how to continue."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
