"""KFP v2 components, one per step: thin typed wrappers around the steps.

Each ``components/<step>.py`` is generated from the step's declaration; :func:`build_components`
turns them into KFP components for a given image (set when the pipeline is compiled).
The functions run inside the project image, where tlops is installed, so they need no
``packages_to_install``.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from components.deploy import deploy
from components.detect_change import detect_change
from components.evaluate import evaluate
from components.extract_features import extract_features
from components.ingest_data import ingest_data
from components.register_model import register_model
from components.select_labels import select_labels
from components.train import train
from components.tune import tune
from components.validate_data import validate_data

# in the order of the declarations
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ingest_data": ingest_data,
    "validate_data": validate_data,
    "extract_features": extract_features,
    "tune": tune,
    "train": train,
    "evaluate": evaluate,
    "register_model": register_model,
    "deploy": deploy,
    "select_labels": select_labels,
    "detect_change": detect_change,
}


def build_components(base_image: str) -> dict[str, Any]:
    """KFP components of every declared step, running in ``base_image``.

    Args:
        base_image: The project image (``kfp.base_image`` in params.yaml).

    Returns:
        Step name -> component.
    """
    from kfp import dsl

    # The image has tlops and kfp installed: nothing is pip-installed when a task
    # starts.
    return {
        name: dsl.component(function, base_image=base_image, install_kfp_package=False)
        for name, function in FUNCTIONS.items()
    }
