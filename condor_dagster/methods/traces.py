"""Every method's trace registration, imported by `condor trace` before it looks an id up."""

from condor_dagster.methods.condor import trace as condor_trace

__all__ = ["condor_trace"]
