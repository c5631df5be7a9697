"""The one base class of the errors a user can cause (a bad file, key, value or command line).

Every command of `msta.cli` ends such an error as one message on stderr and exit code 2, without a traceback (the
traceback goes to the run's log, or to stderr with `--debug`). The library raises subclasses named for what is wrong
(`ConfigError`, `AnnotationError`, `PromptError`, ...); an error that is not a `UserError` is a bug in msta and keeps
its traceback. A message names the file, key or value and says how to fix it.
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user gave (a file, a config key or value, a command-line argument) is wrong.

    The message alone must be enough to fix it: what is wrong, where (file, key, value), and what to do.
    """


class UsageError(UserError):
    """A command-line argument is wrong or missing (a combination of flags, an empty list, a value out of range)."""
