"""The broker: a Unix-socket server speaking Greengrass IPC, run on its own event loop thread.

Typical use in a test::

    a = load_recipe("a.json")  # its policy and its default configuration
    components = {"tok-a": a.policy, "tok-b": ComponentPolicy.allow_all("B")}
    configurations = {a.name: a.configuration}
    with Broker(tmp_path / "ipc.sock", components, configurations=configurations) as broker:
        env = broker.client_env("tok-a")  # the socket path and SVCUID for component A
        ...
        broker.wait_for_component_state("A", "RUNNING")  # A called UpdateState
        report = broker.run_deployment()  # A may defer it (SubscribeToComponentUpdates)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from edgeboost.broker.budget import ByteBudget
from edgeboost.broker.component_updates import (
    COMPONENT_UPDATE_POLICY_EVENTS,
    DEFAULT_TIMEOUT_S,
    POLL_S,
    ComponentUpdates,
    DeploymentReport,
    UpdateListener,
)
from edgeboost.broker.configuration import ConfigStore
from edgeboost.broker.limits import MAX_PENDING_FRAMES, Limits
from edgeboost.broker.policy import ComponentPolicy
from edgeboost.broker.pubsub import PubSubHub, SubscriptionInfo
from edgeboost.broker.rpc import dump_json
from edgeboost.broker.session import ClientSession, SessionOptions
from edgeboost.broker.socketfile import (
    SocketPathError,
    check_socket_path,
    claim_socket_path,
    release_socket_path,
    socket_identity,
)
from edgeboost.broker.states import ComponentStates
from edgeboost.runtime.eventstream import MAX_MESSAGE_SIZE

__all__ = ["SOCKET_ENV", "TOKEN_ENV", "Broker", "BrokerError"]

logger = logging.getLogger(__name__)

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"


class BrokerError(RuntimeError):
    """The broker could not start, or was used in the wrong state."""


class Broker:
    """A local stand-in for the Nucleus's IPC server: pub/sub, configuration, UpdateState and
    component updates (:meth:`run_deployment` plays a deployment's part).

    ``components`` maps each auth token (what a component gets as ``SVCUID``) to that
    component's policy. ``configurations`` maps component names to the configuration each
    starts with (a recipe's DefaultConfiguration, see :func:`load_recipe`); a component without
    one has an empty configuration. Configuration changes last as long as this object, across
    :meth:`stop` and :meth:`start` (the Nucleus keeps its configuration on disk); reported
    states do not (a restarted Nucleus restarts its components). ``numbers_as_doubles``
    reproduces the Nucleus turning JSON integers into doubles on the way through (``7`` arrives
    as ``7.0``, in messages and in configuration updates); turn it off only to test code that
    must not care.

    Limits (see :mod:`edgeboost.broker.limits`): ``max_pending_frames`` and
    ``max_pending_bytes`` bound each client's unsent frames; a client that falls further behind
    is disconnected rather than allowed to slow the others down or fill the broker's memory.
    A connection must have CONNECT accepted within ``login_timeout`` seconds, and every frame
    must arrive whole within ``frame_timeout`` of its first byte. Frames may be up to
    ``max_frame_size`` bytes (the Nucleus's 16 MiB); frames still arriving hold at most
    ``max_partial_bytes`` across all connections (beyond that, readers wait).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        components: Mapping[str, ComponentPolicy],
        *,
        configurations: Mapping[str, Mapping[str, Any]] | None = None,
        max_pending_frames: int = MAX_PENDING_FRAMES,
        max_pending_bytes: int = 64 * 1024 * 1024,
        numbers_as_doubles: bool = True,
        flush_timeout: float = 2.0,
        login_timeout: float = 10.0,
        frame_timeout: float = 10.0,
        max_frame_size: int = MAX_MESSAGE_SIZE,
        max_partial_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._path = os.path.abspath(os.fspath(socket_path))
        check_socket_path(self._path)
        for token, policy in components.items():
            if not isinstance(token, str) or not token:
                raise ValueError(f"auth tokens must be non-empty strings, got {token!r}")
            if not isinstance(policy, ComponentPolicy):
                raise TypeError(
                    f"token {token!r} must map to a ComponentPolicy, got {type(policy).__name__}"
                )
        self._limits = Limits(
            max_pending_frames=max_pending_frames,
            max_pending_bytes=max_pending_bytes,
            flush_timeout=flush_timeout,
            login_timeout=login_timeout,
            frame_timeout=frame_timeout,
            max_frame_size=max_frame_size,
            max_partial_bytes=max_partial_bytes,
        )
        self._components = dict(components)
        names = list(dict.fromkeys(policy.name for policy in self._components.values()))
        given = dict(configurations or {})
        undeclared = sorted(set(given) - set(names))
        if undeclared:
            raise ValueError(f"configurations given for undeclared components: {undeclared}")
        self._config = ConfigStore({name: given.get(name, {}) for name in names})
        self._states = ComponentStates(names)
        self._updates = ComponentUpdates()
        self._numbers_as_doubles = numbers_as_doubles
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._hub = PubSubHub()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._startup_error: BaseException | None = None

    # -- facts ----------------------------------------------------------------------------------

    @property
    def socket_path(self) -> str:
        return self._path

    @property
    def running(self) -> bool:
        return self._ready.is_set() and not self._stopped.is_set()

    @property
    def components(self) -> Mapping[str, ComponentPolicy]:
        """Auth token -> component policy, as given."""
        return dict(self._components)

    def client_env(self, token: str) -> dict[str, str]:
        """The environment variables a component needs to reach this broker with ``token``."""
        if token not in self._components:
            raise KeyError(f"unknown auth token {token!r}")
        return {SOCKET_ENV: self._path, TOKEN_ENV: token}

    def configuration(self, component: str) -> dict[str, Any]:
        """A copy of ``component``'s whole configuration right now, as GetConfiguration with an
        empty key path returns it (from any thread; KeyError for an unknown component)."""
        return self._config.snapshot(component)

    def component_state(self, component: str) -> str | None:
        """The state ``component`` last reported with UpdateState (``RUNNING`` or ``ERRORED``),
        or None if it has reported none since the broker started. KeyError for an unknown
        component."""
        return self._states.get(component)

    def wait_for_component_state(self, component: str, state: str, timeout: float = 5.0) -> None:
        """Block until ``component`` has last reported ``state``; raise TimeoutError
        otherwise. Woken by reports, not by polling."""
        self._states.wait_for(component, state, timeout)

    def update_subscribers(self) -> list[str]:
        """The components listening for component updates right now, one entry per stream."""
        return self._updates.subscribers()

    def run_deployment(
        self,
        deployment_id: str | None = None,
        *,
        ggc_restarting: bool = False,
        timeout: float = DEFAULT_TIMEOUT_S,
        poll_interval: float = POLL_S,
        apply: Callable[[], object] | None = None,
        give_up_after: float | None = 600.0,
    ) -> DeploymentReport:
        """Do what the Nucleus does before and after a deployment updates components (see
        :mod:`edgeboost.broker.component_updates`): PreComponentUpdateEvent to every
        subscriber, then again after each deferral, each round waiting up to ``timeout`` for
        the answers and looking every ``poll_interval`` seconds; then ``apply`` (say, a
        configuration change) and a PostComponentUpdateEvent. Blocks; call it from any thread
        but the broker's. ``deployment_id`` defaults to a new UUID. TimeoutError when the
        subscribers still defer after ``give_up_after`` seconds (the Nucleus has no such
        limit)."""
        if self._loop is None or not self.running:
            raise BrokerError("the broker is not running")
        return self._updates.run_deployment(
            self._send_update_event,
            deployment_id=deployment_id,
            ggc_restarting=ggc_restarting,
            timeout_s=timeout,
            poll_s=poll_interval,
            apply=apply,
            give_up_after_s=give_up_after,
        )

    def _send_update_event(self, listener: UpdateListener, event: Mapping[str, Any]) -> bool:
        """Queue ``event`` on ``listener``'s stream from the event loop; whether it was."""
        loop = self._loop
        if loop is None:
            return False
        queued: concurrent.futures.Future[bool] = concurrent.futures.Future()
        payload = dump_json(event)

        def send() -> None:
            try:
                queued.set_result(
                    listener.sink.send_stream_event(
                        listener.stream_id, COMPONENT_UPDATE_POLICY_EVENTS, payload
                    )
                )
            except BaseException as exc:  # reported to the waiting thread
                queued.set_exception(exc)

        try:
            loop.call_soon_threadsafe(send)
            return queued.result(5.0)  # DEFAULT_STREAM_MESSAGE_TIMEOUT_SECONDS
        except (RuntimeError, concurrent.futures.TimeoutError):  # the loop stopped
            return False

    def subscriptions(self) -> list[SubscriptionInfo]:
        """The live subscriptions right now (from any thread)."""
        return list(self._hub.view)

    def wait_for_subscriptions(
        self, predicate: Callable[[list[SubscriptionInfo]], bool], timeout: float = 5.0
    ) -> list[SubscriptionInfo]:
        """Block until ``predicate(subscriptions)`` holds, for example after a client closed a
        stream; raise TimeoutError otherwise. Woken by changes, not by polling."""
        return self._hub.wait_for(predicate, timeout)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Broker:
        """Listen on the socket from a background thread; return once clients can connect."""
        with self._lock:
            if self._thread is not None:
                raise BrokerError(f"the broker on {self._path} is already running")
            self._hub = PubSubHub()
            self._states.clear()
            self._loop = self._stop_event = None
            self._startup_error = None
            for flag in (self._stop_requested, self._ready, self._stopped):
                flag.clear()
            thread = threading.Thread(
                target=self._thread_main, name="edgeboost-broker", daemon=True
            )
            self._thread = thread
        thread.start()
        if not self._ready.wait(timeout):
            self.stop(timeout)
            raise BrokerError(f"the broker did not start within {timeout} s")
        if self._startup_error is not None:
            thread.join()
            with self._lock:
                self._thread = None
            raise self._startup_error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection, stop listening and remove the socket file. Idempotent."""
        with self._lock:
            thread = self._thread
        if thread is None:
            return
        self._request_stop()
        thread.join(timeout)
        if thread.is_alive():
            raise BrokerError(f"the broker did not stop within {timeout} s")
        with self._lock:
            self._thread = None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the broker has stopped; False on timeout. Ctrl-C interrupts it."""
        return self._stopped.wait(timeout)

    def serve_forever(self) -> None:
        """Run in the foreground until :meth:`stop` is called from elsewhere or Ctrl-C."""
        self.start()
        try:
            self.wait()
        finally:
            self.stop()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _request_stop(self) -> None:
        self._stop_requested.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already finished
                loop.call_soon_threadsafe(event.set)

    # -- the event loop thread ------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            if self._ready.is_set():
                logger.exception("the broker on %s failed", self._path)
            else:
                self._startup_error = exc
        finally:
            self._ready.set()
            self._stopped.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(_AcceptErrorsOnce())
        self._stop_event = asyncio.Event()
        if self._stop_requested.is_set():
            return
        options = SessionOptions(
            components=self._components,
            hub=self._hub,
            config=self._config,
            states=self._states,
            updates=self._updates,
            numbers_as_doubles=self._numbers_as_doubles,
            limits=self._limits,
            read_budget=ByteBudget(self._limits.max_partial_bytes),
        )
        sessions: set[asyncio.Task[None]] = set()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self._stop_requested.is_set():
                writer.close()
                await writer.wait_closed()
                return
            task = asyncio.current_task()
            assert task is not None
            sessions.add(task)
            try:
                await ClientSession(reader, writer, options).run()
            except asyncio.CancelledError:
                pass  # broker shutdown; ending "cancelled" trips a 3.11 asyncio.streams bug
            finally:
                sessions.discard(task)

        claim_socket_path(self._path)
        try:
            server = await asyncio.start_unix_server(on_client, path=self._path)
        except OSError as exc:
            raise SocketPathError(f"cannot listen on {self._path}: {exc.strerror or exc}") from exc
        identity: tuple[int, int] | None = None
        try:
            identity = socket_identity(self._path)
            logger.info("Greengrass IPC broker listening on %s", self._path)
            self._ready.set()
            await self._stop_event.wait()
        finally:
            server.close()
            for task in list(sessions):
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)
            await server.wait_closed()
            release_socket_path(self._path, identity)
            logger.info("Greengrass IPC broker on %s stopped", self._path)


class _AcceptErrorsOnce:
    """Loop exception handler: out of file descriptors, asyncio (3.11) logs a traceback for
    each of the 100 backlog slots every second it retries, hundreds of lines a second while a
    flood lasts. Say it once per interval instead; pass everything else on."""

    _MESSAGE = "socket.accept() out of system resource"

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last = -interval

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self._MESSAGE:
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            logger.warning(
                "cannot accept connections (%s); they wait in the backlog until some close",
                context.get("exception"),
            )
