"""Builders of tiny real-architecture models and data, shared by tests and benches (no test framework here)."""
