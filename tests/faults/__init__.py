"""Fault, bad-input and load tests: things broken on purpose (issue 8)."""
