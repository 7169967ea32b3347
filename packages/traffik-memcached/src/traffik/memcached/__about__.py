"""The version of the traffik-memcached distribution."""

__version__ = "1.0.0"
