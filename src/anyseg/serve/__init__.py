"""``anyseg serve``: an HTTP service for interactive annotation (FastAPI; see :mod:`anyseg.serve.app`)."""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """Build the FastAPI app (imports FastAPI lazily); see :func:`anyseg.serve.app.create_app`."""
    from anyseg.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)
