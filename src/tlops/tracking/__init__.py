"""MLflow: the run lifecycle, logging, the model registry and its aliases."""
