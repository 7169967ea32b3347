"""The version of the traffik-starlette distribution."""

__version__ = "1.0.0"
