"""Backbones, offline weights, head surgery and freezing."""
