"""tlops: transfer learning of vision models as validated, tracked, versioned pipelines."""

__version__ = "0.1.0"
