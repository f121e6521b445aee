"""Errors a user can cause: bad paths, bad files, bad options.

Every such error is a :class:`FaceSphereError`; the CLI prints its message without a traceback and exits non-zero.
"""

from __future__ import annotations


class FaceSphereError(Exception):
    """Base class of every user-facing facesphere error."""


class UnknownNameError(FaceSphereError, KeyError):
    """An unknown registry name or option; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidOptionError(FaceSphereError, ValueError):
    """An option with a valid name but an invalid value."""


class DataError(FaceSphereError):
    """A data file that cannot be read: the message names the file (and record) and the problem."""


class UnsafePickleError(DataError):
    """A pickle that tries to load something other than plain data."""
