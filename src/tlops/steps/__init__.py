"""Pipeline steps: one module per step with ``run(params, io) -> StepResult``.

Each step is declared once in :mod:`tlops.steps.declarations`; :mod:`tlops.runner.execute` is
how every runner calls one. The names are the same in params.yaml, dvc.yaml, components/ and
here.
"""
