"""The driver's view of a batch's tasks (TaskWatch) as dask's scheduler shows them: a
queued task that work stealing moves is no rerun; a task whose worker is lost is."""

from __future__ import annotations

from typing import Any

from stream.offline.watch import TOPIC, TaskWatch


class Scheduler:
    """What TaskWatch asks of a dask Client, as the scheduler answers: the tasks each
    worker holds (queued ones too, as `Client.processing` lists them) and the workers."""

    def __init__(self) -> None:
        self.workers: dict[str, list[str]] = {}
        self.topics: dict[str, Any] = {}

    def processing(self) -> dict[str, list[str]]:
        return {w: list(keys) for w, keys in self.workers.items()}

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {w: {} for w in self.workers}}

    def subscribe_topic(self, topic: str, handler: Any) -> None:
        self.topics[topic] = handler

    def unsubscribe_topic(self, topic: str) -> None:
        del self.topics[topic]


def test_a_queued_task_moved_by_work_stealing_is_no_rerun():
    """Two tasks on worker A, the second queued: dask moves it to worker B, alive both.
    It said "running again on B (was on A)" and dropped the task's points."""
    client, lines = Scheduler(), []
    watch = TaskWatch(client, {"k1": "s_1.1", "k2": "s_2.1"}, lines.append)
    client.workers = {"tcp://a": ["k1", "k2"], "tcp://b": []}
    watch.poll()
    client.topics[TOPIC]((0.0, {"key": "k2", "points": 7}))
    client.topics[TOPIC]((0.0, {"key": "k1", "points": 30}))
    client.workers = {"tcp://a": ["k1"], "tcp://b": ["k2"]}
    watch.poll()
    assert lines == [] and watch.running() == 37
    # worker A is lost: k1 runs again on B, its points counted afresh
    client.workers = {"tcp://b": ["k2", "k1"]}
    watch.poll()
    assert lines == ["s_1.1: running again on tcp://b (was on tcp://a)"]
    assert watch.running() == 7
    watch.close()
    assert client.topics == {}
