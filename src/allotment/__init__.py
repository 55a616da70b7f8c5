"""Allotment: usage metering and entitlements, wire-compatible with OpenMeter's v1 API."""

__version__ = "0.1.0"
__all__ = ["__version__"]
