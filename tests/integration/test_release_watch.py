"""Release notifications over the real coordinator: WatchReleases (all channels, or one) and Redis pub/sub."""

from __future__ import annotations

import json
import queue
import threading

import pytest
import redis

from coordinator.release import actions
from coordinator.release.publish import ANNOUNCE_CHANNEL
from coordinator.state import releases as state
from protocol.v1 import barfed_pb2 as pb

from .release_helpers import ROUTER_RECIPE, accept, build, coordinator_for, package

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REDIS_URL = "redis://127.0.0.1:6379/0"


def watch(stub, events: queue.Queue, **request):
    call = stub.WatchReleases(pb.WatchReleasesRequest(**request))

    def run():
        try:
            for event in call:
                events.put(event)
        except Exception as exc:  # cancelled at the end of the test
            events.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return call


def next_event(events: queue.Queue, timeout: float = 30.0) -> pb.ReleaseEvent:
    event = events.get(timeout=timeout)
    assert isinstance(event, pb.ReleaseEvent), event
    return event


def test_watchers_hear_each_release_and_each_channel_move(federation, say_experts, tmp_path):
    recipe = tmp_path / "router-test.toml"
    recipe.write_text(ROUTER_RECIPE)
    settings = federation.settings.model_copy(
        update={"router_recipe": str(recipe), "eval_examples": 4, "announce_redis_url": REDIS_URL}
    )
    coordinator = coordinator_for(settings)
    subscriber = redis.Redis.from_url(REDIS_URL).pubsub()
    subscriber.subscribe(ANNOUNCE_CHANNEL)
    assert subscriber.get_message(timeout=5)["type"] == "subscribe"

    watcher = federation.enroll("acme-labs", ["test-say-yes"])
    with watcher.client(federation.address.service) as client:
        every, stable = queue.Queue(), queue.Queue()
        calls = [watch(client.stub, every), watch(client.stub, stable, channel="stable")]
        try:
            accept(coordinator, package(coordinator, say_experts["yes"], "acme-labs", 1, tmp_path / "p1"), "acme-labs")
            build(coordinator, tmp_path)
            first = next_event(every)
            assert (first.release, first.name, sorted(first.channels)) == (1, "r1", ["latest", "stable"])
            assert list(first.domains) == ["test-say-yes"] and len(first.manifest_sha256) == 64
            assert next_event(stable).release == 1

            announced = subscriber.get_message(timeout=10)
            assert announced["type"] == "message"
            assert json.loads(announced["data"]) == {
                "release": 1,
                "name": "r1",
                "channels": ["latest", "stable"],
                "domains": ["test-say-yes"],
            }

            accept(coordinator, package(coordinator, say_experts["yes"], "acme-labs", 2, tmp_path / "p2"), "acme-labs")
            build(coordinator, tmp_path)
            second = next_event(every)
            assert (second.release, list(second.channels)) == (2, ["latest"]), state.channels(coordinator.registry)
            with pytest.raises(queue.Empty):
                stable.get(timeout=2.5)  # latest moved, stable did not
            actions.promote(coordinator.registry, "r2", "stable", "operator")
            assert next_event(stable).release == 2
            actions.rollback(coordinator.registry, "stable", "operator")
            assert next_event(stable).release == 1  # a rollback is a move too
        finally:
            for call in calls:
                call.cancel()
            subscriber.close()
            coordinator.registry.dispose()
