"""Benchmarks: scripts that print numbers and write JSON. Not part of the test suite."""
