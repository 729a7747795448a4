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
    from tlops.evaluate.rollout import ServedFigures, Verdict
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
    return _rollout(params, io, cfg, decision)


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


def _served_version(current: dict[str, Any], decision: dict[str, Any], new: str) -> str | None:
    """The version the service serves now: its label, else the champion before this one.

    A service applied from infra/k8s names ``@champion``, which already names the new version
    (register_model moved it); a canary left half-rolled by a failed run is labeled with it.
    """
    from tlops.serving.deploy import VERSION_LABEL

    label = (current.get("metadata", {}).get("labels") or {}).get(VERSION_LABEL)
    if label and label != new:
        return str(label)
    previous = decision.get("previous_champion")
    return str(previous) if previous and str(previous) != new else None


def _rollout(params: Params, io: StepIO, cfg: DeployParams, decision: dict[str, Any]) -> StepResult:
    from tlops.serving.deploy import Cluster, inference_service, model_uri_of, own_namespace

    name, version = decision["model_name"], str(decision["version"])
    cluster = Cluster(cfg.namespace or own_namespace(), cfg.api_timeout_s)
    spec = service_spec(params, cfg, cluster.namespace)
    uri = f"models:/{name}/{version}"
    where = f"InferenceService {cluster.namespace}/{cfg.name}"
    current = cluster.get(cfg.name)
    facts: dict[str, Any] = {"version": version, "uri": uri}
    if current is None:
        rollout = cluster.create(inference_service(spec, uri, version, None))
        cluster.wait_ready(cfg.name, rollout, cfg.ready_timeout_s, cfg.poll_s)
        facts["action"] = "created"
        return _done(io, params, facts, f"deploy: {where} created, serving {name} v{version}")
    split = "canaryTrafficPercent" in current.get("spec", {}).get("predictor", {})
    if model_uri_of(current) == uri and not split:
        facts["action"] = "unchanged"
        return _done(io, params, facts, f"deploy: {where} already serves {name} v{version}")
    old = _served_version(current, decision, version)
    if cfg.canary_percent in (0, 100) or old is None:
        _serve_only(cluster, spec, cfg, (uri, version), current)
        facts.update(action="replaced", previous=old)
        why = "no canary" if old else "no canary: the version served before is not known"
        return _done(io, params, facts, (
            f"deploy: {where} now serves {name} v{version} (was v{old}; {why})"
        ))  # fmt: skip
    new, stable = (uri, version), (f"models:/{name}/{old}", old)
    try:
        judged, figures = _canary(cluster, spec, cfg, params, new, stable, current)
    except Exception as exc:  # never leave a split behind: the served version takes it all back
        _back_after(exc, cluster, spec, cfg, stable)
        raise
    return _decided(io, params, cluster, spec, new, stable, judged, figures)


def _serve_only(
    cluster: Cluster,
    spec: ServiceSpec,
    cfg: DeployParams,
    version: tuple[str, str],
    before: dict[str, Any] | None,
) -> None:
    """All traffic to ``version`` (a canary split, if any, removed); waits until served."""
    from tlops.serving.deploy import inference_service

    body = inference_service(spec, version[0], version[1], None)
    body["spec"]["predictor"]["canaryTrafficPercent"] = None  # a merge patch keeps what it omits
    rollout = cluster.patch(cfg.name, body, before)
    cluster.wait_ready(cfg.name, rollout, cfg.ready_timeout_s, cfg.poll_s)


def _back_after(
    exc: BaseException,
    cluster: Cluster,
    spec: ServiceSpec,
    cfg: DeployParams,
    stable: tuple[str, str],
) -> None:
    """After a failure mid-canary: the stable version back, or a note of why it could not be."""
    try:
        _serve_only(cluster, spec, cfg, stable, cluster.get(cfg.name))
    except Exception as again:
        exc.add_note(
            f"rolling the canary back failed too ({again}); the InferenceService may still "
            f"split traffic: kubectl get inferenceservice -n {cluster.namespace} {cfg.name}"
        )


def _canary(
    cluster: Cluster,
    spec: ServiceSpec,
    cfg: DeployParams,
    params: Params,
    new: tuple[str, str],
    stable: tuple[str, str],
    before: dict[str, Any],
) -> tuple[Verdict, dict[str, ServedFigures]]:
    """Give the new version its share, watch the traffic, judge."""
    from tlops.evaluate.rollout import BACK, Verdict, judge_canary
    from tlops.serving.deploy import NotReady, inference_service
    from tlops.serving.traffic import figures, read_traffic

    started = time.time()
    body = inference_service(spec, new[0], new[1], cfg.canary_percent)
    rollout = cluster.patch(cfg.name, body, before)
    try:
        cluster.wait_ready(cfg.name, rollout, cfg.ready_timeout_s, cfg.poll_s)
    except NotReady as exc:
        return Verdict(BACK, (f"the canary was not ready: {exc}",)), {}
    print(
        f"deploy: canary v{new[1]} takes {cfg.canary_percent}% of {cluster.namespace}/{cfg.name}"
        f"; watching its traffic for {cfg.watch_s:g} s",
        flush=True,
    )
    time.sleep(cfg.watch_s)
    ended = time.time()
    # the predictors write what they hold every serve.record.flush_s: wait for the window's last
    time.sleep(2 * params.serve.record.flush_s)
    assert params.serve.record.uri is not None  # _check_canary
    traffic = read_traffic(params.serve.record.uri, since=started, until=ended)
    canary, served = figures(traffic, new[1]), figures(traffic, stable[1])
    return judge_canary(canary, served, cfg.policy), {"canary": canary, "stable": served}


def _decided(
    io: StepIO,
    params: Params,
    cluster: Cluster,
    spec: ServiceSpec,
    new: tuple[str, str],
    stable: tuple[str, str],
    verdict: Verdict,
    found: dict[str, ServedFigures],
) -> StepResult:
    """Apply the judge's direction: all traffic to the canary, or the served version back."""
    from tlops.tracking.registry import restore_champion

    cfg: DeployParams = params.section("deploy")
    where = f"InferenceService {cluster.namespace}/{cfg.name}"
    facts: dict[str, Any] = {
        "version": new[1],
        "uri": new[0],
        "previous": stable[1],
        "canary_percent": cfg.canary_percent,
        "reasons": list(verdict.reasons),
        "figures": {k: v.as_dict() for k, v in found.items()},
    }
    if verdict.forward:
        _serve_only(cluster, spec, cfg, new, cluster.get(cfg.name))
        facts["action"] = "forward"
        line = f"deploy: rolled forward: {where} serves v{new[1]} to all traffic"
    else:
        # the registry first: a pod started from here on must not load the rejected version
        name = params.register_model.model_name
        facts["registry"] = restore_champion(params.tracking, name, new[1], stable[1])
        _serve_only(cluster, spec, cfg, stable, cluster.get(cfg.name))
        facts["action"] = "back"
        line = f"deploy: rolled back: {where} serves v{stable[1]} again; {facts['registry']}"
    return _done(io, params, facts, line + "\n" + "\n".join(f"  - {r}" for r in verdict.reasons))


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
