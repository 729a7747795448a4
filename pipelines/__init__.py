"""KFP pipelines built from the components, compiled YAML, and the cluster helpers."""
