"""The package version (one place; the sweep store records it)."""

__version__ = "0.1.0"
