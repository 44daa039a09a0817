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


def make_outbox(transport: Any, **options: Any) -> tuple[Outbox, Counter[str]]:
    counts: Counter[str] = Counter()
    outbox = Outbox(
        transport,
        lambda key: counts.update([key]),
        ProblemLog(logging.getLogger("test")),
        **options,
    )
    return outbox, counts


def test_a_reply_not_sent_waits_for_the_connection_and_is_sent_once() -> None:
    transport = ScriptedTransport(IpcNotSentError("not connected"))
    transport.connected.clear()
    outbox, counts = make_outbox(transport)
    outbox.send(Reply("t", b"1"))
    outbox.resend_waiting()
    assert transport.attempts == [b"1"]  # tried once; waits for the connection
    assert outbox.pending == 1 and not counts
    transport.connected.set()
    outbox.resend_waiting()
    assert transport.attempts == [b"1", b"1"]
    assert counts == {"published": 1} and outbox.pending == 0


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
    outbox, counts = make_outbox(transport)
    outbox.send(Reply("t", b"1"))
    outbox.resend_waiting()
    assert transport.attempts == [b"1"]
    assert counts == {outcome: 1} and outbox.pending == 0


def test_a_reply_not_sent_gives_up_after_the_reconnect_wait() -> None:
    transport = ScriptedTransport(*[IpcNotSentError("down")] * 100)
    transport.connected.clear()
    outbox, counts = make_outbox(transport, reconnect_wait_s=0.2)
    outbox.send(Reply("t", b"1"))
    outbox.resend_waiting()
    assert outbox.pending == 1 and not counts
    time.sleep(0.3)
    outbox.resend_waiting()
    assert counts == {"publish_not_sent": 1} and outbox.pending == 0
    assert transport.attempts == [b"1"]  # never resent without a connection


def test_publishes_are_pipelined_up_to_the_in_flight_limit() -> None:
    transport = ScriptedTransport(hold=True)
    outbox, counts = make_outbox(transport, max_in_flight=8)
    sender = threading.Thread(
        target=lambda: [outbox.send(Reply("t", str(i).encode())) for i in range(20)]
    )
    sender.start()
    time.sleep(0.2)
    assert len(transport.attempts) == 8  # sent without waiting for answers, up to the limit
    assert outbox.pending == 8
    while sender.is_alive() or transport.held:
        if transport.held:
            transport.held.pop(0).set_result(None)
        time.sleep(0.002)
    assert counts == {"published": 20} and outbox.pending == 0
    assert transport.attempts == [str(i).encode() for i in range(20)]  # in order


def test_after_close_a_send_does_not_wait_for_a_slot() -> None:
    transport = ScriptedTransport(hold=True)
    outbox, _ = make_outbox(transport, max_in_flight=1)
    assert outbox.send(Reply("t", b"1"))
    outbox.close(time.monotonic() + 0.2)
    started = time.monotonic()
    assert not outbox.send(Reply("t", b"2"))
    assert time.monotonic() - started < 1
    assert transport.attempts == [b"1"] and outbox.pending == 1


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


def test_the_latency_histogram_has_percentiles_within_5_percent_in_constant_memory() -> None:
    from edgeboost.runtime.server import LatencyHistogram

    histogram = LatencyHistogram()
    assert histogram.percentile(0.5) == 0.0
    values = [0.01 * 1.001**i for i in range(10_000)]  # 0.01 ms to ~220 ms
    for value in values:
        histogram.add(value)
    for fraction in (0.5, 0.9, 0.99):
        exact = values[int(fraction * len(values)) - 1]
        assert exact <= histogram.percentile(fraction) <= exact * 1.05 * 1.001
    histogram.add(1e9)  # beyond the last bucket: counted, not lost
    histogram.add(0.0)
    assert histogram.total == 10_002 and len(histogram.counts) == 512
