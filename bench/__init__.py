"""The benchmarks: programs that print figures (docs/performance.md), run as modules from the
repository root: ``python -m bench.web_load``."""
