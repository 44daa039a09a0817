"""The state each component last reported with UpdateState, readable and awaitable from any
thread (tests ask :meth:`Broker.component_state`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

__all__ = ["ComponentStates"]


class ComponentStates:
    """None for a component that has reported nothing yet: the broker starts no components, so
    it has no state of its own to give (the Nucleus would say STARTING or RUNNING)."""

    def __init__(self, components: Iterable[str]) -> None:
        self._states: dict[str, str | None] = dict.fromkeys(components)
        self._changed = threading.Condition()

    def report(self, component: str, state: str) -> None:
        with self._changed:
            self._states[component] = state
            self._changed.notify_all()

    def get(self, component: str) -> str | None:
        with self._changed:
            if component not in self._states:
                raise KeyError(f"unknown component {component!r}")
            return self._states[component]

    def wait_for(self, component: str, state: str, timeout: float) -> None:
        """Block until ``component``'s last report is ``state``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.get(component) != state:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{component} did not report {state} within {timeout} s "
                        f"(last reported: {self._states[component]})"
                    )
                self._changed.wait(remaining)

    def clear(self) -> None:
        """Forget every report (the broker restarts: so would the Nucleus's components)."""
        with self._changed:
            self._states = dict.fromkeys(self._states)
            self._changed.notify_all()
