"""The fastload benchmark suite: loaders compared on the same work over a parameter grid.

``python benchmarks/run.py`` is the command; the pieces are importable for tests:

* ``data``: the generated ImageNet-like sample set, its LMDB/HDF5 stores, the decode ceiling.
* ``loaders``: one adapter per loader compared, registered by name.
* ``harness``: one configuration measured in its own process (throughput, latency, memory, CPU).
* ``suite``: the grid of configurations and the subprocess that runs each one.
* ``report``: the terminal table, JSON, CSV and plots.
"""
