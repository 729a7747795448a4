"""Independent tasks of a local KFP run at the same time: KFP's ``run_dag``, side by side.

:func:`run_dag_side_by_side` wraps ``kfp.local.orchestrator.dag_orchestrator.run_dag`` with the
same arguments, results and failure semantics: tasks start in KFP's own topological order as
soon as their upstream tasks succeeded, at most ``width`` at a time; after a failure no task
starts, the running ones finish, and the DAG fails with the first failed task on
``fail_stack``. A DAG with nested DAGs is left to KFP's own ``run_dag``. Used by the warm task
runner (:mod:`tlops.runner.warm`), whose dispatch lock keeps KFP's dispatch code in one thread
at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

Outputs = dict[str, Any]


class Dispatch(Protocol):
    """What the scheduler needs of the warm runner: its width and its dispatch lock."""

    side_by_side: int
    dispatch: Any  # a lock: KFP's dispatch code runs under it

    def released(self) -> contextlib.AbstractContextManager[None]:
        """Within: the dispatch lock is given up."""


def run_dag_side_by_side(sequential: Callable[..., Any], state: Dispatch) -> Callable[..., Any]:
    """KFP's ``run_dag`` (``sequential``), running independent tasks at the same time."""

    def run_dag(**kwargs: Any) -> tuple[Outputs, Any]:
        tasks = kwargs["dag_component_spec"].dag.tasks
        components = kwargs["components"]
        nested = any(
            components[spec.component_ref.name].WhichOneof("implementation") == "dag"
            for spec in tasks.values()
        )
        if nested:
            return sequential(**kwargs)  # type: ignore[no-any-return]
        return _Scheduler(state, **kwargs).run()

    return run_dag


class _Scheduler:
    """One DAG's tasks, started as their upstream tasks succeed."""

    def __init__(
        self,
        state: Dispatch,
        dag_component_spec: Any,
        dag_arguments: dict[str, Any],
        fail_stack: list[str],
        parent_io_store: Any = None,
        **dispatch: Any,  # the rest of run_dag's arguments, handed on to each task
    ) -> None:
        from kfp.local import graph_utils, io
        from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

        self.state, self.spec, self.fail_stack = state, dag_component_spec, fail_stack
        self.tasks = dag_component_spec.dag.tasks
        self.io_store = io.IOStore(parent=parent_io_store)
        arguments = OrchestratorUtils.join_user_inputs_and_defaults(
            dag_arguments=dag_arguments, dag_inputs_spec=dag_component_spec.input_definitions
        )
        for key, value in arguments.items():
            self.io_store.put_parent_input(key, value)
        self.dispatch = dispatch
        self.order = list(reversed(graph_utils.topological_sort_tasks(self.tasks)))
        self.upstream = {
            n: set(self.tasks[n].dependent_tasks) & set(self.tasks) for n in self.order
        }
        self.done: set[str] = set()
        self.running: dict[Future[tuple[Outputs, Any]], str] = {}
        self.failed: str | None = None
        self.error: BaseException | None = None

    def run(self) -> tuple[Outputs, Any]:
        """Run every task; the DAG's outputs and status, as KFP's ``run_dag`` returns them."""
        from kfp.local import status
        from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

        with self._one_logger_context(), ThreadPoolExecutor(self.state.side_by_side) as pool:
            self._start_ready(pool)
            while self.running:
                with self.state.released():
                    finished, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._finished(self.running.pop(future), future)
                self._start_ready(pool)
        if self.error is not None:
            raise self.error
        if self.failed is not None:
            self.fail_stack.append(self.failed)
            return {}, status.Status.FAILURE
        outputs = OrchestratorUtils.get_dag_outputs(
            dag_outputs_spec=self.spec.dag.outputs, io_store=self.io_store
        )
        return outputs, status.Status.SUCCESS

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        """Start the tasks whose upstream tasks succeeded, while there is room.

        None after a failure.
        """
        if self.failed is not None or self.error is not None:
            return
        started = set(self.running.values())
        ready = [
            n for n in self.order if n not in self.done | started and self.upstream[n] <= self.done
        ]
        for name in ready[: self.state.side_by_side - len(self.running)]:
            self.running[pool.submit(self._task, name)] = name

    def _task(self, name: str) -> tuple[Outputs, Any]:
        from kfp.local.orchestrator import task_executor

        with self.state.dispatch:  # KFP's dispatch is this thread's until its child runs
            return task_executor.execute_single_task(  # type: ignore[no-any-return]
                task_name=name,
                task_spec=self.tasks[name],
                io_store=self.io_store,
                fail_stack=self.fail_stack,
                **self.dispatch,
            )

    def _finished(self, name: str, future: Future[tuple[Outputs, Any]]) -> None:
        from kfp.local import status

        try:
            outputs, task_status = future.result()
        except BaseException as exc:  # re-raised once the others finished
            self.error = self.error or exc
            return
        if task_status == status.Status.FAILURE:
            self.failed = self.failed or name
        elif task_status == status.Status.SUCCESS:
            for key, output in outputs.items():
                self.io_store.put_task_output(name, key, output)
            self.done.add(name)
        else:
            self.error = self.error or ValueError(f"Got unknown task status: {task_status.name}")

    @contextlib.contextmanager
    def _one_logger_context(self) -> Iterator[None]:
        """One KFP logger context for the whole DAG.

        KFP's per-task one would swap the root logger's handlers under the tasks beside it.
        """
        from kfp.local import logging_utils

        original = logging_utils.local_logger_context
        with original():
            logging_utils.local_logger_context = contextlib.nullcontext
            try:
                yield
            finally:
                logging_utils.local_logger_context = original
