"""The InferenceService that serves the champion, and rolling a new champion out on it.

:func:`inference_service` builds the object (KServe ``serving.kserve.io/v1beta1``): one
custom predictor container, the project's serving image running ``tlops serve`` on the
version's URI, with the MLflow and S3 credentials of the pipeline's tasks, probes on the V2
health endpoints, replicas and resources from params. ``infra/k8s/base/serving.yaml`` is the
same object for params.yaml's defaults (a test compares them).

:class:`Cluster` speaks to the Kubernetes API (the kubeconfig ``KUBECONFIG`` names, or the
pod's own service account) through the official client: read, create, merge-patch, and wait
for the service's ``Ready`` condition. Every API error becomes a :class:`DeployError` naming
the object and what the API said.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlops.config import Resources

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CONTAINER = "kserve-container"  # the name KServe gives a custom predictor's container
MODEL_ENV = "TLOPS_MODEL_URI"
VERSION_LABEL = "tlops/model-version"
PORT = 8080


class DeployError(RuntimeError):
    """The Kubernetes API refused, timed out, or the service did not become ready."""


class NotReady(DeployError):
    """The service did not serve a change within its time (the API itself answered)."""


@dataclass(frozen=True)
class ServiceSpec:
    """Everything the InferenceService says, from params (``deploy``, ``serve``, ``kfp``)."""

    name: str
    namespace: str
    image: str
    model_name: str  # the name requests use: /v2/models/<model_name>/infer
    record_uri: str | None  # serve.record.uri as the pods see it (an object store prefix)
    min_replicas: int
    max_replicas: int
    resources: Resources
    uid: int
    gid: int
    secrets: dict[str, dict[str, str]]  # secret -> {key: variable}, as kfp.secrets
    service_account: str | None


def model_uri_of(isvc: dict[str, Any]) -> str | None:
    """The model URI an InferenceService serves (its container's ``TLOPS_MODEL_URI``)."""
    for container in isvc.get("spec", {}).get("predictor", {}).get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == MODEL_ENV:
                return str(env.get("value"))
    return None


def inference_service(
    spec: ServiceSpec, model_uri: str, version: str | None, canary_percent: int | None
) -> dict[str, Any]:
    """The InferenceService serving ``model_uri`` (with a canary share when not None)."""
    ready = f"/v2/models/{spec.model_name}/ready"
    args = ["serve", f"$({MODEL_ENV})", "--host", "0.0.0.0", "--port", str(PORT)]
    record = spec.record_uri or "null"
    args += ["-S", f"serve.record.uri={record}"]
    env: list[dict[str, Any]] = [{"name": MODEL_ENV, "value": model_uri}]
    env += [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for secret, keys in sorted(spec.secrets.items())
        for key, variable in keys.items()
    ]
    res = spec.resources
    container = {
        "name": CONTAINER,
        "image": spec.image,
        "args": args,
        "env": env,
        "ports": [{"containerPort": PORT, "name": "http1", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": ready, "port": PORT}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": PORT},
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
        },
        "resources": {
            "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
            "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        # the model is downloaded to /tmp; the root file system stays read-only
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    predictor: dict[str, Any] = {
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.uid,
            "runAsGroup": spec.gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
    }
    if spec.service_account:
        predictor["serviceAccountName"] = spec.service_account
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    labels = {"app.kubernetes.io/part-of": "tlops", "app.kubernetes.io/name": spec.name}
    if version:
        labels[VERSION_LABEL] = version
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {"predictor": predictor},
    }


def own_namespace(default: str = "kubeflow") -> str:
    """The namespace this pod runs in (its service account's), else ``default``."""
    own = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return own.read_text().strip() if own.is_file() else default


class Cluster:
    """The InferenceServices of one namespace, through the Kubernetes API.

    Args:
        namespace: Where the service is.
        timeout_s: Each API call's limit (connect and read).
    """

    def __init__(self, namespace: str, timeout_s: float) -> None:
        from kubernetes import client as k8s
        from kubernetes import config

        # read now: the kubernetes package reads KUBECONFIG once, when it is imported
        path = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
        if Path(path).is_file():
            api_client = config.new_client_from_config(config_file=path)
        else:
            config.load_incluster_config()
            api_client = k8s.ApiClient()
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.timeout_s = timeout_s

    def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            # a (connect, read) pair: the client ignores a float timeout (it checks for int)
            limit = (self.timeout_s, self.timeout_s)
            return getattr(self.api, method)(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=limit, **kwargs
            )
        except ApiException as exc:
            if exc.status == 404 and method == "get_namespaced_custom_object":
                return None
            raise DeployError(
                f"{what}: the Kubernetes API answered {exc.status} {exc.reason}: "
                f"{_message(exc.body)}"
            ) from None
        except Exception as exc:  # unreachable, timed out
            raise DeployError(
                f"{what}: the Kubernetes API did not answer within {self.timeout_s:g} s "
                f"({type(exc).__name__}: {exc})".splitlines()[0]
            ) from None

    def get(self, name: str) -> dict[str, Any] | None:
        """The InferenceService ``name``, or None when there is none."""
        where = f"reading InferenceService {self.namespace}/{name}"
        found: dict[str, Any] | None = self._call(where, "get_namespaced_custom_object", name=name)
        return found

    def create(self, body: dict[str, Any]) -> Rollout:
        """Create an InferenceService; what to wait for."""
        name = body["metadata"]["name"]
        what = f"creating InferenceService {self.namespace}/{name}"
        return Rollout(None, self._call(what, "create_namespaced_custom_object", body=body))

    def patch(self, name: str, body: dict[str, Any], before: dict[str, Any] | None) -> Rollout:
        """Merge-patch the InferenceService ``name`` (``None`` values remove fields).

        Args:
            name: The service.
            body: The merge patch.
            before: The service as it was (its revision is the one the patch replaces).
        """
        what = f"updating InferenceService {self.namespace}/{name}"
        done = self._call(what, "patch_namespaced_custom_object", name=name, body=body)
        return Rollout(before, done)

    def wait_ready(self, name: str, rollout: Rollout, timeout_s: float, poll_s: float) -> None:
        """Until the service serves what ``rollout`` asked for, and says it is ``Ready``.

        In KServe's serverless mode the predictor reports revisions: a change is served once a
        revision other than the one before it is both the latest created and the latest ready
        (``status.observedGeneration`` is copied from the child service, not this object's
        generation). Without revisions (raw deployment mode) the generations are compared.

        Raises:
            NotReady: It did not within ``timeout_s`` (with its last condition's message).
            DeployError: The API refused or did not answer.
        """
        deadline = time.monotonic() + timeout_s
        last = "no status yet"
        while True:
            isvc = self.get(name) or {}
            ready = [
                c for c in (isvc.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ]  # fmt: skip
            if ready:
                last = f"Ready={ready[0].get('status')}: {ready[0].get('message') or ''}".strip()
                if ready[0].get("status") == "True" and rollout.served(isvc):
                    return
            if time.monotonic() >= deadline:
                raise NotReady(
                    f"InferenceService {self.namespace}/{name} was not ready within "
                    f"{timeout_s:g} s (last: {last})"
                )
            time.sleep(poll_s)


@dataclass(frozen=True)
class Rollout:
    """A change made to a service: the object before it (None: created) and right after it."""

    before: dict[str, Any] | None
    after: dict[str, Any]

    def served(self, now: dict[str, Any]) -> bool:
        """Whether ``now`` (the service's current state) serves this change."""
        created, ready = revisions(now)
        if created is not None:
            replaced = revisions(self.before)[0] if self.before else None
            return created != replaced and ready == created
        observed = int((now.get("status") or {}).get("observedGeneration") or 0)
        return observed >= _generation(self.after)


def revisions(isvc: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The predictor's latest created and latest ready revisions (serverless mode)."""
    predictor = (((isvc or {}).get("status") or {}).get("components") or {}).get("predictor")
    predictor = predictor or {}
    return predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")


def _generation(obj: Any) -> int:
    return int(((obj or {}).get("metadata") or {}).get("generation") or 0)


def _message(body: Any) -> str:
    import json

    try:
        return str(json.loads(body).get("message") or body)
    except (TypeError, ValueError, AttributeError):
        return str(body)
