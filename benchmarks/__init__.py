"""Reproducible performance runs that print JSON, Chronicle and its peers side by side."""
