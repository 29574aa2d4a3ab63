"""Operator plumbing: health and readiness, Prometheus metrics, structured logs."""
