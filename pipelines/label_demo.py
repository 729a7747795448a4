"""``make label-demo``: new target data arrives unlabeled, and a few labels close the gap.

In a folder of its own (git, DVC, MLflow store, params.yaml), every step a real command:

1. drop 1 of the target (labeled), ``dvc add`` + commit -> ``tlops retrain``: the champion;
2. the drifted drop (inverted contrast, a new scanner) arrives **unlabeled** -> retrain: drift
   detected, the new images hold no label -> adapt without labels (``mcc``): registered as the
   challenger and held; ``select_labels`` picks 10 images per class and a 100-image audit;
3. Label Studio, started for the demo on loopback from ``.venv-labelstudio``: ``tlops labels
   push`` sends the round, a scripted annotator answers through Label Studio's own API from
   the demo's ground truth, ``tlops labels pull`` writes the labeled drop (``dvc add``);
4. retrain with the drop: the held model is fine-tuned on the labels and gated on the audit.

The story ends with a table: accuracy on the audit (labeled images of the new data, never
picked for being hard) of the model before, after adaptation and after the labels, and the
labels each one cost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipelines.retrain_demo import _read, _setup, _sh

PER_CLASS, AUDIT = 10, 100  # the labeling round: 10 selected per class, and the audit


@dataclass
class Row:
    """One model of the story, scored on the audit."""

    stage: str
    version: str
    aliases: str
    accuracy: float
    labels: int  # target labels spent on the new data to get it


def _params(workdir: Path, **data: str) -> None:
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["data"].update(data)
    params["select_labels"].update({"budget": PER_CLASS * 10, "audit_size": AUDIT})
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _retrain(workdir: Path, name: str, echo: Callable[[str], None]) -> Path:
    run_dir = workdir / "runs" / name
    _sh(workdir, "tlops", "retrain", "--out", str(run_dir.relative_to(workdir)))
    (found,) = run_dir.glob("kfp/*/detect-change/change/change.json")
    change = _read(found)
    echo(f"    detect_change: {change['action']}: {change['reasons'][0]}")
    for decision in sorted(run_dir.glob("kfp/*/register-model*/decision/decision.json")):
        made = _read(decision)
        echo(f"    v{made['version']}: {'; '.join(made['reasons'][:2])}")
    return run_dir


def _commit(workdir: Path, what: str, *paths: str) -> None:
    _sh(workdir, sys.executable, "-m", "dvc", "add", "-q", *paths)
    _sh(workdir, "git", "add", "-A")
    _sh(workdir, "git", "commit", "-qm", what)


def _label_round(workdir: Path, selection: Path, venv: Path, echo: Callable[[str], None]) -> int:
    """Push the round to a Label Studio started here, answer it, pull the drop; labels spent."""
    from tlops.data.demo import unlabeled_truth
    from tlops.labeling.server import StudioServer
    from tlops.labeling.studio import Studio

    port = _free_port()
    server = StudioServer(venv, workdir / ".labelstudio", port)
    log = workdir / "label-studio.log"
    process = server.start(log)
    try:
        echo(f"    Label Studio on {server.url} (first start: a minute or two)")
        server.wait(process, log)
        env = ("--url", server.url, "--token", server.token)
        echo("    " + _sh(workdir, "tlops", "labels", "push", str(selection), *env).strip())
        studio = Studio(server.url, server.token)
        project = studio.find(f"{_model_name(workdir)} labels")
        assert project is not None
        tasks = studio.export(project)
        for task in tasks:  # the annotator: the demo's ground truth, through Label Studio's API
            studio.annotate(int(task["id"]), unlabeled_truth(task["data"]["file"]))
        echo(f"    the scripted annotator labeled {len(tasks)} tasks in Label Studio")
        echo("    " + _sh(workdir, "tlops", "labels", "pull", "data/labeled", *env).strip())
        return len(tasks)
    finally:
        StudioServer.stop(process)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model_name(workdir: Path) -> str:
    params = yaml.safe_load((workdir / "params.yaml").read_text(encoding="utf-8"))
    return str(params["register_model"]["model_name"])


def run_story(
    workdir: Path, params_file: Path, venv: Path, echo: Callable[[str], None] = print
) -> list[Row]:
    """Tell the story in ``workdir`` (replaced); the models of the table, oldest first."""
    from tlops.data.demo import write_unlabeled

    if not (venv / "bin" / "label-studio").is_file():
        raise FileNotFoundError(f"{venv}: Label Studio is not installed; run `make label-studio`")
    workdir = workdir.resolve()  # every command runs inside it: paths to it must be absolute
    _setup(workdir, params_file)
    with (workdir / ".gitignore").open("a", encoding="utf-8") as ignore:
        ignore.write(".labelstudio/\nlabel-studio.log\n")  # Label Studio's own state
    echo("[1/4] drop 1, labeled")
    _sh(workdir, "tlops", "data", "demo", "--drops", "1")
    _sh(workdir, "git", "add", "-A")
    _sh(workdir, "git", "commit", "-qm", "data: drop 1")
    _retrain(workdir, "1-drop-1", echo)
    echo("[2/4] the drifted drop arrives unlabeled")
    count = write_unlabeled(workdir / "data" / "unlabeled", drift=True)
    _params(workdir, target_unlabeled="data/unlabeled")
    _commit(workdir, f"data: {count} unlabeled images", "data/unlabeled")
    adapted = _retrain(workdir, "2-unlabeled", echo)
    (selection,) = adapted.glob("kfp/*/select-labels*/selection")
    echo("[3/4] the round in Label Studio")
    spent = _label_round(workdir, selection, venv, echo)
    _params(workdir, target_labeled="data/labeled")
    _sh(workdir, "git", "add", "-A")
    _sh(workdir, "git", "commit", "-qm", f"data: {spent} labels from Label Studio")
    echo("[4/4] retrain with the labels")
    _retrain(workdir, "3-labeled", echo)
    return _table(workdir, spent)


def _table(workdir: Path, spent: int) -> list[Row]:
    """Every version of the story scored on the audit: the labeled test images of the drop."""
    import mlflow

    from tlops.config import load_params
    from tlops.tracking.serving import load_classifier

    params = load_params(workdir / "params.yaml")
    audit = sorted((workdir / "data" / "labeled" / "test").glob("*/*.png"))
    truth = [p.parent.name for p in audit]
    uri = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = params.register_model.model_name
    stages = ("before (the champion of drop 1)", "after adaptation (no label)", "after the labels")
    rows = []
    for stage, version in zip(stages, ("1", "2", "3"), strict=True):
        classifier = load_classifier(f"models:/{name}/{version}", params.image)
        answer = classifier.answer(
            classifier.probabilities(classifier.prepare([p.read_bytes() for p in audit]))
        )
        accuracy = sum(a == t for a, t in zip(answer["class"], truth, strict=True)) / len(audit)
        aliases = ",".join(sorted(client.get_model_version(name, version).aliases))
        rows.append(Row(stage, version, aliases, accuracy, spent if version == "3" else 0))
    return rows
