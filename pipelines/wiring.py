"""A pipeline's tasks, each one's inputs wired from the step declarations.

Each input port of a step declares the step (and domain) that produces it; that is the only
place an input is wired. The pipeline functions (``training``, ``retraining``) only say which
steps run, in which order and on which domain: :meth:`Tasks.add` finds each input among the
tasks added before, and an optional input nobody produced is left out.
"""

from __future__ import annotations

from typing import Any

from tlops.runner.spec import Port
from tlops.steps import SPECS


class WiringError(ValueError):
    """A step's required input comes from a step the pipeline has not run."""


class Tasks:
    """The tasks of one pipeline, by step and domain, in the order they were added.

    Args:
        components: Step name -> KFP component.
        params: The pipeline's ``params`` parameter, given to every task.
    """

    def __init__(self, components: dict[str, Any], params: Any) -> None:
        self.components = components
        self.params = params
        self.added: list[tuple[str, Any]] = []
        self._by: dict[tuple[str, str | None], Any] = {}

    def add(self, step: str, on: str | None = None, **args: Any) -> Any:
        """Add a task of ``step`` (on domain ``on`` for a per-domain step), its inputs wired.

        Args:
            step: The step.
            on: ``target`` or ``source`` for a step declared per domain.
            **args: Its scalar arguments (and pipeline parameters it takes).

        Raises:
            WiringError: A required input's producer has no task yet.
        """
        spec = SPECS[step]
        inputs = {}
        for port in spec.inputs:
            producer = self._producer(port, on)
            if producer is None:
                if port.optional:
                    continue
                assert port.producer is not None
                raise WiringError(
                    f"step {step}: input {port.name!r} comes from {port.producer[0]}"
                    f"{f' ({port.domain or on})' if port.domain or on else ''}, "
                    "which this pipeline has not run before it"
                )
            assert port.producer is not None
            inputs[port.name] = producer.outputs[port.producer[1]]
        task = self.components[step](params=self.params, **inputs, **args)
        if spec.per_domain and on is not None:
            task.set_display_name(f"{step} {on}")
        self.added.append((step, task))
        self._by[(step, on if spec.per_domain else None)] = task
        return task

    def branch(self) -> Tasks:
        """Tasks for one branch of a condition.

        The branch sees every task added so far; the tasks added to it join :attr:`added`
        but stay invisible to the other branches.
        """
        other = Tasks(self.components, self.params)
        other.added = self.added
        other._by = dict(self._by)
        return other

    def get(self, step: str, domain: str | None = None) -> Any:
        """The task of ``step`` (on ``domain``), or None."""
        return self._by.get((step, domain))

    def _producer(self, port: Port, domain: str | None) -> Any:
        if port.producer is None:
            return None
        step = port.producer[0]
        if not SPECS[step].per_domain:
            return self.get(step)
        # a port that names no domain reads the consumer's own (validate_data: its ingest)
        return self.get(step, port.domain or domain or "target")
