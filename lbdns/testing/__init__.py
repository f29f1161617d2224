"""Harness for tests and benchmarks (not used by the server)."""
