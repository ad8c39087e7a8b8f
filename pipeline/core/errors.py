"""Errors graft raises on bad input. Each message names the file, row or key and the fix."""

from __future__ import annotations


class GraftError(Exception):
    """Base class: an expected failure the CLI reports without a traceback."""


class ParamsError(GraftError):
    """params.yaml is malformed: an unknown key, a wrong type or an out-of-range value."""


class DataError(GraftError):
    """The raw data cannot be read: missing path, wrong columns, empty folder."""


class DataValidationError(GraftError):
    """The validation suite failed at the dataset level, or on rows with `on_bad_rows: fail`."""

    def __init__(self, message: str, report_path: str | None = None,
                 summary: dict | None = None):
        super().__init__(message)
        self.report_path = report_path
        self.summary = summary


class MissingInput(GraftError):
    """A stage's input (another stage's output) does not exist yet."""


class ModelNotFound(GraftError):
    """No exported model (or no champion) where one was expected."""
