"""Labels for new target data: which images a person should label, and the audit sample."""
