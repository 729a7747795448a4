"""Training loops and strategies."""
