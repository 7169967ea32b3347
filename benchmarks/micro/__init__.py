"""Micro-benchmarks of one backend each (run as scripts; see each module's docstring)."""
