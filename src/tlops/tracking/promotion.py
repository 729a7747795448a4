"""Safe promotion: moving ``champion`` as a compare-and-set, serialised by a lock in the registry.

MLflow's ``set_registered_model_alias`` is a blind upsert. Two retraining runs that both
compared their candidate with champion v3 and finish together would both promote, the second
silently overwriting the first (and its ``previous``), on evidence that is stale. So the move
is made under a lock, and under the lock the champion is read again: if it is not the one the
candidate was compared with, the gate is re-run against the champion actually in place (the
caller's ``regate``) before anything moves.

**The lock is a registered model named** ``<model>.promotion-lock``. Creating a registered
model is atomic in every MLflow backend: the name is the primary key of its table, so of two
concurrent creations exactly one succeeds and the other gets ``RESOURCE_ALREADY_EXISTS``; this
holds for the embedded SQLite store (one machine, many processes) and for a tracking server
over PostgreSQL shared by many pods alike. It needs nothing a task does not already have (its
MLflow credentials): no shared filesystem (a file lock would only serialise one machine), no
Kubernetes RBAC for a Lease, no extra service. The lock carries its holder and an expiry: a
holder that died is broken after ``lease`` seconds (the critical section takes seconds). The
lock is visible in the registry's model list while held.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from tlops.config import TrackingConfig
from tlops.evaluate.gate import Decision
from tlops.tracking.registry import CHAMPION, alias_version, promote
from tlops.tracking.runs import client

LOCK_SUFFIX = ".promotion-lock"
CONTENDED = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")


class LockTimeoutError(RuntimeError):
    """The promotion lock was held by another run for longer than the timeout."""


def lock_name(model_name: str) -> str:
    """The registered model that serves as the promotion lock of ``model_name``."""
    return f"{model_name}{LOCK_SUFFIX}"


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def _transient(exc: Exception) -> bool:
    # SQLite answers a write that collides with another process's transaction this way
    return "database is locked" in str(exc)


def _patiently(action: Callable[[], Any], attempts: int = 20) -> Any:
    """Run a registry call, retrying while SQLite reports a colliding write."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if not _transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return None


def _holder_of(mlflow_client: Any, name: str) -> dict[str, str] | None:
    import mlflow

    try:
        return dict(_patiently(lambda: mlflow_client.get_registered_model(name)).tags or {})
    except mlflow.exceptions.MlflowException as exc:
        if _transient(exc):
            raise
        return None  # released in between


@contextmanager
def promotion_lock(
    cfg: TrackingConfig,
    model_name: str,
    timeout: float,
    lease: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Hold the promotion lock of ``model_name`` (see the module docstring).

    Args:
        cfg: The tracking store.
        model_name: The registered model whose aliases are about to move.
        timeout: Seconds to wait for a lock held by someone else.
        lease: Seconds after which a held lock counts as abandoned and is broken.
        clock: Wall clock (seconds); the expiry is compared across machines.
        sleep: How to wait between attempts.

    Yields:
        This holder's id (host:pid:random).

    Raises:
        LockTimeoutError: Another holder kept it past ``timeout``.
    """
    import mlflow

    mlflow_client = client(cfg)
    name = lock_name(model_name)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = clock() + timeout
    delay = 0.02
    while True:
        try:
            mlflow_client.create_registered_model(
                name,
                tags={"holder": holder, "expires": f"{clock() + lease:.3f}"},
                description=f"promotion lock of {model_name}: held while its aliases move",
            )
            break
        except mlflow.exceptions.MlflowException as exc:
            # Taken: RESOURCE_ALREADY_EXISTS. MLflow's SQL store builds that error by reading the
            # existing model after the failed insert, so when the holder released it in between
            # the answer is RESOURCE_DOES_NOT_EXIST: taken a moment ago, free now; try again.
            if _error_code(exc) not in CONTENDED and not _transient(exc):
                raise
        except Exception as exc:
            if not _transient(exc):
                raise
        other = _holder_of(mlflow_client, name)
        if other is not None and float(other.get("expires", "inf")) < clock():
            # abandoned: break it, unless someone else did and took it meanwhile
            again = _holder_of(mlflow_client, name)
            if again is not None and again.get("holder") == other.get("holder"):
                with suppress(mlflow.exceptions.MlflowException):
                    mlflow_client.delete_registered_model(name)
            continue
        if clock() > deadline:
            who = other.get("holder", "?") if other else "?"
            raise LockTimeoutError(
                f"{model_name}: the promotion lock ({name}) is held by {who}; waited "
                f"{timeout:.0f} s (register_model.lock_timeout_s). If its holder is dead, the "
                f"lock is broken when its lease ends, or delete the registered model {name}"
            )
        sleep(delay * (1.0 + random.random()))
        delay = min(delay * 2.0, 1.0)
    try:
        yield holder
    finally:
        # a lock left behind would stall every promotion for a whole lease: insist on releasing
        current = _holder_of(mlflow_client, name)
        if current is not None and current.get("holder") == holder:
            _patiently(lambda: mlflow_client.delete_registered_model(name))


@dataclass(frozen=True)
class Promotion:
    """What a guarded promotion did."""

    decision: Decision  # the decision that was applied (re-run when the champion had changed)
    compared_with: str | None  # the champion the first gate compared the candidate with
    found: str | None  # the champion found under the lock
    previous: str | None  # the champion that was demoted (promoted only)

    @property
    def regated(self) -> bool:
        """True when the champion had changed and the gate was re-run."""
        return self.found != self.compared_with


def promote_if_current(
    cfg: TrackingConfig,
    model_name: str,
    version: str,
    compared_with: str | None,
    decision: Decision,
    regate: Callable[[str | None], Decision],
) -> Promotion:
    """The compare-and-set itself; call it holding :func:`promotion_lock`.

    Args:
        cfg: The tracking store.
        model_name: The registered model.
        version: The candidate version (registered).
        compared_with: The champion version the gate compared it with (None: there was none).
        decision: That gate's decision.
        regate: Re-runs the gate against another champion version (None: no champion); called
            only when the champion changed since the comparison.

    Returns:
        The decision applied and what was found.
    """
    found = alias_version(cfg, model_name, CHAMPION)
    if found != compared_with:
        before = f"v{compared_with}" if compared_with else "no champion"
        now = f"v{found}" if found else "none"
        fresh = regate(found)
        decision = Decision(
            fresh.promote,
            (
                f"the champion changed while this run was evaluated ({before} -> {now}): "
                f"the gate was re-run against {now}",
                *fresh.reasons,
            ),
        )
    previous = promote(cfg, model_name, version) if decision.promote else None
    return Promotion(decision, compared_with, found, previous)


def rollback_guarded(
    cfg: TrackingConfig, model_name: str, reason: str, timeout: float, lease: float
) -> tuple[str, str, str]:
    """Restore ``previous`` as champion, under the promotion lock, and record why.

    The demoted and the restored versions get tags ``rollback.reason`` (and ``rolled_back`` /
    ``restored_by_rollback``), and an MLflow run named ``rollback v<old> -> v<new>`` records
    the reason, both versions and who ran it.

    Returns:
        ``(demoted, restored, run_id)``.

    Raises:
        LookupError: There is no ``previous`` version to go back to.
        ValueError: ``reason`` is empty.
    """
    from tlops.tracking.registry import rollback
    from tlops.tracking.runs import end_run, git_sha, start_run

    if not reason.strip():
        raise ValueError("rollback: give the reason (--reason), it is recorded in the registry")
    with promotion_lock(cfg, model_name, timeout, lease):
        demoted, restored = rollback(cfg, model_name)
    mlflow_client = client(cfg)
    mlflow_client.set_model_version_tag(model_name, demoted, "rollback.reason", reason)
    mlflow_client.set_model_version_tag(model_name, restored, "restored_by_rollback", "true")
    mlflow_client.set_model_version_tag(model_name, restored, "rollback.reason", reason)
    tags = {
        "rollback.reason": reason,
        "rollback.demoted": demoted,
        "rollback.restored": restored,
        "rollback.user": os.environ.get("USER", "unknown"),
        "git_sha": git_sha(),
        "runner": "cli",
    }
    run_id = start_run(cfg, f"rollback v{demoted} -> v{restored}", {"model_name": model_name}, tags)
    end_run(cfg, run_id, ok=True)
    return demoted, restored, run_id
