"""The inference component's life on a Greengrass device: its model component, its live
configuration and its reported state, through the built-in IPC transport.

The model lives in a component of its own (``edgeboost package``): artifacts only, one zip per
platform unpacked into ``{artifacts:decompressedPath}/bundle-<content hash>/``, and a default
configuration that names them::

    Bundle: {ModelName, ModelSha256, Version, Folders: {<target triple>: "bundle-<hash>"}}

A new model is a new version of that component. The Nucleus unpacks it beside the old one and
gives the component its new default configuration, which this side hears about through
SubscribeToConfigurationUpdate: it loads the new bundle (every check of ``Model.load``, and the
model hash the configuration names), and swaps it in between two requests. A bundle that fails
is refused with a log line and a count, and the previous model keeps serving. Folders named by
content hash mean an unarchiver that skips same-size files can never mix two models.

Its own configuration (the recipe's limits and queue sizes) is applied live the same way.

A deployment that updates or restarts this component (or any other: the Nucleus tells every
component that subscribed to component updates, and says neither which component nor why)
first sends a PreComponentUpdateEvent, and waits for each subscriber's DeferComponentUpdate:
see :class:`UpdateDeferral` for how this one answers.
"""

from __future__ import annotations

import logging
import math
import os
import time

from .exceptions import BundleError, IpcError, IpcRefusedError
from .model import Model
from .records import replace
from .targets import host_target

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~1 MiB)
if TYPE_CHECKING:
    from typing import Any

    from .ipc_transport import BuiltinTransport
    from .server import InferenceServer

__all__ = [
    "ComponentLife",
    "ModelComponent",
    "UpdateDeferral",
    "fetch_configuration",
    "report_errored",
    "substitute_thing_name",
]

_log = logging.getLogger(__name__)
_CALL_TIMEOUT_S = 5.0
_ERRORED_TIMEOUT_S = 0.5  # UpdateState ERRORED before a fatal exit: the login, then the answer
MAX_UPDATE_DEFER_S = 10  # seconds a deployment may be held up by requests in flight
RECHECK_MS = 1000  # what a deferral asks for; the Nucleus then sends the event again
_IDLE_LOOK_S = 0.2  # how long to look for a moment with nothing in flight before deferring
THING_NAME_ENV = "AWS_IOT_THING_NAME"  # set by the Nucleus for every component

# The recipe's configuration keys (recipes/inference.yaml) that apply without a restart.
_LIVE_LIMITS = {
    "MaxPayloadBytes": "max_payload_bytes",
    "MaxRows": "max_rows",
    "MaxReplyBytes": "max_reply_bytes",
}
_LIVE_QUEUES = {"QueueSize": "queue_size", "OverloadQueueSize": "overload_queue_size"}
_LIVE_TOPICS = {
    "RequestTopic": "request_topic",
    "ResponseTopic": "response_topic",
    "LegacyRequestTopic": "legacy_request_topic",
    "LegacyResponseTopic": "legacy_response_topic",
}


def substitute_thing_name(topic: str) -> str:
    """``{iot:thingName}`` in a topic becomes this device's thing name (as in recipes)."""
    if "{iot:thingName}" not in topic:
        return topic
    thing = os.environ.get(THING_NAME_ENV)
    if not thing:
        raise IpcError(f"topic {topic!r} uses {{iot:thingName}} but {THING_NAME_ENV} is not set")
    return topic.replace("{iot:thingName}", thing)


def fetch_configuration(component: str | None, key_path: list[str]) -> Any:
    """One GetConfiguration on a connection of its own, before the server starts: what the
    Nucleus answers for ``key_path`` of ``component`` (None: this component): a container's
    contents, or a leaf as ``{name: value}``."""
    request: dict[str, Any] = {"keyPath": key_path}
    if component is not None:
        request["componentName"] = component
    return _call_once("GetConfiguration", request, _CALL_TIMEOUT_S).get("value")


def report_errored(reason: BaseException, *, timeout_s: float = _ERRORED_TIMEOUT_S) -> None:
    """Before a fatal exit: tell the Nucleus this component failed (UpdateState ERRORED), on a
    connection of its own, within ``timeout_s``. When the IPC server cannot be reached, refuses
    the token or the state, one log line says so and the exit goes on: the Nucleus sees the
    exit status anyway."""
    started = time.monotonic()
    try:
        _call_once("UpdateState", {"state": "ERRORED"}, timeout_s)
    except Exception as exc:  # whatever it is, the exit must go on
        _log.info("could not report ERRORED to the IPC server (%s); exiting", exc)
        return
    _log.info(
        "reported ERRORED to the IPC server in %.0f ms (%s)",
        (time.monotonic() - started) * 1000,
        type(reason).__name__,
    )


def _call_once(operation: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One call on a connection of its own, opened and answered within about ``timeout_s``
    (the login and the answer each get it): for before the server starts, and after it
    stopped."""
    from .ipc_connection import IpcConnection
    from .transport import component_identity

    socket_path, token = component_identity(None, None)
    connection = IpcConnection.open(socket_path, token, call_timeout_s=timeout_s)
    try:
        _, answer = connection.call(operation, request)
        deadline = time.monotonic() + timeout_s + 0.1
        while not answer.done() and time.monotonic() < deadline:
            connection.pump(0.05)
        document = answer.result(0)
    finally:
        connection.close()
    return document


class ModelComponent:
    """Where the model component's bundle for this machine is, and loading it."""

    def __init__(
        self, name: str, model_path: str | os.PathLike[str], *, target: str | None = None
    ) -> None:
        self.name = name
        # {kernel:rootPath}/packages/artifacts-unarchived/NAME: one folder per version in it.
        self.versions = os.fspath(model_path)
        self.target = target or host_target()

    def locate(self, bundle: Any) -> tuple[str, str]:
        """(bundle folder, expected model sha256) from the component's ``Bundle`` configuration."""
        folders = bundle.get("Folders") if isinstance(bundle, dict) else None
        if not isinstance(folders, dict) or self.target not in folders:
            raise BundleError(
                f"{self.name}: configuration Bundle has no Folders entry for target "
                f"{self.target}: {bundle!r}"
            )
        folder, version, sha256 = (
            folders[self.target],
            bundle.get("Version"),
            bundle.get("ModelSha256"),
        )
        if not all(isinstance(v, str) and v and "/" not in v for v in (folder, version)):
            raise BundleError(
                f"{self.name}: configuration Bundle names no valid folder: {bundle!r}"
            )
        return os.path.join(self.versions, version, folder), str(sha256)

    def load(self, bundle: Any) -> Model:
        path, sha256 = self.locate(bundle)
        model = Model.load(path, target=self.target)
        if model.sha256 != sha256:
            raise BundleError(
                f"{path}: holds model {model.sha256[:12]}, the component's configuration "
                f"names {sha256[:12]}"
            )
        return model


class UpdateDeferral:
    """How long a deployment waits for the requests this server has in flight: the answer to
    each PreComponentUpdateEvent. Not thread-safe (the server's main thread asks).

    A demanding operator wants both: no request lost when the component is stopped, and no
    deployment held up for long by a steady stream of requests. So:

    - nothing in flight (received and not yet answered: queued, being predicted, or a reply
      awaiting the IPC server's confirmation or a connection): go on at once (recheck 0);
    - requests in flight: defer by ``recheck_ms`` (1 s); the Java Nucleus asks again about
      3 s later (it looks at the answers once a second and sleeps a second after each look,
      so any answer costs a deployment 2 s, then it waits the recheck);
    - ``max_defer_s`` after the deployment's first event, go on whatever is in flight (the
      deployment then waited at most that plus one such round); the stop that follows
      (SIGTERM) still answers what it can within its 3.5 s.

    Requests keep being received and answered while a deployment waits: closing the
    subscription would make the IPC server drop new requests unseen (pub/sub keeps nothing for
    a topic without subscribers), and the event does not say whether this component is the
    one being updated (a model-only deployment swaps the model live; every deployment notifies
    every subscriber), so refusing requests could turn each deployment into an outage.
    """

    __slots__ = ("_deferrals", "_deployment", "_first", "max_defer_s", "recheck_ms")

    def __init__(self, max_defer_s: float = MAX_UPDATE_DEFER_S, recheck_ms: int = RECHECK_MS):
        self.max_defer_s, self.recheck_ms = max_defer_s, recheck_ms
        self._deployment: str | None = None
        self._first = 0.0  # when this deployment's first event was answered
        self._deferrals = 0

    def decide(self, deployment_id: str, in_flight: int, now: float) -> tuple[int, str]:
        """(recheckAfterMs, what to log): 0 lets the deployment go on."""
        if deployment_id != self._deployment:
            self._deployment, self._first, self._deferrals = deployment_id, now, 0
        waited = now - self._first
        count = self._deferrals
        so_far = f"after {count} deferral{'s' * (count != 1)}, {waited:.1f} s" if count else ""
        if in_flight <= 0:
            return 0, f"deployment {deployment_id} may go on: nothing in flight" + (
                f" ({so_far})" if so_far else ""
            )
        remaining = self.max_defer_s - waited
        if remaining <= 0:
            return 0, (
                f"deployment {deployment_id} may go on with {in_flight} requests in flight "
                f"({so_far or 'deferring is off'}, the limit is {self.max_defer_s:g} s); a stop "
                "answers what it can"
            )
        recheck = max(1, min(self.recheck_ms, math.ceil(remaining * 1000)))
        self._deferrals += 1
        return recheck, (
            f"deferring deployment {deployment_id} by {recheck} ms: {in_flight} requests in "
            f"flight (deferral {self._deferrals}, {waited:.1f} s of at most "
            f"{self.max_defer_s:g} s)"
        )

    def finished(self, deployment_id: str) -> None:
        """The deployment is over (PostComponentUpdateEvent): a new one starts afresh."""
        if deployment_id == self._deployment:
            self._deployment = None


class ComponentLife:
    """Wires a running server to its component: model updates, live limits, UpdateState, and
    deployments that wait for the requests in flight (:class:`UpdateDeferral`)."""

    def __init__(
        self,
        server: InferenceServer,
        transport: BuiltinTransport,
        model_component: ModelComponent | None = None,
        *,
        max_update_defer_s: float = MAX_UPDATE_DEFER_S,
    ) -> None:
        self._server, self._transport, self._model = server, transport, model_component
        self._refused: str | None = None  # the last bundle refused: not tried again
        self._deferral = UpdateDeferral(max_update_defer_s)

    def start(self) -> None:
        """Subscribe to the configurations and to component updates and report RUNNING; runs
        on the server's main thread once it is subscribed (IPC calls must not run on the
        transport's thread)."""
        schedule = self._server.schedule
        if self._model is not None:
            self._transport.subscribe_to_configuration_update(
                ["Bundle"], lambda _: schedule(self._reload_model), component=self._model.name
            ).result(_CALL_TIMEOUT_S)
        self._transport.subscribe_to_configuration_update(
            [], lambda _: schedule(self._apply_settings)
        ).result(_CALL_TIMEOUT_S)
        self._subscribe_to_updates()
        self._report("RUNNING")

    # --- deployments -------------------------------------------------------------------------
    def _subscribe_to_updates(self) -> None:
        try:
            self._transport.subscribe_to_component_updates(self._on_update_event).result(
                _CALL_TIMEOUT_S
            )
            _log.info(
                "component updates: a deployment waits at most %g s for requests in flight",
                self._deferral.max_defer_s,
            )
        except IpcRefusedError as exc:
            # Nucleus lite serves no SubscribeToComponentUpdates (ServiceError); the Java
            # Nucleus refuses a component it does not know (ResourceNotFoundError).
            _log.info(
                "component updates: not served by this IPC server (%s); a deployment will not "
                "wait for requests in flight",
                exc.error,
            )
        except Exception as exc:  # no answer: opened again at the next connection
            _log.warning("component updates: no subscription yet (%s)", exc)

    def _on_update_event(self, kind: str, event: dict[str, Any]) -> None:
        """On the transport's thread: hand the event to the server's main thread."""
        deployment = event.get("deploymentId")
        if not isinstance(deployment, str):
            _log.warning("a component update event without a deployment id: %s", event)
            return
        if kind == "preUpdateEvent":
            restarting = event.get("isGgcRestarting") is True
            self._server.schedule(lambda: self._pre_update(deployment, restarting))
        else:
            self._server.schedule(lambda: self._post_update(deployment))

    def _pre_update(self, deployment: str, restarting: bool) -> None:
        in_flight = self._in_flight()
        recheck, line = self._deferral.decide(deployment, in_flight, time.monotonic())
        _log.info("%s%s", line, " (the Nucleus restarts)" if restarting else "")
        message = f"edgeboost: {in_flight} requests in flight" if recheck else None
        try:
            self._transport.defer_component_update(deployment, recheck, message).result(
                _CALL_TIMEOUT_S
            )
        except Exception as exc:  # the Nucleus goes on without our answer
            _log.warning("DeferComponentUpdate for deployment %s failed: %s", deployment, exc)

    def _in_flight(self) -> int:
        """Requests received and not yet answered, or 0 if there is a moment within
        _IDLE_LOOK_S with none: under a light steady stream the server is idle most of the
        time, and a deployment need not wait for the next request."""
        deadline = time.monotonic() + _IDLE_LOOK_S
        while True:
            in_flight = self._server.stats.open_requests()
            if in_flight <= 0 or time.monotonic() >= deadline:
                return max(0, in_flight)
            time.sleep(0.005)

    def _post_update(self, deployment: str) -> None:
        self._deferral.finished(deployment)
        _log.info("deployment %s is over (PostComponentUpdateEvent)", deployment)

    def _reload_model(self) -> None:
        assert self._model is not None
        bundle = self._get(["Bundle"], component=self._model.name)
        try:
            path, _ = self._model.locate(bundle)
        except BundleError as exc:
            self._refuse(None, exc)
            return
        # One change reaches us as one event per changed key: act once per bundle.
        if path in (self._server.model.path, self._refused):
            return
        try:
            model = self._model.load(bundle)
        except BundleError as exc:
            self._refuse(path, exc)
            return
        self._server.swap_model(model)
        self._server.stats.count("model_swaps")

    def _refuse(self, path: str | None, error: BundleError) -> None:
        self._refused = path
        self._server.stats.count("model_refused")
        serving = self._server.model.sha256[:12]
        _log.error("refused the new model; still serving %s: %s", serving, error)

    def _apply_settings(self) -> None:
        values = self._get([])
        config = self._server.config
        limits = _positive_ints(values, _LIVE_LIMITS)
        queues = _positive_ints(values, _LIVE_QUEUES)
        updated = _replace(config, limits=_replace(config.limits, **limits), **queues)
        topics = self._topics(values)
        if topics:
            candidate = _replace(updated, **topics)
            if self._resubscribe(candidate):
                updated = candidate
        if updated != config:
            self._server.apply_settings(updated)
        defer = _seconds(values.get("MaxUpdateDeferSeconds"))
        if defer is not None and defer != self._deferral.max_defer_s:
            self._deferral.max_defer_s = defer
            _log.info("settings: a deployment waits at most %g s for requests in flight", defer)

    def _topics(self, values: dict[str, Any]) -> dict[str, Any]:
        """The topics the configuration gives, where they differ from the server's."""
        config, changed = self._server.config, {}
        for key, field in _LIVE_TOPICS.items():
            value = values.get(key)
            if not isinstance(value, str):
                continue
            topic = substitute_thing_name(value) or None  # "" turns the legacy topic off
            if field != "legacy_request_topic" and topic is None:
                continue
            if topic != getattr(config, field):
                changed[field] = topic
        return changed

    def _resubscribe(self, config: Any) -> bool:
        """Move the subscriptions to ``config``'s request topics; False (the old ones kept)
        when the IPC server refuses one."""
        wanted = [t for t in (config.request_topic, config.legacy_request_topic) if t]
        try:
            self._transport.change_topics(wanted)
        except IpcError as exc:
            self._server.stats.count("topic_refused")
            _log.error("kept the subscriptions to %s: %s", ", ".join(self._server.topics), exc)
            return False
        _log.info("subscribed to %s", ", ".join(wanted))
        return True

    def _get(self, key_path: list[str], *, component: str | None = None) -> dict[str, Any]:
        answer = self._transport.get_configuration(key_path, component=component)
        value = answer.result(_CALL_TIMEOUT_S).get("value")
        return value if isinstance(value, dict) else {}

    def _report(self, state: str) -> None:
        try:
            self._transport.update_state(state).result(_CALL_TIMEOUT_S)
        except Exception as exc:  # nucleus lite refuses it for services it did not start
            _log.debug("UpdateState %s not accepted: %s", state, exc)


def _positive_ints(values: dict[str, Any], fields: dict[str, str]) -> dict[str, int]:
    """The values of ``fields`` (configuration key -> field) that are positive integers. The
    Java Nucleus hands numbers back as doubles (7.0) and nucleus lite its defaults as strings
    ("7"); anything else is ignored, never guessed."""
    found = {}
    for key, field in fields.items():
        value = values.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found[field] = value
    return found


def _seconds(value: Any) -> float | None:
    """A number of seconds, 0 or more, as either Nucleus may give it (10.0, or "10"); None for
    anything else."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 <= value < float("inf") else None


def _replace(record: Any, **changes: Any) -> Any:
    return replace(record, **changes) if changes else record
