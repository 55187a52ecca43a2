"""`python -m bench` (what `make bench` runs); see bench/cli.py and BENCHMARKS.md."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
