"""KFP v2 components, one per step: thin typed wrappers around ``tlops.runner.execute``.

Each ``components/<step>.py`` is generated from the step's declaration (``tlops generate``);
:func:`build_components` turns them into KFP components for a given image (set when the pipeline
is compiled). The functions run inside the project image, where tlops is installed, so they
need no ``packages_to_install``.
"""

from __future__ import annotations

import importlib
from typing import Any

from tlops.steps.declarations import STEPS


def build_components(base_image: str) -> dict[str, Any]:
    """KFP components of every declared step, running in ``base_image``.

    Args:
        base_image: The project image (``kfp.base_image`` in params.yaml).

    Returns:
        Step name -> component.
    """
    from kfp import dsl

    # The image has tlops and kfp installed: nothing is pip-installed when a task starts.
    return {
        spec.name: dsl.component(
            getattr(importlib.import_module(f"components.{spec.name}"), spec.name),
            base_image=base_image,
            install_kfp_package=False,
        )
        for spec in STEPS
    }
