"""What `tlops run` tells a user when a KFP task fails: the error, never a line of source."""

from __future__ import annotations

from pipelines.local import task_error

TRACEBACK = """\
Traceback (most recent call last):
  File "/app/src/tlops/steps/execute.py", line 88, in execute
    result = module.run(params, io)
  File "/app/src/tlops/data/manifest.py", line 187, in scan_image_folder
    raise DataDirError(f"{root}: data directory does not exist")
tlops.data.manifest.DataDirError: data/target: data directory does not exist
\x1b[91mTask 'ingest-data' finished with status FAILURE\x1b[0m
"""


def test_a_failed_task_shows_its_error_and_no_source_line() -> None:
    found = task_error(TRACEBACK.splitlines())
    assert found == "DataDirError: data/target: data directory does not exist"


def test_a_log_without_an_exception_gives_nothing() -> None:
    assert task_error(["Task 'train' finished with status FAILURE", "raise X(...)"]) is None


def test_the_warm_runners_task_prefix_is_not_part_of_the_error() -> None:
    lines = ["    [ingest-data] " + line for line in TRACEBACK.splitlines()[:-1]]
    found = task_error(lines)
    assert found == "DataDirError: data/target: data directory does not exist"


def test_a_runs_stdout_takes_writers_that_return_nothing() -> None:
    from pipelines.local import _Streams

    written: list[str] = []

    class Console:
        def write(self, text: str) -> None:  # as some consoles' files do
            written.append(text)

    streams = _Streams(Console())
    assert streams.write("line\n") == len("line\n") and written == ["line\n"]
