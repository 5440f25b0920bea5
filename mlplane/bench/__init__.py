"""Benchmarks: each runs with one command and compares against a baseline or peer in the same run."""
