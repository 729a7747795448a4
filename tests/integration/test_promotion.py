"""Safe promotion against a real MLflow registry: two processes promote at the same moment.

Each round registers a champion v1 and two candidates v2 and v3 that both beat v1 by the same
margin and tie with each other; two real processes (spawned, each with its own MLflow client
on one SQLite store) wait on a barrier, then promote their candidate, each having compared it
with v1. Exactly one may move ``champion``: the other must find that the champion changed
under it, re-run the gate against the new champion (a tie: not promoted) and say so. Without
the guard, both would promote and ``previous`` would name v1 twice, losing one of them.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 20
SCORES = {"1": 0.80, "2": 0.90, "3": 0.90}


def _scores(version: str) -> Any:
    from tlops.evaluate.gate import ModelScores

    return ModelScores({"macro_f1": SCORES[version]}, {})


def _promoter(uri: str, version: str, barrier: Any, results: Any) -> None:
    """One process: each round, promote ``version`` of model ``round-<r>`` (compared with v1)."""
    from tests.helpers import changed, repo_params
    from tlops.evaluate.gate import should_promote
    from tlops.tracking.promotion import promote_if_current, promotion_lock

    os.environ["MLFLOW_TRACKING_URI"] = uri  # tlops reads it before params
    cfg = changed(repo_params().tracking, tracking_uri=uri)
    policy = repo_params().register_model.gate
    for index in range(ROUNDS):
        barrier.wait(timeout=120)  # the round's model exists: both start promoting together
        first = should_promote(_scores(version), _scores("1"), policy)
        # what register_model does: the compare-and-set under the promotion lock
        with promotion_lock(cfg, f"round-{index}", timeout=60, lease=60):
            promotion = promote_if_current(
                cfg,
                f"round-{index}",
                version,
                "1",
                first,
                lambda found: should_promote(
                    _scores(version), _scores(found) if found else None, policy
                ),
            )
        results.put(
            (
                index,
                version,
                promotion.decision.promote,
                promotion.found,
                promotion.previous,
                list(promotion.decision.reasons),
            )
        )
        barrier.wait(timeout=120)  # the round is over: the next one is set up in a quiet store


def test_two_processes_never_both_promote(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.search_experiments()  # create the schema before two processes race to
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    results = context.Queue()
    workers = [
        context.Process(target=_promoter, args=(uri, version, barrier, results))
        for version in ("2", "3")
    ]
    for worker in workers:
        worker.start()
    try:
        for index in range(ROUNDS):
            name = f"round-{index}"
            client.create_registered_model(name)
            for _ in SCORES:
                client.create_model_version(name, source=str(tmp_path / "model"))
            client.set_registered_model_alias(name, "champion", "1")
            barrier.wait(timeout=120)
            barrier.wait(timeout=120)
        outcomes = [results.get(timeout=120) for _ in range(2 * ROUNDS)]
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    assert all(worker.exitcode == 0 for worker in workers)
    for index in range(ROUNDS):
        name = f"round-{index}"
        mine = [o for o in outcomes if o[0] == index]
        promoted = [o for o in mine if o[2]]
        assert len(promoted) == 1, (index, mine)
        winner, loser = promoted[0], next(o for o in mine if not o[2])
        assert winner[3] == "1" and winner[4] == "1"  # found v1 in place, demoted it
        assert loser[3] == winner[1]  # found the winner, not the v1 it was compared with
        assert "champion changed" in loser[5][0] and "re-run" in loser[5][0]
        champion = client.get_model_version_by_alias(name, "champion")
        previous = client.get_model_version_by_alias(name, "previous")
        assert str(champion.version) == winner[1] and str(previous.version) == "1"
    names = {model.name for model in client.search_registered_models()}
    assert not [n for n in names if n.endswith(".promotion-lock")]  # every lock released


def test_a_dead_holders_lock_is_broken_after_its_lease(tmp_path: Path) -> None:
    from tests.helpers import changed, repo_params
    from tlops.tracking.promotion import LockTimeoutError, lock_name, promotion_lock

    cfg = changed(repo_params().tracking, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    now = [1000.0]
    clock, sleep = (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))
    # a holder that died inside its critical section: its lock stays behind
    dead = promotion_lock(cfg, "m", timeout=5, lease=30, clock=clock, sleep=sleep)
    dead.__enter__()
    with (
        pytest.raises(LockTimeoutError, match=r"promotion lock .* is held by"),
        promotion_lock(cfg, "m", timeout=5, lease=30, clock=clock, sleep=sleep),
    ):
        pass
    now[0] += 31  # its lease is over
    with promotion_lock(cfg, "m", timeout=5, lease=30, clock=clock, sleep=sleep) as holder:
        import mlflow

        tags = mlflow.MlflowClient(cfg.tracking_uri).get_registered_model(lock_name("m")).tags
        assert tags["holder"] == holder
