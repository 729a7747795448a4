"""Metrics, plots and the promotion gate."""
