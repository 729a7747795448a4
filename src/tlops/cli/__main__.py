"""``python -m tlops.cli``: the ``tlops`` command without its console script.

torchrun starts each data-parallel train process this way (``tlops.runner.launch``).
"""

from tlops.cli import app

if __name__ == "__main__":
    app()
