"""Benchmarks: our service against baselines, side by side, on real processes.

Run one with ``python -m benchmarks.lookup`` (or ``reserve``, ``warmup``), or all with
``python -m benchmarks``; add ``--quick`` for a smoke run of a few seconds. Results go to
``benchmarks/results/<name>.json`` and ``<name>.md`` (``--quick`` writes under
``benchmarks/results/tmp/quick/`` so a smoke run never overwrites real figures).
"""
