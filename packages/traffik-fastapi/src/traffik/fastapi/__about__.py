"""The version of the traffik-fastapi distribution."""

__version__ = "1.0.0"
