"""Relayflow's own benchmarks (not tests): `python bench/run_all.py [--quick]`."""
