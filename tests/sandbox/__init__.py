"""Sandbox tests: real kernels, bubblewrap and unisolated."""
