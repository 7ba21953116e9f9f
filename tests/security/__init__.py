"""Security tests: each performs an attack from issue 9 for real against real processes."""
