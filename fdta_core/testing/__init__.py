"""Builders of tiny real-architecture models and data, shared by tests and benches.

Never used by the product itself, and free of any test framework, so benches can import them too.
"""
