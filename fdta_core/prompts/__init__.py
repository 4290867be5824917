"""Attribute specs, stratified identity plans, prompt grammar and the LLM describer."""
