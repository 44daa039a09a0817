"""``edgeboost broker`` (and ``python -m edgeboost.broker``): run the local IPC broker.

Each ``--recipe FILE[:TOKEN]`` adds a component with the access control and the default
configuration of its recipe; without a TOKEN one is generated. The broker prints, per component,
the environment a process needs to connect as that component, then serves until Ctrl-C or
SIGTERM. It logs each UpdateState ("component NAME reported state STATE") at INFO.

SIGUSR1 plays a deployment's part in the component update protocol, as the Java Nucleus does
it before it changes anything: a PreComponentUpdateEvent to every component subscribed with
SubscribeToComponentUpdates, waiting for their DeferComponentUpdate (up to ``--update-timeout``
seconds each round), again after each deferral, then a PostComponentUpdateEvent; each step is
logged ("deployment ID: ..."). Nothing else changes: configuration changes are
UpdateConfiguration calls.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from edgeboost.broker.policy import ComponentPolicy
from edgeboost.broker.recipe import RecipeError, load_recipe
from edgeboost.broker.server import SOCKET_ENV, TOKEN_ENV, Broker, BrokerError
from edgeboost.broker.socketfile import SocketPathError

__all__ = ["add_arguments", "main", "parse_recipe_spec", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the broker's options to ``parser`` (a top-level parser or a subcommand's)."""
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket path to listen on")
    parser.add_argument(
        "--recipe",
        action="append",
        required=True,
        metavar="FILE[:TOKEN]",
        help="component recipe (JSON, or YAML with PyYAML) and its auth token; repeatable",
    )
    parser.add_argument(
        "--login-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection that has not logged in (CONNECT) by then (default 10)",
    )
    parser.add_argument(
        "--update-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="on SIGUSR1, how long each round of a deployment waits for the components' "
        "DeferComponentUpdate (the component update policy's timeout; default 60)",
    )
    parser.add_argument(
        "--ints-stay-ints",
        action="store_true",
        help="deliver JSON integers unchanged (the Nucleus turns them into doubles: 7 -> 7.0)",
    )


def parse_recipe_spec(spec: str) -> tuple[Path, str | None]:
    """Split ``FILE[:TOKEN]``. A spec naming an existing file is all file (paths may hold ':')."""
    if os.path.exists(spec) or ":" not in spec:
        return Path(spec), None
    path, _, token = spec.rpartition(":")
    return Path(path), token or None


def _load_components(
    specs: Sequence[str],
) -> tuple[dict[str, ComponentPolicy], dict[str, Mapping[str, Any]]]:
    """(auth token -> policy, component name -> default configuration) from the recipes."""
    components: dict[str, ComponentPolicy] = {}
    configurations: dict[str, Mapping[str, Any]] = {}
    for spec in specs:
        path, token = parse_recipe_spec(spec)
        recipe = load_recipe(path)
        if recipe.name in configurations:
            raise RecipeError(f"component {recipe.name} is given twice")
        token = token or secrets.token_urlsafe(18)
        if token in components:
            raise RecipeError(f"token {token!r} is given to two components")
        configurations[recipe.name] = recipe.configuration
        components[token] = recipe.policy
    return components, configurations


def _client_lines(broker: Broker) -> Iterator[str]:
    yield f"Greengrass IPC broker listening on {broker.socket_path} (Ctrl-C to stop)"
    for token, policy in broker.components.items():
        env = broker.client_env(token)
        assignments = " ".join(f"{key}={shlex.quote(env[key])}" for key in (SOCKET_ENV, TOKEN_ENV))
        yield f"{policy.name}:\n  {assignments}"


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Stop on SIGTERM the way Ctrl-C does (only possible from the main thread)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted. Returns a process exit code."""
    try:
        components, configurations = _load_components(args.recipe)
        broker = Broker(
            args.socket,
            components,
            configurations=configurations,
            numbers_as_doubles=not args.ints_stay_ints,
            login_timeout=args.login_timeout,
        )
    except (RecipeError, SocketPathError, ValueError) as exc:
        print(f"edgeboost broker: error: {exc}", file=sys.stderr)
        return 2
    with _sigterm_as_interrupt():
        try:
            broker.start()
        except (OSError, BrokerError) as exc:
            print(f"edgeboost broker: error: {exc}", file=sys.stderr)
            return 1
        try:
            for line in _client_lines(broker):
                print(line, flush=True)
            _deploy_on_sigusr1(broker, args.update_timeout)
            broker.wait()
        except KeyboardInterrupt:
            logger.info("interrupted, stopping")
        finally:
            broker.stop()
    return 0


def _deploy_on_sigusr1(broker: Broker, timeout: float) -> None:
    """On SIGUSR1, run a deployment's update notification on a thread of its own (one at a
    time, as the Nucleus does)."""
    running = threading.Lock()

    def deploy() -> None:
        try:
            broker.run_deployment(timeout=timeout, give_up_after=None)
        except BrokerError as exc:
            logger.warning("deployment not run: %s", exc)
        finally:
            running.release()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not running.acquire(blocking=False):
            logger.info("a deployment is already under way; SIGUSR1 ignored")
            return
        threading.Thread(target=deploy, name="deployment", daemon=True).start()

    with contextlib.suppress(ValueError):  # not the main thread: no signals
        signal.signal(signal.SIGUSR1, on_signal)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m edgeboost.broker``."""
    parser = argparse.ArgumentParser(prog="python -m edgeboost.broker", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run(args)
