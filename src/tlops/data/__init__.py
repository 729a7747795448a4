"""Datasets: ImageFolder scanning, manifests, splits, data versions and the demo data."""
