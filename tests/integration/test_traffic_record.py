"""The traffic recorder against a real S3 endpoint (moto_server, as ``make prod-local`` runs it).

Records go to the bucket in batches and read back equal; with the endpoint down, handing
records over still returns at once, and what could not be written is dropped, counted and
logged; the buffer never holds more than ``max_pending``.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from infra.prod_local import DVC_BUCKET, Topology

from tests.helpers import changed, repo_params
from tlops.serving.recorder import ObjectSink, Served, TrafficRecorder
from tlops.serving.traffic import TrafficError, read_traffic

pytestmark = [pytest.mark.integration]


def served(i: int, version: str = "3", status: str = "ok") -> Served:
    rng = np.random.default_rng(i)
    probs = rng.dirichlet(np.ones(4)).astype(np.float32)
    return Served(
        time=1_800_000_000.0 + i,
        request_id=f"r{i}",
        version=version,
        sha256=f"{i:064x}",
        predicted=f"c{int(probs.argmax())}",
        confidence=float(probs.max()),
        probabilities=probs,
        embedding=rng.normal(size=8).astype(np.float32),
        latency_ms=5.0 + i,
        status=status,
        image=b"\x89PNG" + bytes([i % 256]),
    )


def test_batches_go_to_the_bucket_and_read_back_equal(s3: Topology) -> None:
    cfg = changed(repo_params().serve.record, uri=f"s3://{DVC_BUCKET}/traffic", batch_size=4)
    cfg = changed(cfg, keep_images=True)
    recorder = TrafficRecorder(cfg, ObjectSink(cfg.uri)).start()
    records = [served(i) for i in range(10)]
    for record in records:
        recorder.record([record])
    recorder.close()
    assert (recorder.stats.recorded, recorder.stats.dropped) == (10, 0)
    assert recorder.stats.files >= 3  # batches of at most 4

    back = read_traffic(cfg.uri, since=1_800_000_000.0, until=1_800_000_010.0)
    order = np.argsort([int(r[1:]) for r in back.request_id])
    assert list(back.request_id[order]) == [r.request_id for r in records]
    np.testing.assert_allclose(back.embedding[order], np.stack([r.embedding for r in records]))
    np.testing.assert_allclose(back.confidence[order], [r.confidence for r in records], rtol=1e-6)
    assert list(back.sha256[order]) == [r.sha256 for r in records]
    window = read_traffic(cfg.uri, since=1_800_000_005.0, until=1_800_000_007.0)
    assert sorted(window.request_id) == ["r5", "r6"]

    from tlops.serving.traffic import kept_image

    assert kept_image(cfg.uri, records[3].sha256) == records[3].image


def test_with_the_endpoint_down_answers_go_on_and_the_dropped_records_are_counted(
    s3: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = changed(
        repo_params().serve.record, uri=f"s3://{DVC_BUCKET}/down", batch_size=5, flush_s=0.1
    )
    recorder = TrafficRecorder(cfg, ObjectSink(cfg.uri)).start()
    s3.stop_s3()
    with caplog.at_level(logging.WARNING, logger="tlops.serving"):
        recorder.record([served(i) for i in range(5)])
        recorder.close(timeout_s=300)
    assert (recorder.stats.recorded, recorder.stats.dropped) == (0, 5)
    assert recorder.stats.last_error
    assert any("traffic: dropped 5 records (5 so far)" in r.message for r in caplog.records)
    with pytest.raises(TrafficError, match="reading the traffic record failed"):
        read_traffic(cfg.uri, since=0.0)


class BlockedSink:
    """A store that does not answer until released: the recorder must not wait for it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[int] = []

    def write(self, records: list[Served]) -> str:
        self.release.wait(120)
        self.written.append(len(records))
        return "blocked"


def test_a_store_that_hangs_never_blocks_record_and_memory_stays_bounded() -> None:
    cfg = changed(
        repo_params().serve.record, uri="blocked://", batch_size=2, flush_s=0.05, max_pending=6
    )
    sink = BlockedSink()
    recorder = TrafficRecorder(cfg, sink).start()
    for i in range(40):  # returns although the writer thread is stuck in the store
        recorder.record([served(i)])
    assert len(recorder._pending) <= cfg.max_pending
    sink.release.set()
    recorder.close()
    assert recorder.stats.recorded + recorder.stats.dropped == 40
    assert recorder.stats.dropped >= 40 - cfg.max_pending - cfg.batch_size
    assert sum(sink.written) == recorder.stats.recorded
