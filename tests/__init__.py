"""The test suite (unit, data, integration, e2e; markers in pyproject.toml)."""

import os

# The test workers share the machine's cores, and every pipeline task is a process of its own:
# one intra-op thread per process, or torch's and OpenMP's pools oversubscribe the cores and
# spin (two tiny pipeline runs side by side on 2 cores: 128 s with the default threads, 85 s
# with one). Set here, before conftest or any test imports numpy or torch; a caller's value wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
