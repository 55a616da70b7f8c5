"""Allotment's benchmark harness (issue 5): ``python -m bench --mode quick|full``."""
