"""``make retrain-demo``: the retraining story on the embedded demo data, every step a real run.

In a folder of its own (its own git repository, DVC, MLflow store and params.yaml), as a user
would do it by hand:

1. drop 1 of the target data, ``dvc add`` + ``git commit`` -> ``tlops retrain``: no champion
   yet, so it trains; the first champion;
2. drop 2 added, committed -> retrain: new images (and the drift test) decide; promoted or not,
   with the gate's reasons;
3. the same command again, nothing committed -> skipped, "no new data";
4. the drifted drop (inverted contrast) added, committed -> drift detected -> retrain.

Each step runs the ``tlops`` command line in a subprocess, and the story ends with a table of
model versions, aliases, data versions, drift p-values and the primary metric.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

STORY = (
    ("drop 1", ["--drops", "1"], True),
    ("drop 2 added", ["--drops", "2"], True),
    ("nothing new", None, False),
    ("drifted drop added", ["--drops", "2", "--drift"], True),
)


@dataclass
class Chapter:
    """One step of the story and what came of it."""

    name: str
    data_version: str
    retrain: bool
    reasons: list[str]
    why: str  # the reasons that decided, short
    drift_p: float | None
    version: str | None
    promoted: bool | None
    aliases: str
    metric: float | None
    champion_metric: float | None
    gate_reasons: list[str]


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env["COLUMNS"] = "200"
    return env


def _sh(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        args, cwd=workdir, env=_env(workdir), text=True, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"retrain-demo: `{' '.join(args)}` failed ({result.returncode}) in {workdir}\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def _setup(workdir: Path, params_file: Path) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    params = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (workdir / ".gitignore").write_text("mlflow.db\nmlartifacts/\n.cache/\nruns/\n")
    _sh(workdir, "git", "init", "-q")
    _sh(workdir, "git", "config", "user.email", "demo@tlops.invalid")
    _sh(workdir, "git", "config", "user.name", "tlops retrain-demo")
    _sh(workdir, sys.executable, "-m", "dvc", "init", "-q")
    _sh(workdir, "git", "add", "-A")
    _sh(workdir, "git", "commit", "-qm", "a project with tlops' params")


def _read(path: Path) -> dict[str, Any]:
    import json

    return dict(json.loads(path.read_text(encoding="utf-8")))


def _chapter(name: str, run_dir: Path) -> Chapter:
    changes = sorted(run_dir.glob("kfp/*/detect-change/change/change.json"))
    if not changes:
        raise RuntimeError(f"retrain-demo: {run_dir} holds no detect_change output")
    change = _read(changes[-1])
    decisions = sorted(run_dir.glob("kfp/*/register-model/decision/decision.json"))
    decision = _read(decisions[-1]) if decisions else None
    drift = change.get("drift") or {}
    reasons = list(change["reasons"])
    decisive = reasons[: change.get("triggers", 0)] or reasons[:1]
    why = "; ".join(reason.split(" (")[0] for reason in decisive)
    if not change["retrain"]:
        why = why.split(":")[0]
    return Chapter(
        name,
        str(change["data_version"]),
        bool(change["retrain"]),
        reasons,
        why,
        drift.get("p_value"),
        decision["version"] if decision else None,
        decision["promote"] if decision else None,
        ",".join(decision["aliases"]) if decision else "",
        decision["candidate"] if decision else None,
        decision["champion"] if decision else None,
        list(decision["reasons"]) if decision else [],
    )


def run_story(
    workdir: Path, params_file: Path, echo: Callable[[str], None] = print
) -> list[Chapter]:
    """Tell the story in ``workdir`` (replaced); returns one :class:`Chapter` per step."""
    _setup(workdir, params_file)
    chapters = []
    for index, (name, demo_args, commit) in enumerate(STORY, start=1):
        echo(f"[{index}/{len(STORY)}] {name}")
        if demo_args is not None:
            _sh(workdir, "tlops", "data", "demo", *demo_args)
        if commit:
            _sh(workdir, "git", "add", "data")
            _sh(workdir, "git", "commit", "-qm", f"data: {name}")
            rev = _sh(workdir, "git", "rev-parse", "--short", "HEAD").strip()
            echo(f"    committed the data (git {rev}, data/target.dvc)")
        run_dir = Path("runs") / f"{index}-{name.replace(' ', '-')}"
        _sh(workdir, "tlops", "retrain", "--out", str(run_dir))
        chapter = _chapter(name, workdir / run_dir)
        verdict = "retrain" if chapter.retrain else "skipped"
        echo(f"    detect_change: {verdict}: {chapter.reasons[0]}")
        if chapter.version is not None:
            outcome = "PROMOTED to champion" if chapter.promoted else "not promoted"
            echo(f"    v{chapter.version} {outcome}: {'; '.join(chapter.gate_reasons)}")
        chapters.append(chapter)
    return chapters


def registry_now(workdir: Path) -> list[tuple[str, list[str], str]]:
    """Every version of the demo's model: (version, aliases, data version), oldest first."""
    import mlflow

    uri = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = yaml.safe_load((workdir / "params.yaml").read_text())["register_model"]["model_name"]
    found = client.search_model_versions(f"name='{name}'")
    # search results carry no aliases: read each version itself
    versions = [client.get_model_version(name, v.version) for v in found]
    return [
        (str(v.version), sorted(v.aliases), str(v.tags.get("data_version", "?")))
        for v in sorted(versions, key=lambda v: int(v.version))
    ]
