"""Load scenarios for sluiceway against a local mock upstream (``make bench``).

Not run by CI or pytest. See ``benchmarks/README.md``.
"""
