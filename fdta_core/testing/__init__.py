"""Builders of tiny models and data for tests and benchmarks (never used by the product itself)."""
