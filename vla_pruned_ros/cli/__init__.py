"""Console entry points (the vla-* tools)."""
