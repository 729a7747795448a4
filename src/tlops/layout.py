"""The files inside the directories that travel between steps (one place, read by all).

A step reads another step's output by these names, never by importing that step.
"""

# ingest_data -> dataset
MANIFEST_FILE = "manifest.csv"
INGEST_FILE = "ingest.json"
IMAGES_DIR = "images"
LABELED_DIR = (
    "_labeled"  # data.target_labeled's images (labeled drops), under images/ and in the manifest
)
UNLABELED_DIR = "_unlabeled"  # data.target_unlabeled's images, under images/ and in the manifest
# validate_data -> report
VALIDATION_FILE = "validation.json"
MESSAGE_FILE = "message.txt"  # a failed validation's message, as the step raised it
SUMMARY_FILE = "summary.md"
DOCS_DIR = "data_docs"
# extract_features -> features
FEATURES_FILE = "features.json"
# train -> model
MODEL_FILE = "model.pt"
# a domain adaptation run's source_only model on the same data and budget (train.da.reference)
REFERENCE_FILE = "reference.pt"
TRAIN_FILE = "train.json"
# evaluate -> evaluation
METRICS_FILE = "metrics.json"
EVALUATION_FILE = "evaluation.json"
# register_model -> decision
DECISION_FILE = "decision.json"
# detect_change -> change
CHANGE_FILE = "change.json"

TUNED_FILE = "tuned.json"  # tune: the best params as train overrides, every trial
# register_model: the training manifest logged with each model (what detect_change compares with)
MANIFEST_ARTIFACT = "data/manifest.csv"
# train -> the console: the line each epoch writes on stderr (`tlops run` echoes it from KFP's log)
PROGRESS_PREFIX = "train: epoch "
TRIAL_PREFIX = "tune: trial "  # the tune step's line per trial, echoed as progress too
NUMERICS_CACHE = "numerics.json"  # the numerics calibration's cache, in the cache folder
