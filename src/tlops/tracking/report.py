"""What a run and a model version say about themselves in the MLflow UI.

A reviewer opens a run and should not have to dig: its name says what was trained on which
data (strategy, backbone, data version, a short id), its description (MLflow's
``mlflow.note.content`` tag, shown as Markdown on the run page) gives the decision and its
reasons, the candidate-vs-champion table and the plots, and the key plots sit at the top of the
run's artifacts (:data:`KEY_ARTIFACTS`), where the compare view finds them for every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DESCRIPTION_TAG = "mlflow.note.content"
RUN_NAME_TAG = "mlflow.runName"
# what evaluate and register_model put at the root of a run's artifacts (the compare view
# shows common top-level artifacts side by side); everything else stays under its step
KEY_ARTIFACTS = (
    "confusion_matrix.png",
    "reliability.png",
    "per_class.csv",
    "champion_confusion_matrix.png",
    "decision.json",
)
TABLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "ece")


def run_name(
    strategy: str, backbone: str, data_version: str | None, run_id: str, release: bool
) -> str:
    """``release #a81f03 · finetune · tf_efficientnet_lite0 · data 3f2a9c1e``.

    What tells a run from its neighbours comes first, because MLflow's runs list cuts names
    at about 28 characters: a release or an experiment (``exp``), its id, then what it trained.
    """
    parts = [f"{'release' if release else 'exp'} #{run_id[:6]}", strategy]
    parts.append(backbone.split(":")[-1].split("/")[-1])
    if data_version:
        parts.append(f"data {data_version[:8]}")
    return " · ".join(parts)


def artifact_url(run_id: str, path: str) -> str:
    """A link the MLflow UI resolves from any of its pages (its own artifact endpoint)."""
    return f"get-artifact?path={path}&run_uuid={run_id}"


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def metrics_table(candidate: dict[str, Any], champion: dict[str, Any] | None, label: str) -> str:
    """Candidate vs champion as a Markdown table (with the difference when both exist)."""
    header = ["metric", "candidate"] + ([label, "Δ"] if champion else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in TABLE_METRICS:
        mine = candidate.get(key)
        row = [key, _number(mine)]
        if champion:
            theirs = champion.get(key)
            delta = "-" if mine is None or theirs is None else f"{float(mine) - float(theirs):+.4f}"
            row += [_number(theirs), delta]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_description(
    *,
    headline: str,
    reasons: Sequence[str],
    evaluation: dict[str, Any],
    trained: dict[str, Any],
    run_id: str,
    plots: Sequence[str],
) -> str:
    """The Markdown description of a finished training run.

    Args:
        headline: The decision in one line (``tlops-digits v3: PROMOTED to champion``).
        reasons: The gate's reasons.
        evaluation: ``evaluate``'s evaluation.json.
        trained: ``train``'s train.json.
        run_id: The run (for the plot links).
        plots: Top-level artifact paths of the plots to show.
    """
    champion = evaluation.get("champion") or None
    label = f"champion v{champion['version']}" if champion else "champion"
    overall = evaluation.get("overall", {})
    budget = trained.get("target_labels", "all")
    start = trained.get("init") or trained.get("backbone")
    lines = [
        f"### {headline}",
        "",
        *(f"- {reason}" for reason in reasons),
        "",
        f"**Model**: `{trained.get('strategy')}` from `{start}`, label budget {budget}, "
        f"best epoch {best_epoch_text(trained)} "
        f"(chosen on the {trained.get('selection', 'target val')} split)",
        "",
        f"**Data**: version `{evaluation.get('data_version')}`, "
        f"{overall.get('n_test', '?')} test images",
        "",
        f"**Test split** ({evaluation.get('champion_note', '')}):",
        "",
        metrics_table(overall, champion["metrics"] if champion else None, label),
        "",
    ]
    if plots:
        lines += ["**Plots** (also under Artifacts):", ""]
        lines += [f"![{path}]({artifact_url(run_id, path)})" for path in plots]
    return "\n".join(lines).rstrip() + "\n"


def version_description(
    headline: str, reasons: Sequence[str], primary: str, candidate: Any, champion: Any
) -> str:
    """The Markdown description of a registered model version: the decision, in short."""
    against = "" if champion is None else f" (champion: {_number(champion)})"
    # plain text first: the registry's lists show the description's first characters raw
    lines = [
        f"{headline}: test {primary} {_number(candidate)}{against}",
        "",
        *(f"- {reason}" for reason in reasons),
    ]
    return "\n".join(lines) + "\n"


# MLflow 3 opens an experiment in its GenAI views unless told it is model training
TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI's model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def best_epoch_text(trained: dict[str, Any]) -> str:
    """train.json's best epoch (counted from 1, as everything counts epochs), of how many ran.

    ``7 of 8``; ``-`` when none was recorded.
    """
    best = trained.get("best_epoch")
    if not isinstance(best, int) or best < 1:
        return "-"
    ran = trained.get("epochs_run")
    return f"{best} of {ran}" if ran else str(best)
