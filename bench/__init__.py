"""Benchmarks of condor-dagster against the raw engine and the seed scripts' ways of calling it.

`make bench` (or `python -m bench`) measures every figure side by side in one run, prints a
table, writes bench/results.json and rewrites the table in BENCHMARKS.md. One module per
group of figures; bench/cli.py lists them.
"""
