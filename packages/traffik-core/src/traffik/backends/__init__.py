"""Storage backends: ``base`` (the contract), ``inmemory``; ``redis`` and ``memcached``
re-export the backends of the traffik-redis and traffik-memcached distributions."""

__all__: list[str] = []
