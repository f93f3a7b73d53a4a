"""Typed errors with messages a clerk can act on.

Every message says what is wrong and where (file, key, column, row) in words an intake clerk
understands; the CLI prints the message without a traceback and the service maps it to a 4xx.
"""

from __future__ import annotations


class TriageError(Exception):
    """Base class: something the user can fix (bad file, bad config, missing model)."""


class ConfigError(TriageError):
    """A configuration file is missing, unreadable or inconsistent."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"配置文件 {file} 的 {key} 有误：{problem}")


class InputFileError(TriageError):
    """An input file (or query) cannot be read as a table (unknown extension, missing column, encoding)."""


class ModelError(TriageError):
    """A model directory is missing, incomplete, or was built for different labels."""


class TrainingDataError(TriageError):
    """The labelled data cannot train a model (one label only, too few rows)."""


class OutputFileError(TriageError):
    """An output cannot be written as asked (existing table, too many rows for a workbook)."""


class ResumeError(TriageError):
    """A work directory left by an interrupted run belongs to a different input, model or options."""


class UsageError(TriageError):
    """A command-line option that does not apply to what was asked (refused rather than ignored)."""
