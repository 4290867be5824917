"""SAM-compatible age transformation (see docs/age.md)."""
