"""Experiments: changes measured but NOT adopted in Relayflow (see docs/benchmarks.md).

Nothing here is used by Relayflow itself; `python bench/run_all.py --inline` measures them.
"""
