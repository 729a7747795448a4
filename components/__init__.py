"""KFP v2 components, one per step: thin typed wrappers around ``tlops.steps.<step>.run``.

Each file holds the component's Python function; :func:`build_components` turns them into KFP
components for a given image (set when the pipeline is compiled). The functions run inside the
project image, where tlops is installed, so they need no ``packages_to_install``.
"""

from __future__ import annotations

from typing import Any

from components.evaluate import evaluate
from components.extract_features import extract_features
from components.ingest_data import ingest_data
from components.register_model import register_model
from components.train import train
from components.validate_data import validate_data

FUNCTIONS = {
    "ingest_data": ingest_data,
    "validate_data": validate_data,
    "extract_features": extract_features,
    "train": train,
    "evaluate": evaluate,
    "register_model": register_model,
}


def build_components(base_image: str) -> dict[str, Any]:
    """KFP components of every step, running in ``base_image``.

    Args:
        base_image: The project image (``kfp.base_image`` in params.yaml).

    Returns:
        Step name -> component.
    """
    from kfp import dsl

    # The image has tlops and kfp installed: nothing is pip-installed when a task starts.
    return {
        name: dsl.component(func, base_image=base_image, install_kfp_package=False)
        for name, func in FUNCTIONS.items()
    }
