"""Pipeline steps: one module per step, each exposing ``run(params, inputs..., outputs...)``.

The names are the same in params.yaml, dvc.yaml, components/ and here.
"""

STEPS: tuple[str, ...] = (
    "ingest_data",
    "validate_data",
    "extract_features",
    "train",
    "evaluate",
    "register_model",
)
