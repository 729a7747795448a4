"""The pipeline's steps, one module each: its declaration (``STEP``), its ``run`` and helpers.

A step module imports only what its declaration needs (its heavy libraries load inside the
functions that compute), so the pipeline, the CLI and ``tlops generate`` read every declaration
cheaply. The names are the same in params.yaml, dvc.yaml, components/ and here.
"""

from __future__ import annotations

from tlops.runner.spec import StepSpec
from tlops.steps import (
    deploy,
    detect_change,
    evaluate,
    extract_features,
    ingest_data,
    register_model,
    select_labels,
    train,
    tune,
    validate_data,
)

# every step, in the order dvc.yaml and the docs' step table list them
STEPS: tuple[StepSpec, ...] = (
    ingest_data.STEP,
    validate_data.STEP,
    extract_features.STEP,
    tune.STEP,
    train.STEP,
    evaluate.STEP,
    register_model.STEP,
    deploy.STEP,
    select_labels.STEP,
    detect_change.STEP,
)
SPECS: dict[str, StepSpec] = {spec.name: spec for spec in STEPS}


def spec_of(name: str) -> StepSpec:
    """The declaration of step ``name``.

    Raises:
        KeyError: No such step (the message lists the steps).
    """
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"no step {name!r} (steps: {', '.join(SPECS)})") from None
