"""The version of the traffik-core distribution."""

__version__ = "1.0.0"
