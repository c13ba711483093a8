"""Errors raised by the data loaders: one type, a message that names exactly what is wrong."""

from __future__ import annotations


class DataError(ValueError):
    """A data tree or data set that is missing or malformed (the message says which and where)."""


class MissingDependencyError(DataError):
    """An optional package or data file is not installed; the message gives the install command."""
