"""The package version, in its own module: anything may import it without importing the package root."""

__version__ = "0.1.0"
