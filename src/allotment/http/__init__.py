"""HTTP edge: wire format in, service call, wire format out. Nothing else."""
