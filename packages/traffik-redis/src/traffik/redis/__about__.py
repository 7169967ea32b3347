"""The version of the traffik-redis distribution."""

__version__ = "1.0.0"
