"""Every method's trace registration, imported by `condor trace` before it looks an id up."""

from condor_dagster.methods.augcon import trace as augcon_trace
from condor_dagster.methods.condor import trace as condor_trace

__all__ = ["augcon_trace", "condor_trace"]
