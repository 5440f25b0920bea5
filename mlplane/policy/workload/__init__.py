"""Workload-plane decisions: which pods a Job needs, and (later) which workloads queues admit."""
