"""KFP component ``deploy``: the step's declaration as a typed KFP signature.

Generated from the step declarations (src/tlops/steps) by `tlops generate`; do not edit.
"""

from kfp.dsl import Artifact, Input, Output


def deploy(
    params: str,
    decision: Input[Artifact],
    deployment: Output[Artifact],
) -> None:
    """Run step ``deploy`` in a KFP task.

    Serve the new champion on the cluster's InferenceService (deploy.target kserve): a canary rolled
    forward or back by its traffic; with deploy.target none, nothing.

    Args:
        params: The resolved params.yaml as JSON (a pipeline parameter).
        decision: Output of register_model (the version and whether it is the champion).
        deployment: deploy.json: what was done and why
    """
    from tlops.runner.execute import run_component
    from tlops.steps.deploy import STEP

    run_component(
        STEP,
        params,
        {
            "decision": decision,
            "deployment": deployment,
        },
    )
