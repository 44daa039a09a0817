"""The outbox: pipelined publishing, one counted outcome per reply, resent only when provably
not sent; and the rate-limited problem log."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Any

import pytest
from edgeboost.runtime.exceptions import (
    IpcNotSentError,
    IpcRefusedError,
    IpcUnconfirmedError,
)
from edgeboost.runtime.outbox import Outbox, Reply
from edgeboost.runtime.service_log import ProblemLog


class ScriptedTransport:
    """Publishes fail with the scripted errors in turn, then succeed; answers can be held."""

    def __init__(self, *errors: Exception, hold: bool = False) -> None:
        self.errors = list(errors)
        self.attempts: list[bytes] = []
        self.held: list[Future[None]] = []
        self.hold = hold
        self.connected = threading.Event()
        self.connected.set()
        self.reconnects = 0

    def publish(self, topic: str, payload: bytes) -> Future[None]:
        self.attempts.append(payload)
        future: Future[None] = Future()
        if self.errors:
            future.set_exception(self.errors.pop(0))
        elif self.hold:
            self.held.append(future)
        else:
            future.set_result(None)
        return future

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)


def run_outbox(transport: Any, **options: Any) -> tuple[Outbox, Counter[str], threading.Thread]:
    counts: Counter[str] = Counter()
    outbox = Outbox(
        transport,
        lambda key: counts.update([key]),
        ProblemLog(logging.getLogger("test")),
        **options,
    )
    thread = threading.Thread(target=outbox.run, daemon=True)
    thread.start()
    return outbox, counts, thread


def test_a_reply_not_sent_waits_for_the_connection_and_is_sent_once() -> None:
    transport = ScriptedTransport(IpcNotSentError("not connected"))
    transport.connected.clear()
    outbox, counts, _ = run_outbox(transport)
    outbox.put(Reply("t", b"1"))
    time.sleep(0.2)
    assert transport.attempts == [b"1"]  # tried once, waiting for the connection
    transport.connected.set()
    assert outbox.wait_idle(time.monotonic() + 5)
    assert transport.attempts == [b"1", b"1"]
    assert counts == {"published": 1}


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (IpcUnconfirmedError("no answer"), "publish_unconfirmed"),
        (
            IpcRefusedError("UnauthorizedError", "PublishToTopic", "no", topic="t"),
            "publish_refused:UnauthorizedError",
        ),
        (IpcRefusedError("ServiceError", "PublishToTopic", "full"), "publish_refused:ServiceError"),
    ],
)
def test_a_reply_that_may_have_arrived_or_was_refused_is_never_resent(
    error: Exception, outcome: str
) -> None:
    transport = ScriptedTransport(error)
    outbox, counts, _ = run_outbox(transport)
    outbox.put(Reply("t", b"1"))
    assert outbox.wait_idle(time.monotonic() + 5)
    assert transport.attempts == [b"1"]
    assert counts == {outcome: 1}


def test_a_reply_not_sent_gives_up_after_the_reconnect_wait() -> None:
    transport = ScriptedTransport(*[IpcNotSentError("down")] * 100)
    transport.connected.clear()
    outbox, counts, _ = run_outbox(transport, reconnect_wait_s=0.3)
    outbox.put(Reply("t", b"1"))
    assert outbox.wait_idle(time.monotonic() + 5)
    assert counts == {"publish_not_sent": 1}
    assert len(transport.attempts) == 2  # once, then once more when the wait ran out


def test_publishes_are_pipelined_up_to_the_in_flight_limit() -> None:
    transport = ScriptedTransport(hold=True)
    outbox, counts, _ = run_outbox(transport, max_in_flight=8)
    for i in range(20):
        outbox.put(Reply("t", str(i).encode()))
    time.sleep(0.2)
    assert len(transport.attempts) == 8  # sent without waiting for answers, up to the limit
    assert outbox.unfinished == 20
    while transport.held:
        transport.held.pop(0).set_result(None)
        time.sleep(0.005)
    assert outbox.wait_idle(time.monotonic() + 5)
    assert counts == {"published": 20}
    assert transport.attempts == [str(i).encode() for i in range(20)]  # in order


def test_close_stops_at_the_deadline_and_leaves_the_rest_unfinished() -> None:
    transport = ScriptedTransport(hold=True)
    outbox, _, thread = run_outbox(transport, max_in_flight=1)
    for i in range(3):
        outbox.put(Reply("t", str(i).encode()))
    time.sleep(0.1)
    outbox.close(time.monotonic() + 0.2)
    thread.join(2)
    assert not thread.is_alive()
    assert outbox.unfinished == 3


def test_the_problem_log_logs_each_kind_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    problems = ProblemLog(logging.getLogger("p"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="p"):
        assert problems.report("a", "first")
        for _ in range(5):
            assert not problems.report("a", "again")
        assert problems.report("b", "other kind")
        now[0] = 11.0
        assert problems.report("a", "later")
    assert caplog.messages == ["first", "other kind", "later (5 more like this in the last 11 s)"]
