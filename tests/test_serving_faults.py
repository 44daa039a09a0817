"""Serving under attack and under faults, as separate processes: the local broker, ``edgeboost
serve`` and consumers using the real awsiotsdk client. Each test is one row of issue 12's
table: what broke, and the behaviour that must hold now."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import NAMES, need
from .serving_harness import (
    LEGACY_IN,
    LEGACY_OUT,
    REQUEST,
    RESPONSE,
    BrokerProcess,
    Consumer,
    LiteProcess,
    ServerProcess,
    request,
    wait_until,
    write_recipe,
)

try:
    import awsiot.greengrasscoreipc
except ImportError:
    awsiot = None

ROW = dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True))
SERVER, CONSUMER = "tok-server", "tok-consumer"
FULL_GRANTS = {
    "publish": [RESPONSE, f"{RESPONSE}/*", LEGACY_OUT],
    "subscribe": [REQUEST, LEGACY_IN],
}


@pytest.fixture(scope="module")
def sdk() -> None:
    need(awsiot is not None, "awsiotsdk (pip install awsiotsdk)")


@pytest.fixture()
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths must stay short; pytest's tmp paths can be long.
    return tmp_path_factory.mktemp("f", numbered=True)


IPC_SERVERS = ("broker", "greengrass-lite")
IpcProcess = BrokerProcess | LiteProcess


@pytest.fixture(params=IPC_SERVERS)
def start_ipc(
    request: pytest.FixtureRequest, sdk: None, workdir: Path
) -> Iterator[Callable[..., IpcProcess]]:
    """start(server_grants=None) -> the IPC server, with the server component (FULL_GRANTS
    unless given) and the consumer. Every serving test runs against both: the local broker and
    nucleus lite, AWS's C Nucleus."""
    started: list[IpcProcess] = []
    build = request.getfixturevalue("lite_build") if request.param == "greengrass-lite" else None

    def start(server_grants: dict[str, list[str]] | None = None) -> IpcProcess:
        recipes = {
            SERVER: write_recipe(
                workdir / "server.json", "com.example.Server", **(server_grants or FULL_GRANTS)
            ),
            CONSUMER: write_recipe(
                workdir / "consumer.json",
                "com.example.Consumer",
                publish=[REQUEST, LEGACY_IN],
                subscribe=[RESPONSE, LEGACY_OUT],
            ),
        }
        server: IpcProcess
        if build is None:
            server = BrokerProcess(workdir / "ipc.sock", recipes)
        else:
            server = LiteProcess(build, workdir / "lite", recipes)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()


@pytest.fixture()
def broker(start_ipc: Callable[..., IpcProcess]) -> IpcProcess:
    """The IPC server (broker or nucleus lite), serving the two components."""
    return start_ipc()


@pytest.fixture(params=["builtin", pytest.param("awsiotsdk", marks=pytest.mark.slow)])
def transport(request: pytest.FixtureRequest) -> str:
    """Every serving test runs with both IPC clients: the built-in one (the default) and AWS's
    (the reference: in CI, not in the everyday `-m "not slow"` loop)."""
    return str(request.param)


@pytest.fixture()
def serve(
    transport: str, named_bundle: tuple[Path, object], workdir: Path
) -> Callable[..., ServerProcess]:
    """start(ipc_server, *serve_args) -> `edgeboost serve` running as the server component."""

    def start(ipc_server: IpcProcess, *args: str) -> ServerProcess:
        options = ("--transport", transport, "--stats-interval", "3600", *args)
        return ServerProcess(named_bundle[0], ipc_server.env(SERVER), workdir, *options).start()

    return start


@pytest.fixture()
def consumer(broker: IpcProcess) -> Iterator[Consumer]:
    client = Consumer(broker.env(CONSUMER)).subscribe(RESPONSE)
    yield client
    client.close()


def by_id(replies: list[Any]) -> Counter[Any]:
    return Counter(r.get("id") for r in replies)


def hostile(limit: int) -> dict[str, tuple[Any, str | None]]:
    """name -> (payload at most ``limit`` bytes, the error code it must get; None: answered).
    The broker takes the server's 256 KiB; nucleus lite closes a connection over 10,000."""
    escapes = (limit - 40) // 2
    return {
        # Froze the server for 345 s at 256 KiB: a regex backtracking over escaped quotes.
        "escaped quotes": (b"[" * 33 + b'"' + b'\\"' * escapes, "bad_json"),
        "unclosed string of escapes": (b'{"id": "' + b'\\"' * escapes, "bad_json"),
        "4,301-digit integer": (b'{"id": 1, "instances": [[' + b"9" * 4301 + b"]]}", "bad_json"),
        "duplicate keys": (b'{"id": 1, "id": 2, "instances": [[1, 2, 3, 4]]}', "bad_json"),
        "deep nesting at the limit": (b"[" * (limit // 2) + b"]" * (limit // 2), "bad_json"),
        # One long value: nucleus lite refuses jsonMessages of more than ~200 JSON values.
        "jsonMessage over the limit": ({"id": 1, "instances": [["x" * limit]]}, "too_large"),
    }


def test_hostile_payloads_fit_their_limits() -> None:
    for limit in (SERVER_LIMITS["broker"], SERVER_LIMITS["greengrass-lite"]):
        for name, (payload, _) in hostile(limit).items():
            size = len(payload) if isinstance(payload, bytes) else len(json.dumps(payload))
            assert size <= limit * 1.1, (name, size)  # the jsonMessage is just over it


# --max-payload-bytes per IPC server: the server's default, and what fits nucleus lite.
SERVER_LIMITS = {"broker": 256 * 1024, "greengrass-lite": 7000}


@pytest.mark.parametrize("case", sorted(hostile(1024)))
def test_a_hostile_payload_is_refused_and_serving_goes_on(
    serve: Callable[..., ServerProcess],
    case: str,
    broker: IpcProcess,
    consumer: Consumer,
) -> None:
    limit = SERVER_LIMITS[broker.kind]
    payload, code = hostile(limit)[case]
    server = serve(broker, "--max-payload-bytes", str(limit))
    try:
        server.wait_serving()
        consumer.publish(REQUEST, payload)
        sent = time.monotonic()
        consumer.publish(REQUEST, request("after", [ROW]))
        replies = consumer.wait_for(2, timeout=3)
        took = time.monotonic() - sent
        assert len(replies) == 2, replies
        assert replies[0]["error"]["code"] == code, replies[0]
        assert replies[1]["id"] == "after" and "predictions" in replies[1]
        assert took < 3.0
    finally:
        status, _ = server.stop()
    assert status == 0, server.stderr


def test_a_reply_over_the_limit_is_a_too_large_error_not_a_lost_connection(
    serve: Callable[..., ServerProcess], broker: IpcProcess, consumer: Consumer
) -> None:
    # 300 rows of 4 zeros take 3 KB; their 300 predictions over 5 KB: past nucleus lite's
    # message limit at 7,000 bytes, Lite would close the server's connection.
    server = serve(broker, "--max-reply-bytes", "5000", "--max-rows", "1000")
    try:
        server.wait_serving()
        consumer.publish(REQUEST, request("big", [[0, 0, 0, 0]] * 300))
        consumer.publish(REQUEST, request("small", [[0, 0, 0, 0]] * 10))
        big, small = consumer.wait_for(2, timeout=5)
    finally:
        status, _ = server.stop()
    assert big["id"] == "big" and big["error"]["code"] == "too_large"
    assert "--max-reply-bytes" in big["error"]["message"]
    assert small["id"] == "small" and len(small["predictions"]) == 10
    stats = server.last_stats()
    assert stats["reconnects"] == 0 and stats["errors"] == {"too_large": 1}
    assert status == 0


def test_every_malformed_request_gets_its_error_and_serving_goes_on(
    serve: Callable[..., ServerProcess], broker: IpcProcess, consumer: Consumer
) -> None:
    from .test_server import MALFORMED

    server = serve(broker, "--max-payload-bytes", "2048", "--max-rows", "10")
    expected = []
    try:
        server.wait_serving()
        for name, (payload, code) in MALFORMED.items():
            if not isinstance(payload, bytes):
                payload = json.dumps(payload).encode()  # NaN/inf become NaN/Infinity tokens
                # As text, a 401-digit number is refused by the decoder (over 100 characters).
                code = "bad_json" if name == "value huge int" else code
            consumer.publish(REQUEST, payload)
            expected.append(code)
        consumer.publish(REQUEST, request("after", [ROW]))
        replies = consumer.wait_for(len(expected) + 1, timeout=20)
    finally:
        status, _ = server.stop()
    assert [r["error"]["code"] for r in replies[:-1]] == expected
    assert replies[-1]["id"] == "after" and "predictions" in replies[-1]
    assert status == 0, server.stderr


def test_an_integer_id_beyond_2_53_in_a_json_message(
    serve: Callable[..., ServerProcess], broker: IpcProcess, consumer: Consumer
) -> None:
    server = serve(broker)
    try:
        server.wait_serving()
        consumer.publish(REQUEST, {"id": 2**53 + 1, "instances": [[1] * 4]})
        (reply,) = consumer.wait_for(1, timeout=3)
    finally:
        server.stop()
    if broker.kind == "broker":  # like the Java Nucleus: the integer arrives as a double
        assert (
            reply["error"]["code"] == "bad_request"
            and "send the id as a string" in (reply["error"]["message"])
        )
    else:  # nucleus lite keeps JSON integers as they are
        assert reply["id"] == 2**53 + 1 and "predictions" in reply


@pytest.mark.slow
def test_every_request_of_a_burst_beyond_both_queues_is_answered(
    serve: Callable[..., ServerProcess],
    broker: IpcProcess,
    consumer: Consumer,
) -> None:
    # 64 wait for a worker and 4,096 for an "overloaded" reply by default: 5,000 overflows
    # both unless overloaded replies go out as fast as requests come in.
    server = serve(broker)
    burst = 5000
    try:
        server.wait_serving()
        sends = [
            consumer.publish(REQUEST, request(i, [ROW] * 20), wait=False) for i in range(burst)
        ]
        for send in sends:
            send.result(30)
        replies = consumer.wait_for(burst, timeout=60)
    finally:
        status, _ = server.stop()
    counts = by_id(replies)
    assert sorted(counts) == list(range(burst)), f"{burst - len(counts)} unanswered"
    assert max(counts.values()) == 1
    codes = Counter(r["error"]["code"] if "error" in r else "ok" for r in replies)
    assert set(codes) <= {"ok", "overloaded"}, codes
    stats = server.last_stats()
    assert stats["received"] == burst and stats["shed"] == 0 and stats["abandoned"] == 0
    assert stats["published"] == burst
    assert status == 0, server.stderr
    print(f"burst of {burst}: {dict(codes)}")


@pytest.mark.slow
def test_what_cannot_be_queued_is_shed_counted_and_logged(
    serve: Callable[..., ServerProcess],
    broker: IpcProcess,
    consumer: Consumer,
) -> None:
    server = serve(broker, "--queue-size", "2", "--overload-queue-size", "2")
    burst = 2000
    try:
        server.wait_serving()
        sends = [
            consumer.publish(REQUEST, request(i, [ROW] * 50), wait=False) for i in range(burst)
        ]
        for send in sends:
            send.result(30)
        time.sleep(2)  # whatever was not shed has been answered by now
    finally:
        status, _ = server.stop()
    stats = server.last_stats()
    replies = consumer.received
    assert max(by_id(replies).values()) == 1
    # Nothing is lost without a trace: every request is either answered or counted as shed.
    assert stats["received"] == burst
    assert stats["published"] + stats["shed"] == burst == len(replies) + stats["shed"]
    if stats["shed"]:
        assert "shed a request on edgeboost/inference/request" in server.stderr
        assert server.stderr.count("shed a request") <= 2  # rate-limited: one line per 10 s
    assert status == 0, server.stderr


@pytest.mark.slow
def test_a_5_s_stall_under_150_requests_per_second_loses_nothing(
    serve: Callable[..., ServerProcess],
    broker: IpcProcess,
    consumer: Consumer,
) -> None:
    server = serve(broker)
    rate, seconds, stall_at, stall_s = 150, 10.0, 2.0, 5.0
    total = int(rate * seconds)
    try:
        server.wait_serving()
        started = time.monotonic()
        stalled = resumed = False
        sends = []
        for i in range(total):
            due = started + i / rate
            time.sleep(max(0.0, due - time.monotonic()))
            if not stalled and time.monotonic() - started >= stall_at:
                server.signal(signal.SIGSTOP)
                stalled = True
            if stalled and not resumed and time.monotonic() - started >= stall_at + stall_s:
                server.signal(signal.SIGCONT)
                resumed = True
            sends.append(consumer.publish(REQUEST, request(i, [ROW]), wait=False))
        if not resumed:
            server.signal(signal.SIGCONT)
        for send in sends:
            send.result(10)
        replies = consumer.wait_for(total, timeout=15)
    finally:
        server.signal(signal.SIGCONT)
        status, _ = server.stop()
    counts = by_id(replies)
    assert max(counts.values()) == 1, "a request was answered twice"
    assert len(counts) >= 0.99 * total, f"{total - len(counts)} of {total} unanswered"
    stats = server.last_stats()
    assert stats["reconnects"] <= 3
    assert status == 0, server.stderr
    print(f"stall: {len(counts)}/{total} answered, reconnects {stats['reconnects']}")


def test_a_request_topic_not_granted_stops_the_server_at_once(
    serve: Callable[..., ServerProcess], start_ipc: Callable[..., IpcProcess]
) -> None:
    grants = {"publish": [RESPONSE, LEGACY_OUT], "subscribe": [LEGACY_IN]}
    broker = start_ipc(grants)
    server = serve(broker)
    started = time.monotonic()
    status = server.wait(10)
    took = time.monotonic() - started
    assert status == 2, (status, server.stderr)
    assert took < 5.0, took
    assert "SubscribeToTopic on 'edgeboost/inference/request' refused with UnauthorizedError" in (
        server.stderr
    )
    assert "aws.greengrass#SubscribeToTopic and resource 'edgeboost/inference/request'" in (
        server.stderr
    )


def test_a_response_topic_not_granted_is_counted_not_a_reconnect(
    serve: Callable[..., ServerProcess], start_ipc: Callable[..., IpcProcess]
) -> None:
    grants = {"publish": [LEGACY_OUT], "subscribe": [REQUEST, LEGACY_IN]}
    broker = start_ipc(grants)
    client = Consumer(broker.env(CONSUMER)).subscribe(RESPONSE)
    try:
        server = serve(broker)
        server.wait_serving()
        for i in range(50):
            client.publish(REQUEST, request(i, [ROW]))
        wait_until(lambda: server.stderr.count("refused") >= 1, 10, lambda: server.stderr)
        time.sleep(1)
        status, _ = server.stop()
    finally:
        client.close()
    stats = server.last_stats()
    assert stats["reconnects"] == 0
    assert stats["failures"] == {"refused:UnauthorizedError": 50}
    assert stats["received"] == 50 and stats["answered"] == 50
    assert "resource 'edgeboost/inference/response'" in server.stderr
    assert server.stderr.count("refused to publish a reply") == 1, server.stderr  # rate-limited
    assert status == 0, server.stderr


@pytest.mark.parametrize(
    "state", ["idle", "burst", "hostile payloads", "ipc server stopped", "ipc server killed"]
)
def test_sigterm_exits_within_4_s_in_any_state(
    serve: Callable[..., ServerProcess],
    state: str,
    broker: IpcProcess,
    consumer: Consumer,
) -> None:
    server = serve(broker)
    server.wait_serving()
    if state == "burst":
        for i in range(300):
            consumer.publish(REQUEST, request(i, [ROW] * 5), wait=False)
    elif state == "hostile payloads":  # SIGTERM while the worker decodes the worst there is
        for _ in range(20):
            payload = hostile(SERVER_LIMITS[broker.kind])["deep nesting at the limit"][0]
            consumer.publish(REQUEST, payload, wait=False)
    elif state == "ipc server stopped":
        broker.signal(signal.SIGSTOP)  # the Nucleus hangs: calls get no answer
    elif state == "ipc server killed":
        broker.kill()
        time.sleep(0.2)
    try:
        status, took = server.stop(timeout=10)
    finally:
        broker.signal(signal.SIGCONT) if state == "ipc server stopped" else None
    stats = server.last_stats()
    assert took < 4.0, (took, server.stdout, server.stderr)
    # Non-zero exactly when received requests were abandoned, and then the count is logged.
    assert status == (3 if stats["abandoned"] else 0), server.stderr
    if stats["abandoned"]:
        assert f"exiting with {stats['abandoned']} received requests unanswered" in server.stderr
    if state in ("burst", "hostile payloads"):
        assert stats["received"] == stats["published"] + stats["abandoned"]


def test_sigterm_with_a_full_queue_and_the_ipc_server_gone(
    serve: Callable[..., ServerProcess],
    broker: IpcProcess,
    consumer: Consumer,
) -> None:
    server = serve(broker, "--queue-size", "1000")
    server.wait_serving()
    server.signal(signal.SIGSTOP)  # the requests pile up in the server's socket
    for i in range(300):  # not awaited: nucleus lite holds publishers while a subscriber stalls
        consumer.publish(REQUEST, request(i, [ROW] * 60), wait=False)
    time.sleep(1.0)
    broker.kill()
    server.signal(signal.SIGCONT)
    time.sleep(0.05)  # it reads what its socket holds; the queue fills; no one to reply to
    status, took = server.stop(timeout=10)
    stats = server.last_stats()
    assert took < 4.0, (took, server.stderr)
    assert stats["received"] > 0
    ended = stats["published"] + stats["abandoned"] + sum(stats["failures"].values())
    assert ended == stats["received"], stats
    assert status == (3 if stats["abandoned"] else 0)
    assert stats["abandoned"] > 0, stats  # no IPC server: what was received cannot be answered


def test_the_server_serves_again_after_the_ipc_server_restarts(
    serve: Callable[..., ServerProcess],
    broker: IpcProcess,
) -> None:
    server = serve(broker)
    server.wait_serving()
    broker.kill()
    time.sleep(0.5)
    broker.start()
    if broker.kind == "greengrass-lite":
        # A restarted nucleus lite has forgotten every token (so has a restarted Java
        # Nucleus): the component cannot log in again, so it exits at once, and the Nucleus
        # restarts it with a new token.
        started = time.monotonic()
        status = server.wait(15)
        assert status == 2, (status, server.stderr)
        assert time.monotonic() - started < 10
        assert "refused the token in SVCUID" in server.stderr
        return
    client = Consumer(broker.env(CONSUMER)).subscribe(RESPONSE)
    try:
        wait_until(lambda: server.stdout.count("IPC connected") == 2, 5)
        client.publish(REQUEST, request("back", [ROW]))
        (reply,) = client.wait_for(1, timeout=5)
    finally:
        client.close()
        status, _ = server.stop()
    assert reply["id"] == "back" and "predictions" in reply
    assert server.last_stats()["reconnects"] == 1
    assert status == 0, server.stderr


def test_legacy_requests_still_get_the_old_reply(
    serve: Callable[..., ServerProcess],
    broker: IpcProcess,
) -> None:
    client = Consumer(broker.env(CONSUMER)).subscribe(LEGACY_OUT)
    server = serve(broker)
    try:
        server.wait_serving()
        client.publish(
            LEGACY_IN, json.dumps({"body": json.dumps([ROW]), "isBase64Encoded": False}).encode()
        )
        (reply,) = client.wait_for(1, timeout=5)
    finally:
        client.close()
        status, _ = server.stop()
    assert isinstance(reply, list) and len(reply) == 1
    assert status == 0


# --- the awsiotsdk transport on its own ---------------------------------------------------------
def transport_for(kind: str, broker: IpcProcess, token: str | None = None, **options: Any) -> Any:
    """A transport of ``kind`` for the server component (or with another ``token``)."""
    env = broker.env(SERVER)
    socket_path = env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"]
    token = token or env["SVCUID"]
    if kind == "awsiotsdk":
        from edgeboost.runtime.greengrass import GreengrassTransport

        return GreengrassTransport(socket_path=socket_path, auth_token=token, **options)
    from edgeboost.runtime.ipc_transport import BuiltinTransport

    return BuiltinTransport(socket_path=socket_path, auth_token=token, **options)


def test_a_publish_without_an_answer_ends_unconfirmed_after_the_call_timeout(
    transport: str, broker: IpcProcess
) -> None:
    from edgeboost.runtime.exceptions import IpcNotSentError, IpcUnconfirmedError

    client = transport_for(transport, broker, call_timeout_s=0.5)
    client.start([REQUEST], lambda message: None, lambda error: None)
    try:
        assert client.publish(RESPONSE, b"{}").result(5) is None
        broker.signal(signal.SIGSTOP)  # the IPC server hangs
        started = time.monotonic()
        with pytest.raises(IpcUnconfirmedError):
            client.publish(RESPONSE, b"{}").result(5)
        assert time.monotonic() - started < 1.5
    finally:
        broker.signal(signal.SIGCONT)
        client.close(timeout=1)
    with pytest.raises(IpcNotSentError):  # closed: provably not sent, safe to retry
        client.publish(RESPONSE, b"{}").result(1)


def test_a_refused_token_is_fatal_at_once(transport: str, broker: IpcProcess) -> None:
    from edgeboost.runtime.exceptions import IpcRefusedError

    client = transport_for(transport, broker, token="not-a-token")
    started = time.monotonic()
    with pytest.raises(IpcRefusedError, match="refused the token in SVCUID"):
        client.start([REQUEST], lambda message: None, lambda error: None)
    assert time.monotonic() - started < 2


def test_no_ipc_server_at_start_is_an_error_within_the_start_timeout(
    transport: str, sdk: None, workdir: Path
) -> None:
    from edgeboost.runtime.exceptions import IpcError
    from edgeboost.runtime.greengrass import GreengrassTransport
    from edgeboost.runtime.ipc_transport import BuiltinTransport

    kind = GreengrassTransport if transport == "awsiotsdk" else BuiltinTransport
    client = kind(socket_path=str(workdir / "absent.sock"), auth_token="t", start_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(IpcError, match="cannot reach the Greengrass IPC server"):
        client.start([REQUEST], lambda message: None, lambda error: None)
    assert time.monotonic() - started < 2.5


def test_configuration_calls_of_the_built_in_transport(broker: IpcProcess) -> None:
    import time as clock

    from edgeboost.runtime.exceptions import IpcRefusedError

    client = transport_for("builtin", broker)
    client.start([REQUEST], lambda message: None, lambda error: None)
    updates: list[dict[str, Any]] = []
    try:
        configuration = client.get_configuration(["accessControl"]).result(5)
        assert configuration["componentName"] == "com.example.Server"
        grants = configuration["value"]["aws.greengrass.ipc.pubsub"]
        assert any(REQUEST in policy["resources"] for policy in grants.values())
        assert client.subscribe_to_configuration_update([], updates.append).result(5) == {}
        request = {"keyPath": [], "timestamp": clock.time(), "valueToMerge": {"QueueSize": 99}}
        client._call("UpdateConfiguration", request).result(5)
        wait_until(lambda: bool(updates), 5)
        assert updates[0] == {"componentName": "com.example.Server", "keyPath": ["QueueSize"]}
        assert client.get_configuration(["QueueSize"]).result(5)["value"] == {"QueueSize": 99}
        if broker.kind == "broker":
            assert client.update_state("RUNNING").result(5) == {}
        else:  # nucleus lite tracks lifecycle only for the services it starts itself
            with pytest.raises(IpcRefusedError, match="UpdateState refused with ServiceError"):
                client.update_state("RUNNING").result(5)
    finally:
        client.close(1)
