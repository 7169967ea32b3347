"""traffik's benchmark suite: traffik against its peers, side by side in one run.

Run ``hatch run bench`` (``python -m benchmarks``) from the repository root; see
``python -m benchmarks --help`` and docs/performance.md.
"""
