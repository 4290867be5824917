"""Face-recognition evaluation: verification benchmarks (``.bin``) under the published protocol."""
