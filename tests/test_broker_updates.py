"""SubscribeToComponentUpdates and DeferComponentUpdate on the broker, as the Java Nucleus serves
them (LifecycleIPCEventStreamAgent), and a deployment's wait for them
(UpdateSystemPolicyService, :meth:`Broker.run_deployment`); nucleus lite serves neither.

The deployments here look at the answers every 50 ms instead of the Nucleus's second, so that
they take tenths of a second; tests/test_component_updates.py runs them at the Nucleus's pace.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeboost.broker import Broker, ComponentPolicy
from edgeboost.broker.component_updates import DeploymentReport
from edgeboost.runtime.eventstream import MessageFlag, MessageType

from .conftest import need
from .greengrass_lite import TALKER
from .ipc_client import ipc
from .ipc_servers import BROKER, IpcServer
from .raw_ipc import Frame, RawIpc, connected

SUBSCRIBE = "aws.greengrass#SubscribeToComponentUpdates"
DEFER = "aws.greengrass#DeferComponentUpdate"
EVENTS = "aws.greengrass#ComponentUpdatePolicyEvents"
POLL = 0.05
OTHER = "com.example.Other"


def outcome(frame: Frame) -> str:
    if frame.type == MessageType.APPLICATION_ERROR and frame.model_type is None:
        return frame.message.payload.decode()  # InternalServerError
    assert frame.model_type is not None
    return frame.model_type.removeprefix("aws.greengrass#")


def subscribe(client: RawIpc) -> int:
    stream = client.call(SUBSCRIBE, {})
    response = client.receive_on(stream)
    assert (outcome(response), response.json(), response.flags) == (
        "SubscribeToComponentUpdatesResponse",
        {},
        0,  # the stream stays open
    )
    return stream


def defer(client: RawIpc, request: dict[str, Any]) -> Frame:
    return client.receive_on(client.call(DEFER, request))


def next_event(client: RawIpc, stream: int, timeout: float = 5.0) -> dict[str, Any]:
    frame = client.receive_on(stream, timeout)
    assert (frame.type, frame.flags, frame.model_type) == (
        MessageType.APPLICATION_MESSAGE,
        0,
        EVENTS,
    )
    document: dict[str, Any] = frame.json()
    return document


class Deployment:
    """``Broker.run_deployment`` on a thread of its own, as the Nucleus runs it."""

    def __init__(self, broker: Broker, **options: Any) -> None:
        options.setdefault("poll_interval", POLL)
        self.outcome: list[DeploymentReport | BaseException] = []
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(broker, options), daemon=True)
        self._thread.start()

    def _run(self, broker: Broker, options: dict[str, Any]) -> None:
        try:
            self.outcome.append(broker.run_deployment(**options))
        except BaseException as exc:  # handed to the test
            self.outcome.append(exc)

    def report(self, timeout: float = 10.0) -> DeploymentReport:
        self._thread.join(timeout)
        (result,) = self.outcome
        if isinstance(result, BaseException):
            raise result
        return result


# --- both servers ----------------------------------------------------------------------------
def test_the_operations_on_both_servers(config_server: IpcServer) -> None:
    """The Java Nucleus serves both operations to any component (no authorization); nucleus
    lite serves neither (its ggipcd has no lifecycle handler for them: ServiceError)."""
    with config_server.raw(TALKER) as talker:
        if config_server.kind != BROKER:
            for operation, request in ((SUBSCRIBE, {}), (DEFER, {"deploymentId": "d"})):
                reply = talker.receive_on(talker.call(operation, request))
                assert reply.type == MessageType.APPLICATION_ERROR
                assert outcome(reply) == "ServiceError"
            return
        not_yet = defer(talker, {"deploymentId": "d", "recheckAfterMs": 1})
        assert outcome(not_yet) == "InvalidArgumentsError"
        assert not_yet.json()["message"] == "Component is not subscribed to component update events"
        subscribe(talker)
        assert config_server.broker is not None
        assert config_server.broker.update_subscribers() == [TALKER]


# --- the broker alone ------------------------------------------------------------------------
COMPONENTS = {"tok-talker": ComponentPolicy(TALKER), "tok-other": ComponentPolicy(OTHER)}


@pytest.fixture
def broker() -> Iterator[Broker]:
    with (
        tempfile.TemporaryDirectory(prefix="eb-") as folder,
        Broker(Path(folder) / "ipc.sock", COMPONENTS) as running,
    ):
        yield running


def test_defer_arguments(broker: Broker) -> None:
    with connected(broker, "tok-talker") as talker:
        subscribe(talker)
        missing = defer(talker, {"recheckAfterMs": 1000})
        assert (outcome(missing), missing.json()["message"]) == (
            "InvalidArgumentsError",
            "Cannot defer the update, the deployment ID provided was null",
        )
        # Nothing awaits an answer for this deployment (none started, or it went on).
        late = defer(talker, {"deploymentId": "d-0", "recheckAfterMs": 1000})
        assert (outcome(late), late.json()["message"]) == (
            "ServiceError",
            "Time limit to respond to PreComponentUpdateEvent exceeded",
        )
        for bad in ("1000", 1.5, True, [1]):
            reply = defer(talker, {"deploymentId": "d-0", "recheckAfterMs": bad})
            assert outcome(reply) == "InternalServerError"  # Gson cannot make a Long of it
        reply = defer(talker, {"deploymentId": 7})
        assert outcome(reply) == "InternalServerError"


def test_a_deferral_and_then_a_go(broker: Broker) -> None:
    with connected(broker, "tok-talker") as talker, connected(broker, "tok-other") as other:
        stream, quiet = subscribe(talker), subscribe(other)
        deployment = Deployment(broker, deployment_id="d-1", ggc_restarting=True)
        first = next_event(talker, stream)
        assert first == {"preUpdateEvent": {"deploymentId": "d-1", "isGgcRestarting": True}}
        assert next_event(other, quiet) == first  # every subscriber hears it
        assert outcome(defer(other, {"deploymentId": "d-1", "recheckAfterMs": 0})) == (
            "DeferComponentUpdateResponse"
        )
        reply = defer(talker, {"deploymentId": "d-1", "message": "busy", "recheckAfterMs": 300})
        assert (outcome(reply), reply.json(), reply.flags) == (
            "DeferComponentUpdateResponse",
            {},
            MessageFlag.TERMINATE_STREAM,
        )
        again = next_event(talker, stream)
        asked_again = time.monotonic() - deployment.started
        assert again == first
        assert next_event(other, quiet) == first
        defer(other, {"deploymentId": "d-1", "recheckAfterMs": 0})
        defer(talker, {"deploymentId": "d-1", "recheckAfterMs": 0})
        assert next_event(talker, stream) == {"postUpdateEvent": {"deploymentId": "d-1"}}
        assert next_event(other, quiet) == {"postUpdateEvent": {"deploymentId": "d-1"}}
        report = deployment.report()
        # Once the answers are in, the deployment still sleeps one poll; then the recheck.
        assert 0.3 <= asked_again < 1.0, asked_again
    assert report.events == 2 and not report.unanswered
    assert [(a.component, a.recheck_after_ms) for a in report.deferrals] == [(TALKER, 300)]
    assert report.deferrals[0].message == "busy"
    assert sorted(a.recheck_after_ms or 0 for a in report.answers) == [0, 0, 0, 300]


def test_a_subscriber_that_does_not_answer_holds_the_deployment_until_the_timeout(
    broker: Broker,
) -> None:
    with connected(broker, "tok-talker") as talker:
        stream = subscribe(talker)
        deployment = Deployment(broker, timeout=0.5)
        next_event(talker, stream)
        assert "postUpdateEvent" in next_event(talker, stream)
        report = deployment.report()
    assert report.unanswered == [TALKER] and report.events == 1
    assert 0.5 <= report.waited_s < 1.0


def test_an_answer_without_recheck_after_ms_is_ignored_until_the_timeout(broker: Broker) -> None:
    with connected(broker, "tok-talker") as talker:
        stream = subscribe(talker)
        deployment = Deployment(broker, deployment_id="d-2", timeout=0.5)
        next_event(talker, stream)
        reply = defer(talker, {"deploymentId": "d-2", "message": "no recheck"})
        assert outcome(reply) == "DeferComponentUpdateResponse"  # accepted, then ignored
        assert "postUpdateEvent" in next_event(talker, stream)
        report = deployment.report()
    assert [(a.recheck_after_ms, a.message) for a in report.answers] == [(None, "no recheck")]
    assert report.events == 1 and 0.5 <= report.waited_s < 1.0


def test_two_streams_of_one_component_hold_every_deployment_until_the_timeout(
    broker: Broker,
) -> None:
    """The Nucleus keeps one pending answer per component and deployment: the second stream's
    event replaces the first one's, which can then never be answered."""
    with connected(broker, "tok-talker") as talker:
        first, second = subscribe(talker), subscribe(talker)
        assert broker.update_subscribers() == [TALKER, TALKER]
        deployment = Deployment(broker, deployment_id="d-3", timeout=0.5)
        next_event(talker, first)
        next_event(talker, second)
        assert outcome(defer(talker, {"deploymentId": "d-3", "recheckAfterMs": 0})) == (
            "DeferComponentUpdateResponse"
        )
        assert outcome(defer(talker, {"deploymentId": "d-3", "recheckAfterMs": 0})) == (
            "ServiceError"
        )
        report = deployment.report()
    assert report.unanswered == [TALKER] and 0.5 <= report.waited_s < 1.0


def test_a_closed_stream_is_no_longer_told(broker: Broker) -> None:
    with connected(broker, "tok-talker") as talker:
        stream = subscribe(talker)
        talker.send(
            _terminate(stream)  # the client ends its subscription
        )
        deadline = time.monotonic() + 5
        while broker.update_subscribers() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.update_subscribers() == []
        report = broker.run_deployment(poll_interval=POLL)
        assert talker.nothing_arrives(0.2)
    assert report.events == 1 and report.answers == [] and report.waited_s < 0.1
    with connected(broker, "tok-talker") as talker:
        subscribe(talker)
    deadline = time.monotonic() + 5
    while broker.update_subscribers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert broker.update_subscribers() == []  # a connection that closes takes its streams


def test_a_subscriber_that_defers_forever_is_given_up_on_by_the_test_limit(
    broker: Broker,
) -> None:
    """The Nucleus has no limit on how long a component may defer; the broker's
    ``give_up_after`` keeps a test from hanging on one."""
    with connected(broker, "tok-talker") as talker:
        stream = subscribe(talker)
        deployment = Deployment(broker, deployment_id="d-4", give_up_after=0.6)
        for _ in range(3):
            try:
                next_event(talker, stream, timeout=2)
            except TimeoutError:
                break
            defer(talker, {"deploymentId": "d-4", "recheckAfterMs": 200})
        with pytest.raises(TimeoutError, match="still deferred"):
            deployment.report()


def test_the_awsiotsdk_client(broker: Broker) -> None:
    need(ipc is not None, "awsiotsdk (pip install awsiotsdk)")
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    client = GreengrassCoreIPCClientV2(
        client=ipc.connect(ipc_socket=broker.socket_path, authtoken="tok-talker")
    )
    heard: list[Any] = []

    def on_event(event: Any) -> None:
        heard.append(event)
        if event.pre_update_event is not None:  # answered off the client's event thread
            recheck = 100 if len(heard) == 1 else 0
            threading.Thread(
                target=client.defer_component_update,
                kwargs={
                    "deployment_id": event.pre_update_event.deployment_id,
                    "message": "busy",
                    "recheck_after_ms": recheck,
                },
            ).start()

    try:
        client.subscribe_to_component_updates(on_stream_event=on_event)
        report = broker.run_deployment(deployment_id="d-5", poll_interval=POLL)
        deadline = time.monotonic() + 5
        while len(heard) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        client.close()
    assert [a.recheck_after_ms for a in report.answers] == [100, 0]
    assert heard[0].pre_update_event.deployment_id == "d-5"
    assert heard[0].pre_update_event.is_ggc_restarting is False
    assert heard[2].post_update_event.deployment_id == "d-5"


def _terminate(stream: int) -> bytes:
    from .raw_ipc import frame_bytes

    return frame_bytes(MessageType.APPLICATION_MESSAGE, stream, flags=MessageFlag.TERMINATE_STREAM)
