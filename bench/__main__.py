"""``python -m bench``: the benchmark of issue 5. See docs/benchmarks.md."""

from bench.cli import main

raise SystemExit(main())
