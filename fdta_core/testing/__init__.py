"""Builders of tiny, random-weight models of the real architectures, for tests and benchmarks.

Everything here is deterministic (filled from seeded generators) and importable without ComfyUI.
"""
