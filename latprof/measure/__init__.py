"""Measuring: devices, backends, the timing primitives, the interleaved scheduler, plans, the sparse sampler and the sweep."""
