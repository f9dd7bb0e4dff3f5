"""Package version, kept in a module that imports nothing so build tools can read it."""

__version__ = "0.1.0"
