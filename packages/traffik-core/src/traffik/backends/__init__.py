"""Storage backends. ``traffik.backends.redis`` and ``.memcached`` need their distributions."""
