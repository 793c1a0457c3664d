"""``python -m benchmarks``: every benchmark, then ``results/summary.md`` (see run_all)."""

from .run_all import main

main()
