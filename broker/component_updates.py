"""Component updates as the Java Nucleus runs them (read from its source, not copied): who
listens (SubscribeToComponentUpdates, in :mod:`lifecycle`), which answers are awaited
(DeferComponentUpdate) -- LifecycleIPCEventStreamAgent -- and the deployment's side that
waits for them, UpdateSystemPolicyService.

What the Nucleus does with a deployment whose component update policy is NOTIFY_COMPONENTS
(the default), and what :meth:`ComponentUpdates.run_deployment` does the same way:

1. It sends a PreComponentUpdateEvent (``deploymentId``, ``isGgcRestarting``) to every stream
   of every component that subscribed, whichever components the deployment changes; for each
   stream it keeps a pending answer under (component, deployment), only the latest per pair.
2. It waits for those answers for up to the policy's timeout (60 s by default), looking once
   a second (it sleeps a second after each look, so even prompt answers take a second). A
   DeferComponentUpdate completes its component's pending answer: its ``recheckAfterMs``
   defers the deployment when it is positive (0 is "go on"); an answer without it is logged,
   never removed, and so holds the wait until the timeout; a subscriber that does not answer
   holds it too. Two streams of one component: the first one's answer can never come (the
   pair holds only the second), so that wait lasts the whole timeout as well.
3. The largest ``recheckAfterMs`` answered, if positive: it sleeps that long and starts again
   at 1 with a new event. There is no bound on how often: a component may defer forever.
4. Otherwise it drops every pending answer (a late DeferComponentUpdate then gets
   ServiceError "Time limit to respond to PreComponentUpdateEvent exceeded"), applies the
   deployment, and sends a PostComponentUpdateEvent to every subscriber.

Neither operation is authorized (LifecycleIPCService registers only PauseComponent and
ResumeComponent). SubscribeToComponentUpdates fails only for a component the Nucleus does
not know, which cannot happen here (every component has a recipe). DeferComponentUpdate fails
with InvalidArgumentsError when the caller has no subscription or names no deployment, and
with ServiceError when nothing awaits its answer. Nucleus lite serves neither (ServiceError).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from edgeboost.broker.errors import InvalidArgumentsError, ServiceError
from edgeboost.broker.pubsub import EventSink

__all__ = [
    "COMPONENT_UPDATE_POLICY_EVENTS",
    "ComponentUpdates",
    "DeferRequest",
    "Deferral",
    "DeploymentReport",
    "UpdateListener",
]

logger = logging.getLogger(__name__)

COMPONENT_UPDATE_POLICY_EVENTS = "aws.greengrass#ComponentUpdatePolicyEvents"
DEFAULT_TIMEOUT_S = 60.0  # ComponentUpdatePolicy's timeout
POLL_S = 1.0  # UpdateSystemPolicyService looks at the answers once a second


@dataclass(eq=False)
class UpdateListener:
    """One open SubscribeToComponentUpdates stream. Identity matters: two streams of one
    component are two listeners."""

    component: str
    sink: EventSink
    stream_id: int


@dataclass(frozen=True)
class Deferral:
    """One DeferComponentUpdate as it was answered to a PreComponentUpdateEvent."""

    component: str
    recheck_after_ms: int | None
    message: str | None
    after_s: float  # from sending the event it answers to receiving it


@dataclass
class DeploymentReport:
    """What a deployment's update notification went through (:meth:`run_deployment`)."""

    deployment_id: str
    events: int = 0  # PreComponentUpdateEvents sent, to all subscribers at once
    answers: list[Deferral] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # components, one per event each
    waited_s: float = 0.0  # from the first event to applying the deployment

    @property
    def deferrals(self) -> list[Deferral]:
        """The answers that held the deployment back (a positive recheckAfterMs)."""
        return [
            a for a in self.answers if a.recheck_after_ms is not None and a.recheck_after_ms > 0
        ]


@dataclass(frozen=True)
class DeferRequest:
    """A DeferComponentUpdateRequest as the Nucleus deserializes it: every member may be null."""

    deployment_id: str | None
    message: str | None
    recheck_after_ms: int | None


class ComponentUpdates:
    """Who listens for component updates and which answers are awaited; thread-safe (the
    operations run on the broker's event loop, a deployment on a thread of its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[UpdateListener]] = {}
        self._pending: dict[tuple[str, str], Future[tuple[DeferRequest, float]]] = {}

    # -- the operations' side (event loop) -------------------------------------------------------
    def add(self, listener: UpdateListener) -> None:
        with self._lock:
            self._listeners.setdefault(listener.component, []).append(listener)

    def remove(self, listeners: list[UpdateListener]) -> None:
        with self._lock:
            for listener in listeners:
                streams = self._listeners.get(listener.component, [])
                if listener in streams:
                    streams.remove(listener)
                if not streams:
                    self._listeners.pop(listener.component, None)

    def subscribers(self) -> list[str]:
        """The components with at least one open stream, one entry per stream."""
        with self._lock:
            return [name for name, streams in self._listeners.items() for _ in streams]

    def defer(self, component: str, request: DeferRequest) -> None:
        with self._lock:
            if component not in self._listeners:
                raise InvalidArgumentsError(
                    "Component is not subscribed to component update events"
                )
            if request.deployment_id is None:
                raise InvalidArgumentsError(
                    "Cannot defer the update, the deployment ID provided was null"
                )
            pending = self._pending.pop((component, request.deployment_id), None)
        if pending is None:
            raise ServiceError("Time limit to respond to PreComponentUpdateEvent exceeded")
        pending.set_result((request, time.monotonic()))

    # -- the deployment's side (its own thread) --------------------------------------------------
    def run_deployment(
        self,
        send: Callable[[UpdateListener, dict[str, Any]], bool],
        *,
        deployment_id: str | None = None,
        ggc_restarting: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        poll_s: float = POLL_S,
        apply: Callable[[], object] | None = None,
        give_up_after_s: float | None = None,
    ) -> DeploymentReport:
        """Notify, wait, and apply, as described in the module docstring. ``send`` queues an
        event on a listener's stream (False when the stream is gone). Raises TimeoutError when
        the subscribers are still deferring ``give_up_after_s`` after the first event (the
        Nucleus itself would go on waiting)."""
        report = DeploymentReport(deployment_id or str(uuid.uuid4()))
        deployment = report.deployment_id
        started = time.monotonic()
        while True:
            awaited = self._notify_pre_update(send, deployment, ggc_restarting)
            report.events += 1
            recheck_ms = self._time_to_recheck(awaited, deployment, timeout_s, poll_s, report)
            if recheck_ms <= 0:
                break
            if give_up_after_s is not None and (
                time.monotonic() - started + recheck_ms / 1000 > give_up_after_s
            ):
                self.discard_pending()
                raise TimeoutError(
                    f"deployment {deployment} still deferred after {report.events} events "
                    f"({time.monotonic() - started:.1f} s); the Nucleus would go on waiting"
                )
            logger.info("deployment %s: waiting %d ms before asking again", deployment, recheck_ms)
            time.sleep(recheck_ms / 1000)
        self.discard_pending()
        report.waited_s = time.monotonic() - started
        logger.info(
            "deployment %s: applying after %.1f s (%d PreComponentUpdateEvents, %d deferrals)",
            deployment,
            report.waited_s,
            report.events,
            len(report.deferrals),
        )
        if apply is not None:
            apply()
        self._notify(send, {"postUpdateEvent": {"deploymentId": deployment}})
        return report

    def discard_pending(self) -> None:
        with self._lock:
            self._pending.clear()

    def _notify_pre_update(
        self,
        send: Callable[[UpdateListener, dict[str, Any]], bool],
        deployment: str,
        restarting: bool,
    ) -> list[tuple[str, Future[tuple[DeferRequest, float]], float]]:
        self.discard_pending()
        event = {"preUpdateEvent": {"deploymentId": deployment, "isGgcRestarting": restarting}}
        awaited = []
        for listener in self._all_listeners():
            pending: Future[tuple[DeferRequest, float]] = Future()
            key = (listener.component, deployment)
            with self._lock:
                self._pending[key] = pending  # before the event: an answer may come at once
            if not send(listener, event):
                logger.error(
                    "deployment %s: PreComponentUpdateEvent not sent to %s",
                    deployment,
                    listener.component,
                )
                with self._lock:
                    if self._pending.get(key) is pending:
                        del self._pending[key]
                continue
            awaited.append((listener.component, pending, time.monotonic()))
        logger.info(
            "deployment %s: PreComponentUpdateEvent to %d subscribers%s",
            deployment,
            len(awaited),
            f" ({', '.join(sorted({c for c, _, _ in awaited}))})" if awaited else "",
        )
        return awaited

    def _time_to_recheck(
        self,
        awaited: list[tuple[str, Future[tuple[DeferRequest, float]], float]],
        deployment: str,
        timeout_s: float,
        poll_s: float,
        report: DeploymentReport,
    ) -> int:
        """The largest positive recheckAfterMs answered within ``timeout_s`` (0 when none)."""
        started = time.monotonic()
        longest = 0
        null_seen: set[int] = set()
        while time.monotonic() - started < timeout_s and awaited:
            for entry in list(awaited):
                component, pending, sent = entry
                if not pending.done():
                    continue
                request, answered = pending.result()
                if request.recheck_after_ms is None:
                    # Logged and left in place: the wait goes on to the timeout.
                    if id(pending) not in null_seen:
                        null_seen.add(id(pending))
                        report.answers.append(
                            Deferral(component, None, request.message, answered - sent)
                        )
                    logger.warning(
                        "deployment %s: %s deferred without recheckAfterMs; ignored",
                        deployment,
                        component,
                    )
                    continue
                answered_after = answered - sent
                report.answers.append(
                    Deferral(component, request.recheck_after_ms, request.message, answered_after)
                )
                if request.recheck_after_ms > longest:
                    longest = request.recheck_after_ms
                    logger.info(
                        "deployment %s: %s deferred it by %d ms: %s",
                        deployment,
                        component,
                        request.recheck_after_ms,
                        request.message,
                    )
                else:
                    logger.info("deployment %s: %s lets it go on", deployment, component)
                awaited.remove(entry)
            time.sleep(poll_s)
        for component, pending, _ in awaited:
            if not pending.done():
                report.unanswered.append(component)
                logger.warning(
                    "deployment %s: no answer from %s within %.0f s",
                    deployment,
                    component,
                    timeout_s,
                )
        return longest

    def _notify(self, send: Callable[[UpdateListener, dict[str, Any]], bool], event: Any) -> None:
        for listener in self._all_listeners():
            if not send(listener, event):
                logger.error("PostComponentUpdateEvent not sent to %s", listener.component)

    def _all_listeners(self) -> list[UpdateListener]:
        with self._lock:
            return [listener for streams in self._listeners.values() for listener in streams]
