"""Every step of tlops, declared once (see :mod:`tlops.runner.spec`).

The runners are derived from these declarations: ``tlops step <name>`` (the CLI builds its
options from them), the KFP components in ``components/`` and the stages of ``dvc.yaml``
(written by ``tlops generate``), and the step table of README.md. A step's code is
``tlops.steps.<name>.run(params, io) -> StepResult``. Adding a step is that module plus one
declaration here, then ``make generate``.
"""

from __future__ import annotations

from tlops.runner.spec import Arg, Port, StepSpec, Tracking

DATASET = ("ingest_data", "dataset")
REPORT = ("validate_data", "report")
TARGET_DATASET = Port(
    "dataset", "Dataset", "Output of ingest_data.", producer=DATASET, domain="target"
)
PASSED_REPORT = Port(
    "report",
    "Artifact",
    "Output of validate_data (it must have passed).",
    producer=REPORT,
    domain="target",
)

STEPS: tuple[StepSpec, ...] = (
    StepSpec(
        name="ingest_data",
        help="Scan an ImageFolder (params `data.<domain>`) into a manifest, a data version and "
        "a snapshot of the images.",
        params=("data.{domain}", "data.target_unlabeled", "image", "ingest_data"),
        args=(
            Arg(
                "domain",
                "Which entry of params.yaml `data` to ingest (target or source).",
                "target",
            ),
            Arg(
                "data_version",
                "Expected data version (DVC md5); the step fails if the data "
                "differs. On a cluster it is also the task's cache key.",
            ),
        ),
        inputs=(),
        outputs=(Port("dataset", "Dataset", "manifest.csv, ingest.json, images/"),),
        code=(
            "tlops.data.manifest",
            "tlops.data.images",
            "tlops.data.version",
            "tlops.data.location",
            "tlops.io",
        ),
        cacheable=True,
        per_domain=True,
    ),
    StepSpec(
        name="validate_data",
        help="Validate an ingested dataset with Great Expectations (against the champion's "
        "classes once there is one); fails listing every broken rule.",
        params=("validate_data", "register_model.model_name", "tracking"),
        inputs=(Port("dataset", "Dataset", "Output of ingest_data.", producer=DATASET),),
        outputs=(
            Port("report", "Artifact", "GX results, Data Docs, validation.json, summary.md"),
            Port("data_docs", "HTML", "The Data Docs page of this validation.", view=True),
            Port("summary", "Markdown", "The validation summary.", view=True),
        ),
        code=("tlops.validate.suite", "tlops.tracking.registry"),
        # not cached: the champion's class map it checks against lives in the registry
        tracking=Tracking.FAILURE,
        per_domain=True,
    ),
    StepSpec(
        name="extract_features",
        help="Run the frozen backbone over every split and save the features.",
        params=(
            "model.backbone",
            "model.pretrained",
            "model.image_size",
            "image",
            "validate_data.classes",
            "extract_features",
            "runtime",
        ),
        inputs=(
            Port("dataset", "Dataset", "Output of ingest_data.", producer=DATASET, domain="target"),
        ),
        outputs=(Port("features", "Dataset", "<split>.npy, <split>_index.csv, features.json"),),
        code=("tlops.models.init", "tlops.models.inference", "tlops.data.tensors"),
        cacheable=True,
        resources="gpu",
    ),
    StepSpec(
        name="train",
        help="Train with the strategy train.strategy names; resumes a killed run from its last "
        "checkpoint.",
        params=(
            "model",
            "train",
            "image",
            "validate_data.classes",
            "extract_features.cache_dir",
            "detect_change.warm_start",
            "runtime",
            "tracking",
        ),
        args=(
            Arg(
                "checkpoint_root",
                "Folder for per-epoch checkpoints (a PVC on a cluster; "
                "default: under extract_features.cache_dir).",
            ),
        ),
        inputs=(
            TARGET_DATASET,
            PASSED_REPORT,
            Port(
                "features",
                "Dataset",
                "Output of extract_features (strategies that train on features).",
                producer=("extract_features", "features"),
                optional=True,
            ),
            Port(
                "source_dataset",
                "Dataset",
                "Output of ingest_data for the source domain (strategies that train on it).",
                producer=DATASET,
                domain="source",
                optional=True,
            ),
            Port(
                "source_report",
                "Artifact",
                "Output of validate_data for the source domain (it must have passed).",
                producer=REPORT,
                domain="source",
                optional=True,
            ),
            Port(
                "change",
                "Artifact",
                "Output of detect_change (retraining): warm start from the champion it names, "
                "logging into the run it opened.",
                producer=("detect_change", "change"),
                optional=True,
            ),
        ),
        outputs=(
            Port(
                "model",
                "Model",
                "model.pt, history, training curves, train.json",
                files={
                    "model.pt": "out",
                    "train.json": "out",
                    "history.json": "out",
                    "training_curves.png": "plots",
                    "history.csv": "uncached",
                },
            ),
        ),
        code=(
            "tlops.train.loop",
            "tlops.train.engine",
            "tlops.train.callbacks",
            "tlops.train.losses",
            "tlops.train.strategies",
            "tlops.train.distributed",
            "tlops.evaluate.metrics",
            "tlops.data.budget",
            "tlops.data.align",
            "tlops.models.init",
            "tlops.models.model",
            "tlops.data.tensors",
        ),
        resources="gpu",
        tracking=Tracking.OPENS,
    ),
    StepSpec(
        name="evaluate",
        help="Evaluate the model (and the champion, on the same split) on the test split.",
        params=(
            "evaluate",
            "model.backbone",
            "model.pretrained",
            "model.image_size",
            "image",
            "validate_data.classes",
            "register_model.model_name",
            "extract_features.cache_dir",
            "runtime",
            "tracking",
        ),
        inputs=(
            Port("dataset", "Dataset", "Output of ingest_data.", producer=DATASET, domain="target"),
            Port("model", "Model", "Output of train.", producer=("train", "model")),
            Port(
                "source_dataset",
                "Dataset",
                "Output of ingest_data for the source domain (domain adaptation: the distance "
                "of the domains' features before and after training).",
                producer=DATASET,
                domain="source",
                optional=True,
            ),
        ),
        outputs=(
            Port(
                "evaluation",
                "Artifact",
                "metrics.json, evaluation.json, per_class.csv, predictions.csv, plots",
                files={
                    "metrics.json": "metrics",
                    "evaluation.json": "out",
                    "comparison.md": "uncached",
                    "predictions.csv": "out",
                    "per_class.csv": "uncached",
                    "confusion_matrix.png": "plots",
                    "reliability.png": "plots",
                },
            ),
            Port("metrics", "Metrics", "Scalar test metrics.", view=True),
            Port("confusion", "ClassificationMetrics", "The confusion matrix.", view=True),
            Port("summary", "Markdown", "Candidate vs champion on the test split.", view=True),
        ),
        code=("tlops.evaluate.metrics", "tlops.evaluate.plots", "tlops.models.inference"),
        tracking=Tracking.JOINS,
    ),
    StepSpec(
        name="register_model",
        help="Register the model in MLflow (alias challenger) and promote it to champion if "
        "the gate allows.",
        params=(
            "register_model",
            "model.image_size",
            "image",
            "validate_data.classes",
            "tracking",
        ),
        inputs=(
            Port(
                "dataset",
                "Dataset",
                "Output of ingest_data (test images for the input example).",
                producer=DATASET,
                domain="target",
            ),
            Port("model", "Model", "Output of train.", producer=("train", "model")),
            Port(
                "evaluation", "Artifact", "Output of evaluate.", producer=("evaluate", "evaluation")
            ),
        ),
        outputs=(
            Port(
                "decision",
                "Artifact",
                "decision.json, summary.md",
                files={"decision.json": "uncached", "summary.md": "uncached"},
            ),
            Port("summary", "Markdown", "The decision and its reasons.", view=True),
        ),
        code=("tlops.evaluate.gate", "tlops.tracking.registry"),
        tracking=Tracking.CLOSES,
    ),
    StepSpec(
        name="detect_change",
        help="Compare the target data with the champion's: new, removed and changed images per "
        "class, drift in the champion's feature space (MMD permutation test), label shift; "
        "decide whether to retrain (params detect_change).",
        params=(
            "detect_change",
            "image",
            "register_model.model_name",
            "extract_features.cache_dir",
            "runtime",
            "tracking",
        ),
        inputs=(
            TARGET_DATASET,
            PASSED_REPORT,
        ),
        outputs=(
            Port("change", "Artifact", "change.json (decision, reasons, statistics), summary.md"),
            Port("summary", "Markdown", "The decision and its reasons.", view=True),
        ),
        code=(
            "tlops.evaluate.change",
            "tlops.evaluate.drift",
            "tlops.models.embed",
            "tlops.tracking.registry",
        ),
        tracking=Tracking.OPENS,
        returns='"true" when the data calls for a retrain, else "false".',
        dvc=False,
    ),
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
