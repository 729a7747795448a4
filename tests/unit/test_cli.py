"""The command line: useful help everywhere, and importing tlops does nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tlops.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args,expected",
    [
        ([], ["data", "step", "run"]),
        (["data", "demo"], ["--drops", "--if-missing", "MNIST", "no-dvc"]),
        (["step"], ["ingest_data", "validate_data", "train", "register_model"]),
        (["step", "ingest_data"], ["--domain", "--dataset", "--data-version", "--params", "--set"]),
        (["step", "validate_data"], ["--dataset", "--report", "--set"]),
        (
            ["step", "train"],
            ["--dataset", "--report", "--features", "--model", "--checkpoint-root"],
        ),
        (["run"], ["--params", "--out", "--set", "--runner", "--parallel"]),
        (["retrain"], ["--params", "--out", "--set", "warm-started", "--runner", "--parallel"]),
        (["retrain-demo"], ["--workdir", "drifted"]),
        (["rollback"], ["--reason"]),
        (["schedule"], ["--pipeline", "--cron"]),
        (["step", "detect_change"], ["--dataset", "--report", "--change"]),
        (["data", "demo"], ["--drift", "--unlabeled"]),
        (["submit"], ["--host", "--set", "--param"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--help"], 0, "Usage"),
        (["run", "--params", "missing.yaml"], 1, "missing.yaml: params file not found"),
        (["run", "--parallel", "0"], 2, "--parallel"),
    ],
)
def test_the_console_script_exits_with_the_commands_code(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    # tlops.cli.main leaves with os._exit after the exit handlers: the code and output stay
    done = subprocess.run(
        [sys.executable, "-c", "from tlops.cli import main; main()", *args],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == code, done.stderr
    assert expected in done.stdout + done.stderr


def test_importing_tlops_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import os, tlops, tlops.cli, tlops.steps.ingest_data, tlops.steps.validate_data;"
        "print(sorted(os.listdir('.')), os.environ.get('GX_ANALYTICS_ENABLED'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "GX_ANALYTICS_ENABLED"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        check=True,
    )
    assert out.stdout.strip() == "[] None"
    assert (
        "great_expectations"
        not in subprocess.run(
            [sys.executable, "-c", "import sys, tlops.cli; print(list(sys.modules))"],
            text=True,
            capture_output=True,
            check=True,
        ).stdout
    )  # heavy imports wait until needed


def test_unknown_override_key_is_named(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["step", "ingest_data", "--dataset", str(tmp_path / "o"), "-S", "train.lr_typo=1"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "unknown key 'train.lr_typo'" in result.output and "lr" in result.output
    assert not (tmp_path / "o").exists()


def test_bad_override_value_is_not_blamed_on_the_params_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["step", "ingest_data", "--dataset", str(tmp_path / "o"), "-S", "train.epochs=0"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "train.epochs" in result.output and "params.yaml" not in result.output


def test_piped_output_keeps_paths_whole(make_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = make_tree("a-data-directory-with-a-long-name-" + "x" * 40)
    out = tmp_path / ("an-output-directory-with-a-long-name-" + "y" * 40)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlops.cli",
            "step",
            "ingest_data",
            "-S",
            f"data.target={root}",
            "--dataset",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        check=True,
    )
    assert str(out) in result.stdout, result.stdout  # not cut at column 80
    assert any(
        line.startswith(f"ingest_data: target {root}: ") and "data version" in line
        for line in result.stdout.splitlines()
    ), result.stdout


def test_a_typo_in_the_set_option_is_named_with_the_nearest_key(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["step", "ingest_data", "--dataset", str(tmp_path / "o"), "-S", "train.lrr=1"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "-S train.lrr=1: unknown key 'train.lrr'" in result.output
    assert "did you mean 'lr'?" in result.output and "Traceback" not in result.output
