"""Step ``deploy``: serve a newly promoted champion, as a canary rolled forward or back.

After ``register_model`` in both pipelines. With ``deploy.target: none`` (the embedded default:
no cluster) it says so in one line and does nothing else. With ``kserve`` and a version the
gate made champion, it updates the InferenceService ``deploy.name`` through the Kubernetes API
(:mod:`tlops.serving.deploy`):

* no service yet: created with the version; a service already serving it: left alone;
* ``deploy.canary_percent`` 0 (or 100): the version replaces the served one at once;
* otherwise the version takes that share of the requests (``canaryTrafficPercent``) for
  ``deploy.watch_s``; the predictors record what each version answered, and
  :func:`tlops.evaluate.rollout.judge_canary` rolls it forward (all traffic) or back (the
  served version restored, and the registry's ``champion`` alias with it).

A canary that never becomes ready is rolled back. The decision, its reasons and each
version's figures go to the MLflow run (tags ``deploy.*``, ``deploy.json``) and the output
``deployment``. An API that refuses or does not answer fails the step with what it said.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from tlops.config import OBJECT_STORE_SCHEMES, Params, Resources, StrategyParams
from tlops.evaluate.rollout import CanaryPolicy
from tlops.io import atomic_dir, read_json, write_json
from tlops.layout import DECISION_FILE
from tlops.runner.spec import Port, StepIO, StepResult, StepSpec, Tracking

if TYPE_CHECKING:
    from tlops.evaluate.rollout import Rollout, ServedFigures
    from tlops.serving.deploy import Cluster, ServiceSpec

DEPLOY_FILE = "deploy.json"


class DeployParams(StrategyParams):
    """``deploy`` (declared here, held in params.yaml)."""

    target: Literal["none", "kserve"]  # none: no cluster configured; the step does nothing
    name: str  # the InferenceService
    namespace: str | None  # None: the namespace the task runs in
    image: str  # the serving image (infra/docker/Dockerfile, target serve)
    service_account: str | None
    canary_percent: int = Field(ge=0, le=100)  # 0 or 100: no canary, all traffic at once
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    resources: Resources
    api_timeout_s: float = Field(gt=0.0)  # each Kubernetes API call
    ready_timeout_s: float = Field(gt=0.0)  # the new revision must be ready within this
    watch_s: float = Field(ge=0.0)  # how long the canary is watched before the decision
    poll_s: float = Field(gt=0.0)
    policy: CanaryPolicy


def run(params: Params, io: StepIO) -> StepResult:
    """Deploy the champion ``register_model`` promoted, if any, on the configured cluster.

    Args:
        params: Resolved params (reads ``deploy``, ``serve``, ``kfp``, ``tracking``).
        io: Input ``decision`` (register_model's); output ``deployment`` (``deploy.json``).

    Returns:
        The console line (what was done, and why), the output's metadata.

    Raises:
        ValueError: A canary whose traffic nobody can read (``serve.record.uri`` is not an
            object store prefix the pods and this task share).
        tlops.serving.deploy.DeployError: The Kubernetes API refused or did not answer.
    """
    cfg: DeployParams = params.section("deploy")
    decision = read_json(io.inputs["decision"] / DECISION_FILE)
    if cfg.target == "none":
        return _done(io, params, {"action": "none", "version": decision.get("version")}, (
            "deploy: no cluster configured (deploy.target: none): nothing deployed"
        ))  # fmt: skip
    name, version = decision["model_name"], str(decision["version"])
    if not decision.get("released") or "champion" not in decision.get("aliases", []):
        return _done(io, params, {"action": "unchanged", "version": version}, (
            f"deploy: {name} v{version} is not the champion: the served model stays"
        ))  # fmt: skip
    _check_canary(params, cfg)
    return _rollout(params, io, cfg, name, version)


def _check_canary(params: Params, cfg: DeployParams) -> None:
    uri = params.serve.record.uri
    if 0 < cfg.canary_percent < 100 and not (uri and uri.split("://")[0] in OBJECT_STORE_SCHEMES):
        raise ValueError(
            f"deploy.canary_percent = {cfg.canary_percent} needs the served traffic, and "
            f"serve.record.uri = {uri!r} is not an object store prefix the predictors and "
            f"this task share (s3://bucket/prefix); or set deploy.canary_percent: 0"
        )


def service_spec(params: Params, cfg: DeployParams, namespace: str) -> ServiceSpec:
    """The InferenceService's settings from params."""
    from tlops.serving.deploy import ServiceSpec

    return ServiceSpec(
        name=cfg.name,
        namespace=namespace,
        image=cfg.image,
        model_name=params.register_model.model_name,
        record_uri=params.serve.record.uri,
        min_replicas=cfg.min_replicas,
        max_replicas=cfg.max_replicas,
        resources=cfg.resources,
        uid=params.kfp.task_uid,
        gid=params.kfp.task_gid,
        secrets={k: dict(v) for k, v in params.kfp.secrets.items()},
        service_account=cfg.service_account,
    )


def _rollout(params: Params, io: StepIO, cfg: DeployParams, name: str, version: str) -> StepResult:
    from tlops.serving.deploy import (
        VERSION_LABEL,
        Cluster,
        inference_service,
        model_uri_of,
        own_namespace,
    )

    cluster = Cluster(cfg.namespace or own_namespace(), cfg.api_timeout_s)
    spec = service_spec(params, cfg, cluster.namespace)
    uri = f"models:/{name}/{version}"
    where = f"InferenceService {cluster.namespace}/{cfg.name}"
    current = cluster.get(cfg.name)
    facts: dict[str, Any] = {"version": version, "uri": uri}
    if current is None:
        generation = cluster.create(inference_service(spec, uri, version, None))
        cluster.wait_ready(cfg.name, generation, cfg.ready_timeout_s, cfg.poll_s)
        facts["action"] = "created"
        return _done(io, params, facts, f"deploy: {where} created, serving {name} v{version}")
    served = model_uri_of(current)
    if served == uri:
        facts["action"] = "unchanged"
        return _done(io, params, facts, f"deploy: {where} already serves {name} v{version}")
    old_version = (current.get("metadata", {}).get("labels") or {}).get(VERSION_LABEL)
    if cfg.canary_percent in (0, 100):
        generation = cluster.patch(cfg.name, inference_service(spec, uri, version, None))
        cluster.wait_ready(cfg.name, generation, cfg.ready_timeout_s, cfg.poll_s)
        facts.update(action="replaced", previous=old_version)
        return _done(io, params, facts, (
            f"deploy: {where} now serves {name} v{version} (was v{old_version}; no canary)"
        ))  # fmt: skip
    new, old = (uri, version), (served, old_version)
    rollout, figures = _canary(cluster, spec, cfg, params, new, old)
    return _decided(io, params, cluster, spec, new, old, rollout, figures)


def _canary(
    cluster: Cluster,
    spec: ServiceSpec,
    cfg: DeployParams,
    params: Params,
    new: tuple[str, str],
    old: tuple[str | None, str | None],
) -> tuple[Rollout, dict[str, ServedFigures]]:
    """Give the new version its share, watch the traffic, judge."""
    from tlops.evaluate.rollout import BACK, Rollout, judge_canary
    from tlops.serving.deploy import DeployError, inference_service
    from tlops.serving.traffic import figures, read_traffic

    started = time.time()
    body = inference_service(spec, new[0], new[1], cfg.canary_percent)
    generation = cluster.patch(cfg.name, body)
    try:
        cluster.wait_ready(cfg.name, generation, cfg.ready_timeout_s, cfg.poll_s)
    except DeployError as exc:
        if "was not ready" not in str(exc):
            raise
        return Rollout(BACK, (f"the canary was not ready: {exc}",)), {}
    print(
        f"deploy: canary v{new[1]} takes {cfg.canary_percent}% of {cluster.namespace}/{cfg.name}"
        f"; watching its traffic for {cfg.watch_s:g} s",
        flush=True,
    )
    deadline = time.monotonic() + cfg.watch_s
    while time.monotonic() < deadline:
        time.sleep(min(cfg.poll_s, max(deadline - time.monotonic(), 0.0)))
    assert params.serve.record.uri is not None  # _check_canary
    traffic = read_traffic(params.serve.record.uri, since=started)
    canary = figures(traffic, new[1])
    stable = figures(traffic, old[1]) if old[1] else None
    found = {"canary": canary, **({"stable": stable} if stable is not None else {})}
    return judge_canary(canary, stable, cfg.policy), found


def _decided(
    io: StepIO,
    params: Params,
    cluster: Cluster,
    spec: ServiceSpec,
    new: tuple[str, str],
    old: tuple[str | None, str | None],
    rollout: Rollout,
    found: dict[str, ServedFigures],
) -> StepResult:
    """Apply the judge's direction: all traffic to the canary, or the served version back."""
    from tlops.serving.deploy import inference_service

    cfg: DeployParams = params.section("deploy")
    where = f"InferenceService {cluster.namespace}/{cfg.name}"
    facts: dict[str, Any] = {
        "version": new[1],
        "uri": new[0],
        "previous": old[1],
        "canary_percent": cfg.canary_percent,
        "reasons": list(rollout.reasons),
        "figures": {k: v.as_dict() for k, v in found.items()},
    }
    if rollout.forward:
        whole = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
        generation = cluster.patch(cfg.name, whole)
        cluster.wait_ready(cfg.name, generation, cfg.ready_timeout_s, cfg.poll_s)
        facts["action"] = "forward"
        line = f"deploy: rolled forward: {where} serves v{new[1]} to all traffic"
    else:
        body = inference_service(spec, old[0] or "", old[1], None)
        body["spec"]["predictor"]["canaryTrafficPercent"] = None
        generation = cluster.patch(cfg.name, body)
        cluster.wait_ready(cfg.name, generation, cfg.ready_timeout_s, cfg.poll_s)
        facts["action"] = "back"
        facts["registry"] = _restore_champion(params, new[1])
        line = f"deploy: rolled back: {where} serves v{old[1]} again; {facts['registry']}"
    return _done(io, params, facts, line + "\n" + "\n".join(f"  - {r}" for r in rollout.reasons))


def _restore_champion(params: Params, version: str) -> str:
    """The registry follows the service: champion back to the version served again."""
    from tlops.tracking.registry import CHAMPION, alias_version, rollback

    name = params.register_model.model_name
    if alias_version(params.tracking, name, CHAMPION) != version:
        return f"champion left alone (no longer v{version})"
    demoted, restored = rollback(params.tracking, name)
    return f"champion alias v{demoted} -> v{restored}"


def _done(io: StepIO, params: Params, facts: dict[str, Any], line: str) -> StepResult:
    """Write ``deploy.json``, tag the run, and say what was done."""
    out_dir = io.outputs["deployment"]
    with atomic_dir(out_dir) as staging:
        target = params.section("deploy").target
        write_json(staging / DEPLOY_FILE, {**facts, "target": target, "line": line})
    if io.run is not None:
        tags = {f"deploy.{k}": str(v) for k, v in facts.items() if k in ("action", "version")}
        if facts.get("reasons"):
            tags["deploy.reasons"] = " | ".join(facts["reasons"])
        io.run.tags(tags)
        for role, values in (facts.get("figures") or {}).items():
            io.run.metrics(
                {f"deploy.{role}.{k}": float(v) for k, v in values.items() if k != "version"}
            )
        if facts["action"] not in ("none", "unchanged"):
            io.run.artifacts([out_dir / DEPLOY_FILE], None)
    return StepResult(line, metadata={"deployment": {"action": facts["action"]}})


# The step's declaration: what every runner (tlops step, KFP components) is derived from.
STEP = StepSpec(
    name="deploy",
    run=run,
    help="Serve the new champion on the cluster's InferenceService (deploy.target kserve): "
    "a canary rolled forward or back by its traffic; with deploy.target none, nothing.",
    params=("deploy", "serve", "register_model.model_name", "kfp", "tracking"),
    inputs=(
        Port(
            "decision",
            "Artifact",
            "Output of register_model (the version and whether it is the champion).",
            producer=("register_model", "decision"),
        ),
    ),
    outputs=(Port("deployment", "Artifact", "deploy.json: what was done and why"),),
    code=("tlops.serving.deploy", "tlops.serving.traffic", "tlops.evaluate.rollout"),
    tracking=Tracking.JOINS,
    section=DeployParams,
    dvc=False,
    placement="training and retraining pipelines, after register_model",
)
