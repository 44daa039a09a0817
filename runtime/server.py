"""The inference server: requests in, replies out, through any Transport.

Every message received ends in exactly one counted outcome: a reply (predictions or an error,
``overloaded`` included) that the IPC server confirmed, refused or left unconfirmed (see
``outbox.py``); ``shed`` when even the overload queue is full (``inbox.py``); or ``abandoned``
when shutdown came first. Nothing is dropped without being counted and logged.

Threads, as few as a small device deserves:
- the transport's network thread only calls ``deliver``, which never blocks and never calls
  IPC (a blocking IPC call from that thread deadlocks the awsiotsdk client);
- ``workers`` threads (one by default) answer ``overloaded`` entries first (microseconds
  each, so they go out at the rate requests arrive), then decode, predict and publish, with
  many replies in flight at once;
- the thread that calls ``run`` logs the stats line once per interval and runs the shutdown.

``run`` returns after ``stop`` is set: it answers what it can until the shutdown deadline
(the Nucleus SIGKILLs a component 5 s after SIGTERM) and returns non-zero when received
requests were abandoned or the IPC server refused a subscription.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque

from . import protocol
from .exceptions import IpcError, RequestError
from .inbox import Inbox, Overloaded
from .model import Model
from .outbox import Outbox, Reply
from .protocol import Limits, Request
from .records import record
from .service_log import ProblemLog
from .transport import Message

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .transport import Transport

__all__ = [
    "EXIT_ABANDONED",
    "EXIT_IPC_REFUSED",
    "EXIT_OK",
    "InferenceServer",
    "Message",
    "ServerConfig",
    "Stats",
]

_log = logging.getLogger(__name__)
_POLL_S = 0.25  # how often the run loop looks for scheduled work and the stats clock

EXIT_OK = 0
EXIT_IPC_REFUSED = 2  # a subscription or the connection was refused: fix the recipe
EXIT_ABANDONED = 3  # shutdown came before every received request was answered

# Outcomes that end a received message (with "shed"); see outbox.py for the publish ones.
_FINAL = ("published", "publish_not_sent", "publish_unconfirmed", "unanswerable")


@record
class ServerConfig:
    request_topic: str = "edgeboost/inference/request"
    response_topic: str = "edgeboost/inference/response"
    # The old Lambda-in-Docker component's topics; None disables compatibility.
    legacy_request_topic: str | None = "local/inference"
    legacy_response_topic: str = "local/result"
    limits: Limits = Limits()  # immutable, so one instance serves as every default
    queue_size: int = 64  # requests waiting for a worker; beyond it they get "overloaded"
    overload_queue_size: int = 4096  # requests waiting for their "overloaded" reply
    workers: int = 1
    max_in_flight: int = 32  # replies awaiting the IPC server's confirmation
    stats_interval_s: float = 60.0
    shutdown_timeout_s: float = 3.5  # from SIGTERM to exit; the Nucleus SIGKILLs at 5 s
    reconnect_wait_s: float = 10.0  # how long a reply waits for a lost connection
    problem_log_interval_s: float = 10.0  # one line per kind of repeated error

    def allowed_reply_topic(self, topic: str) -> bool:
        """The response topic or a topic below it (what the recipe's access control grants)."""
        if "+" in topic or "#" in topic or "*" in topic:
            return False
        return topic == self.response_topic or topic.startswith(self.response_topic + "/")


class LatencyHistogram:
    """Latencies in buckets 5% wide, from 1 us to over an hour: constant memory whatever the
    request rate, percentiles within 5%. Not thread-safe (Stats holds the lock)."""

    _GROWTH = 1.05
    _SMALLEST_MS = 0.001
    _BUCKETS = 512

    def __init__(self) -> None:
        self.counts = [0] * self._BUCKETS
        self.total = 0

    def add(self, latency_ms: float) -> None:
        ratio = max(latency_ms / self._SMALLEST_MS, 1.0)
        self.counts[min(self._BUCKETS - 1, int(math.log(ratio, self._GROWTH)))] += 1
        self.total += 1

    def percentile(self, fraction: float) -> float:
        """The upper edge of the bucket holding that fraction of the latencies (0 if none)."""
        if not self.total:
            return 0.0
        rank, seen = max(1, math.ceil(fraction * self.total)), 0
        for bucket, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return float(self._SMALLEST_MS * self._GROWTH ** (bucket + 1))
        raise AssertionError("unreachable: the counts add up to total")


class Stats:
    """Counters and a latency histogram; thread-safe; ``snapshot`` starts a new histogram."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._latencies = LatencyHistogram()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def answered(self, latency_ms: float, rows: int) -> None:
        with self._lock:
            self.counts["answered"] += 1
            self.counts["rows"] += rows
            self._latencies.add(latency_ms)

    def snapshot(self) -> tuple[dict[str, int], LatencyHistogram]:
        with self._lock:
            latencies, self._latencies = self._latencies, LatencyHistogram()
            return dict(self.counts), latencies

    def open_requests(self) -> int:
        """Received and not yet ended in an outcome."""
        with self._lock:
            counts = self.counts
            ended = sum(counts[key] for key in _FINAL) + counts["shed"]
            ended += sum(v for k, v in counts.items() if k.startswith("publish_refused:"))
            return counts["received"] - ended


class InferenceServer:
    """Serves one model. Thread-safe: ``deliver`` may be called from any thread."""

    def __init__(self, model: Model, transport: Transport, config: ServerConfig) -> None:
        self.model = model
        self.transport = transport
        self.config = config
        self.stats = Stats()
        self.problems = ProblemLog(_log, interval_s=config.problem_log_interval_s)
        self.outbox = Outbox(
            transport,
            self.stats.count,
            self.problems,
            max_in_flight=config.max_in_flight,
            reconnect_wait_s=config.reconnect_wait_s,
        )
        self._inbox = Inbox(config.queue_size, config.overload_queue_size)
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        self._stop: threading.Event | None = None
        self._fatal: Exception | None = None
        self._scheduled: deque[Callable[[], None]] = deque()  # appends are thread-safe

    @property
    def fatal(self) -> Exception | None:
        """What made the server stop on its own (a refused subscription or token), if anything."""
        return self._fatal

    @property
    def topics(self) -> list[str]:
        legacy = self.config.legacy_request_topic
        return [self.config.request_topic] + ([legacy] if legacy else [])

    # --- called on the transport's network thread: never block, never call IPC -------------
    def deliver(self, message: Message) -> None:
        self.stats.count("received")
        if not self._inbox.offer(message):
            self.stats.count("shed")
            self.problems.report(
                "shed",
                f"shed a request on {message.topic}: {self.config.queue_size} requests wait "
                f"for a worker and {self.config.overload_queue_size} for an overloaded reply",
            )

    # --- lifecycle ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, on_serving: Callable[[], None] | None = None) -> int:
        """Serve until ``stop`` is set; return an exit status (EXIT_*). ``on_serving`` runs once
        subscribed (it may ``schedule`` work); this thread then runs what is scheduled and logs
        the stats line."""
        self._stop = stop
        self._start_threads()
        try:
            self.transport.start(self.topics, self.deliver, self._on_fatal)
        except IpcError as exc:
            self._on_fatal(exc)
        else:
            _log.info(
                "serving %s (sha256 %s, target %s, backend %s) on %s -> %s",
                self.model.name,
                self.model.sha256[:12],
                self.model.target,
                self.model.manifest.backend,
                ", ".join(self.topics),
                self.config.response_topic,
            )
            if on_serving is not None:
                self._run_safely(on_serving)
        next_stats = time.monotonic() + self.config.stats_interval_s
        while not stop.wait(_POLL_S):
            while self._scheduled:
                self._run_safely(self._scheduled.popleft())
            if time.monotonic() >= next_stats:
                self._log_stats()
                next_stats = time.monotonic() + self.config.stats_interval_s
        return self.shutdown(time.monotonic() + self.config.shutdown_timeout_s)

    def schedule(self, task: Callable[[], None]) -> None:
        """Run ``task`` on the thread that runs ``run`` (within a quarter of a second): work
        that must not run on the transport's network thread, such as an IPC call."""
        self._scheduled.append(task)

    def swap_model(self, model: Model) -> None:
        """Serve ``model`` from the next request on; requests being answered finish with the
        model they started with."""
        previous, self.model = self.model, model
        _log.info(
            "now serving %s (sha256 %s), was %s (sha256 %s)",
            model.name,
            model.sha256[:12],
            previous.name,
            previous.sha256[:12],
        )

    def apply_settings(self, config: ServerConfig) -> None:
        """New limits, queue sizes and topics, from the next request on (the transport is
        already subscribed to the request topics)."""
        self._inbox.resize(config.queue_size, config.overload_queue_size)
        self.config = config
        _log.info(
            "settings: max payload %d bytes, max rows %d, max reply %d bytes, queue %d, "
            "overload queue %d",
            config.limits.max_payload_bytes,
            config.limits.max_rows,
            config.limits.max_reply_bytes,
            config.queue_size,
            config.overload_queue_size,
        )

    def _run_safely(self, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception:  # a failed update must not stop the serving
            _log.exception("a scheduled task failed")

    def shutdown(self, deadline: float) -> int:
        """Stop receiving, answer what can be answered before ``deadline``, stop the workers."""
        _log.info("stopping: no new requests; answering the %d waiting", sum(self._inbox.sizes()))
        # Budget: the subscriptions and the connection each get a short slice; the rest of
        # the time goes to answering.
        self.transport.stop_receiving(timeout=_remaining(deadline, 0.5))
        while self.stats.open_requests() > 0 and time.monotonic() < deadline - 0.3:
            time.sleep(0.01)
        self._stopped.set()
        self.outbox.close(time.monotonic())
        self.transport.close(timeout=_remaining(deadline, 0.2))
        abandoned = self.stats.open_requests()
        self.stats.count("abandoned", abandoned)
        self._log_stats()
        if self._fatal is not None:
            return EXIT_IPC_REFUSED
        if abandoned:
            _log.error("exiting with %d received requests unanswered", abandoned)
            return EXIT_ABANDONED
        return EXIT_OK

    def _on_fatal(self, error: Exception) -> None:
        """The IPC server refused a subscription or the connection: nothing can be served."""
        self._fatal = error
        _log.critical("%s; exiting so that Greengrass marks the component broken", error)
        if self._stop is not None:
            self._stop.set()

    def _start_threads(self) -> None:
        for i in range(self.config.workers):
            thread = threading.Thread(target=self._work_loop, name=f"edgeboost-worker-{i}")
            thread.daemon = True  # a worker stuck in native code must not delay the exit
            thread.start()
            self._threads.append(thread)

    # --- worker side -------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while not self._stopped.is_set():
            self.outbox.resend_waiting()
            entry = self._inbox.take(timeout=0.25)
            if entry is None:
                continue
            try:
                if isinstance(entry, Overloaded):
                    topic, payload = self._overloaded(entry)
                else:
                    topic, payload = self.answer(entry)
            except Exception:  # answer() words every failure; this is the last resort
                self.stats.count("unanswerable")
                _log.exception("could not answer a message on %s", entry.topic)
                continue
            self.outbox.send(Reply(topic, payload))

    def _overloaded(self, entry: Overloaded) -> tuple[str, bytes]:
        self.stats.count("error:overloaded")
        return self._error(
            entry.topic, entry.reply_id(), "overloaded", "the work queue is full; retry later"
        )

    def answer(self, message: Message) -> tuple[str, bytes]:
        """(topic, payload) of the reply to one message. Never raises for bad input.

        The model and the configuration are read once, so a swap between two requests never
        mixes them: a reply names the model that computed it."""
        config, model = self.config, self.model
        legacy_topic = message.topic == config.legacy_request_topic
        try:
            request = protocol.decode_request(
                message.payload, limits=config.limits, legacy_topic=legacy_topic
            )
        except RequestError as exc:
            self.stats.count(f"error:{exc.code}")
            return self._error(message.topic, exc.request_id, exc.code, exc.message, model=model)
        try:
            topic = self._reply_topic(request)
            predictions = model.predict(request.instances, margin=request.margin)
        except Exception as exc:
            code, text = protocol.error_for(exc)
            if code == "internal":
                _log.exception("internal error answering request %r", request.id)
            self.stats.count(f"error:{code}")
            return self._error(
                message.topic, request.id, code, text, legacy=request.legacy, model=model
            )
        latency_ms = (time.monotonic() - message.received) * 1000
        if request.legacy:
            topic, payload = config.legacy_response_topic, protocol.encode_legacy_reply(predictions)
        else:
            payload = protocol.encode_reply(
                request,
                predictions,
                name=model.name,
                sha256=model.sha256,
                latency_ms=latency_ms,
            )
        limit = config.limits.max_reply_bytes
        if len(payload) > limit:  # the IPC server would refuse it, or drop the connection
            self.stats.count("error:too_large")
            text = (
                f"the reply is {len(payload)} bytes; the limit is {limit} "
                f"(--max-reply-bytes): send fewer than {len(request.instances)} instances"
            )
            return self._error(
                message.topic, request.id, "too_large", text, legacy=request.legacy, model=model
            )
        self.stats.answered(latency_ms, len(request.instances))
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
        request_topic: str,
        request_id: Any,
        code: str,
        text: str,
        *,
        legacy: bool | None = None,
        model: Model | None = None,
    ) -> tuple[str, bytes]:
        if legacy is None:
            legacy = request_topic == self.config.legacy_request_topic
        if legacy:
            return self.config.legacy_response_topic, protocol.encode_legacy_error(code, text)
        model = model or self.model
        payload = protocol.encode_error(
            request_id, code, text, name=model.name, sha256=model.sha256
        )
        return self.config.response_topic, payload

    # --- observability -----------------------------------------------------------------------
    def _log_stats(self) -> None:
        counts, latencies = self.stats.snapshot()
        errors = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("error:")}
        failures = {
            k.removeprefix("publish_"): v
            for k, v in counts.items()
            if k.startswith("publish_") and v
        }
        _log.info(
            "received %d, answered %d (%d rows), overloaded %d, errors %s, published %d, "
            "publish failures %s, shed %d, abandoned %d, reconnects %d, queue %d, "
            "overload queue %d, replies pending %d, model swaps %d (refused %d); "
            "latency p50 %.3f ms p99 %.3f ms over %d",
            counts.get("received", 0),
            counts.get("answered", 0),
            counts.get("rows", 0),
            counts.get("error:overloaded", 0),
            errors or "{}",
            counts.get("published", 0),
            failures or "{}",
            counts.get("shed", 0),
            counts.get("abandoned", 0),
            self.transport.reconnects,
            *self._inbox.sizes(),
            self.outbox.pending,
            counts.get("model_swaps", 0),
            counts.get("model_refused", 0),
            latencies.percentile(0.50),
            latencies.percentile(0.99),
            latencies.total,
        )


def _remaining(deadline: float, at_most: float) -> float:
    return max(0.0, min(at_most, deadline - time.monotonic()))
