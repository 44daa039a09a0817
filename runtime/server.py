"""The inference server: requests in, replies out, through any Transport.

Threads and why:
- the transport's network thread only calls ``deliver``, which never blocks and never calls
  IPC (a blocking IPC call from that thread deadlocks the client);
- ``workers`` threads decode, predict and publish, in arrival order when there is one;
- an overload thread answers "overloaded" when the bounded work queue is full, so memory stays
  bounded and the sender still hears back;
- a stats thread logs one line per interval.
``run`` returns after ``stop`` is set and every request received before it has been answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import protocol
from .exceptions import RequestError
from .model import Model
from .protocol import Limits, Request

__all__ = ["InferenceServer", "Message", "ServerConfig", "Stats", "Transport"]

_log = logging.getLogger(__name__)
_STOP = object()


@dataclass(frozen=True, slots=True)
class Message:
    """One delivery: ``payload`` is bytes (binaryMessage) or a decoded object (jsonMessage)."""

    topic: str
    payload: Any
    received: float = field(default_factory=time.monotonic)


class Transport(Protocol):
    """What the server needs from pub/sub. Greengrass IPC is one; tests use in-memory ones."""

    def start(self, topics: Sequence[str], deliver: Callable[[Message], None]) -> None:
        """Subscribe to ``topics`` (once, long-lived) and keep them subscribed."""

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish, waiting for a lost connection to come back within the transport's timeout."""

    def stop_receiving(self) -> None:
        """Close the subscriptions; nothing more is delivered afterwards."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerConfig:
    request_topic: str = "edgeboost/inference/request"
    response_topic: str = "edgeboost/inference/response"
    # The old Lambda-in-Docker component's topics; None disables compatibility.
    legacy_request_topic: str | None = "local/inference"
    legacy_response_topic: str = "local/result"
    limits: Limits = field(default_factory=Limits)
    queue_size: int = 64
    workers: int = 1
    stats_interval_s: float = 60.0
    drain_timeout_s: float = 30.0

    def allowed_reply_topic(self, topic: str) -> bool:
        """The response topic or a topic below it (what the recipe's access control grants)."""
        if "+" in topic or "#" in topic or "*" in topic:
            return False
        return topic == self.response_topic or topic.startswith(self.response_topic + "/")


class Stats:
    """Counters and latencies; thread-safe; ``snapshot`` resets the latency window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._latencies_ms: list[float] = []

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def answered(self, latency_ms: float, rows: int) -> None:
        with self._lock:
            self.counts["answered"] += 1
            self.counts["rows"] += rows
            self._latencies_ms.append(latency_ms)

    def snapshot(self) -> tuple[dict[str, int], list[float]]:
        with self._lock:
            latencies, self._latencies_ms = self._latencies_ms, []
            return dict(self.counts), latencies


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


class InferenceServer:
    """Serves one model. Thread-safe: ``deliver`` may be called from any thread."""

    def __init__(self, model: Model, transport: Transport, config: ServerConfig) -> None:
        self.model = model
        self.transport = transport
        self.config = config
        self.stats = Stats()
        self._work: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._overflow: queue.Queue[Any] = queue.Queue(maxsize=config.queue_size)
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()

    @property
    def topics(self) -> list[str]:
        legacy = self.config.legacy_request_topic
        return [self.config.request_topic] + ([legacy] if legacy else [])

    # --- called on the transport's network thread: never block, never call IPC -------------
    def deliver(self, message: Message) -> None:
        self.stats.count("received")
        try:
            self._work.put_nowait(message)
        except queue.Full:
            try:
                self._overflow.put_nowait(message)
            except queue.Full:
                self.stats.count("dropped")
                _log.error("both queues full: dropped a message on %s", message.topic)

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set, then drain and return 0."""
        self._start_threads()
        self.transport.start(self.topics, self.deliver)
        _log.info(
            "serving %s (sha256 %s, target %s, backend %s) on %s -> %s",
            self.model.name,
            self.model.sha256[:12],
            self.model.target,
            self.model.manifest.backend,
            ", ".join(self.topics),
            self.config.response_topic,
        )
        stop.wait()
        _log.info("stopping: no new requests; answering the %d queued", self._work.qsize())
        self.transport.stop_receiving()
        self.drain()
        self.transport.close()
        self._log_stats()
        return 0

    def drain(self) -> None:
        """Wait until every delivered message has been answered, then stop the threads."""
        deadline = time.monotonic() + self.config.drain_timeout_s
        for q in (self._work, self._overflow):
            while q.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.005)
        self._stopped.set()
        for _ in range(self.config.workers):
            self._work.put(_STOP)
        self._overflow.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1)

    def _start_threads(self) -> None:
        targets: list[tuple[str, Callable[[], None]]] = [
            (f"edgeboost-worker-{i}", self._work_loop) for i in range(self.config.workers)
        ]
        targets += [
            ("edgeboost-overload", self._overflow_loop),
            ("edgeboost-stats", self._stats_loop),
        ]
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    # --- worker side -------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while True:
            message = self._work.get()
            try:
                if message is _STOP:
                    return
                self._publish(*self.answer(message))
            except Exception:  # never let one request kill the worker
                _log.exception("unexpected failure answering a message on %s", message.topic)
                self.stats.count("internal_errors")
            finally:
                self._work.task_done()

    def _overflow_loop(self) -> None:
        while True:
            message = self._overflow.get()
            try:
                if message is _STOP:
                    return
                self.stats.count("error:overloaded")
                request_id = protocol.peek_id(message.payload)
                topic, payload = self._error(
                    message, request_id, "overloaded", "the work queue is full; retry later"
                )
                self._publish(topic, payload)
            except Exception:
                _log.exception("failed to send an overload reply")
            finally:
                self._overflow.task_done()

    def answer(self, message: Message) -> tuple[str, bytes]:
        """(topic, payload) of the reply to one message. Never raises for bad input."""
        config = self.config
        legacy_topic = message.topic == config.legacy_request_topic
        try:
            request = protocol.decode_request(
                message.payload, limits=config.limits, legacy_topic=legacy_topic
            )
        except RequestError as exc:
            self.stats.count(f"error:{exc.code}")
            return self._error(message, exc.request_id, exc.code, exc.message)
        try:
            topic = self._reply_topic(request)
            predictions = self.model.predict(request.instances, margin=request.margin)
        except Exception as exc:
            code, text = protocol.error_for(exc)
            if code == "internal":
                _log.exception("internal error answering request %r", request.id)
            self.stats.count(f"error:{code}")
            return self._error(message, request.id, code, text, legacy=request.legacy)
        latency_ms = (time.monotonic() - message.received) * 1000
        self.stats.answered(latency_ms, len(request.instances))
        if request.legacy:
            return config.legacy_response_topic, protocol.encode_legacy_reply(predictions)
        payload = protocol.encode_reply(
            request,
            predictions,
            name=self.model.name,
            sha256=self.model.sha256,
            latency_ms=latency_ms,
        )
        return topic, payload

    def _reply_topic(self, request: Request) -> str:
        if request.legacy:
            return self.config.legacy_response_topic
        if request.reply_to is None:
            return self.config.response_topic
        if not self.config.allowed_reply_topic(request.reply_to):
            raise RequestError(
                "forbidden_reply_topic",
                f"reply_to {request.reply_to!r} must be {self.config.response_topic!r} "
                "or a topic below it",
            )
        return request.reply_to

    def _error(
        self,
        message: Message,
        request_id: Any,
        code: str,
        text: str,
        *,
        legacy: bool | None = None,
    ) -> tuple[str, bytes]:
        if legacy is None:
            legacy = message.topic == self.config.legacy_request_topic
        if legacy:
            return self.config.legacy_response_topic, protocol.encode_legacy_error(code, text)
        payload = protocol.encode_error(
            request_id, code, text, name=self.model.name, sha256=self.model.sha256
        )
        return self.config.response_topic, payload

    def _publish(self, topic: str, payload: bytes) -> None:
        try:
            self.transport.publish(topic, payload)
        except Exception as exc:
            self.stats.count("publish_failed")
            _log.error("could not publish a reply on %s: %s", topic, exc)

    # --- observability -----------------------------------------------------------------------
    def _stats_loop(self) -> None:
        while not self._stopped.wait(self.config.stats_interval_s):
            self._log_stats()

    def _log_stats(self) -> None:
        counts, latencies = self.stats.snapshot()
        latencies.sort()
        errors = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("error:")}
        _log.info(
            "received %d, answered %d (%d rows), errors %s, dropped %d, queue %d; "
            "latency p50 %.3f ms p99 %.3f ms over %d requests",
            counts.get("received", 0),
            counts.get("answered", 0),
            counts.get("rows", 0),
            errors or "{}",
            counts.get("dropped", 0),
            self._work.qsize(),
            percentile(latencies, 0.50),
            percentile(latencies, 0.99),
            len(latencies),
        )
