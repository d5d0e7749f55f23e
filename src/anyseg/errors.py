"""Exceptions that carry a one-line, user-facing message.

Everything the CLI reports as ``anyseg: error: ...`` (exit code 2) derives from
:class:`AnysegError`. The message must be a single line that says what was expected and
what was received, so that the CLI never needs to print a traceback.
"""

from __future__ import annotations


class AnysegError(Exception):
    """Base class of all errors that are the user's to fix (input, prompts, models)."""

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(AnysegError, ValueError):
    """A file, image, array or parameter that cannot be used."""


class PromptError(InputError):
    """A point, box or mask prompt that is malformed or outside the image."""


class ModelError(AnysegError):
    """A model name that is unknown, or weights that are missing or malformed."""


class ModelNotAvailable(ModelError):
    """A known model whose weights are not available locally and cannot be downloaded."""
