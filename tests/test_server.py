"""The inference server through an in-memory transport: protocol, bad input, overload, drain."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeboost.runtime import Model
from edgeboost.runtime.protocol import ERROR_CODES, Limits
from edgeboost.runtime.server import InferenceServer, Message, ServerConfig

from .conftest import NAMES

REQUEST, RESPONSE, LEGACY_IN, LEGACY_OUT = "t/req", "t/resp", "local/inference", "local/result"
ROW = dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True))


class MemoryTransport:
    """Records publishes; optionally holds them until released (to fill the queue)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Any]] = []
        self.deliver: Callable[[Message], None] | None = None
        self.topics: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.receiving = True
        self.closed = False
        self.reconnects = 0
        self._lock = threading.Lock()

    def start(
        self,
        topics: Sequence[str],
        deliver: Callable[[Message], None],
        on_fatal: Callable[[Exception], None],
    ) -> None:
        self.topics, self.deliver = list(topics), deliver

    def publish(self, topic: str, payload: bytes) -> Future[None]:
        self.gate.wait()
        with self._lock:
            self.published.append((topic, json.loads(payload)))
        done: Future[None] = Future()
        done.set_result(None)
        return done

    def wait_connected(self, timeout: float) -> bool:
        return True

    def stop_receiving(self, timeout: float) -> None:
        self.receiving = False

    def close(self, timeout: float) -> None:
        self.closed = True


@pytest.fixture()
def model(named_bundle: tuple[Path, object]) -> Model:
    return Model.load(named_bundle[0])


def make_server(model: Model, **overrides: Any) -> tuple[InferenceServer, MemoryTransport]:
    config = ServerConfig(
        request_topic=REQUEST,
        response_topic=RESPONSE,
        legacy_request_topic=LEGACY_IN,
        legacy_response_topic=LEGACY_OUT,
        stats_interval_s=3600,
        **overrides,
    )
    transport = MemoryTransport()
    return InferenceServer(model, transport, config), transport


def answer(server: InferenceServer, payload: Any, topic: str = REQUEST) -> tuple[str, Any]:
    if isinstance(payload, (dict, list)) and topic == "binary":
        payload = json.dumps(payload).encode()
    reply_topic, body = server.answer(Message(topic=topic, payload=payload))
    return reply_topic, json.loads(body)


def test_a_request_is_answered_with_its_id(model: Model) -> None:
    server, _ = make_server(model)
    request = {"id": "r-1", "instances": [ROW, list(ROW.values())]}
    topic, reply = answer(server, json.dumps(request).encode())
    expected = model.predict([ROW, ROW])
    assert topic == RESPONSE
    assert reply["id"] == "r-1"
    assert reply["predictions"] == expected
    assert reply["model"] == {"name": model.name, "sha256": model.sha256}
    assert reply["latency_ms"] >= 0
    # a jsonMessage arrives already decoded; same answer
    assert answer(server, request)[1]["predictions"] == expected


def test_margin_and_reply_to(model: Model) -> None:
    server, _ = make_server(model)
    topic, reply = answer(
        server, {"id": 7, "instances": [ROW], "margin": True, "reply_to": f"{RESPONSE}/me"}
    )
    assert topic == f"{RESPONSE}/me" and reply["id"] == 7
    topic, reply = answer(server, {"id": 8, "instances": [ROW], "reply_to": "elsewhere"})
    assert topic == RESPONSE and reply["error"]["code"] == "forbidden_reply_topic"


def test_legacy_event_gets_the_legacy_reply(model: Model) -> None:
    server, _ = make_server(model)
    event = {"body": json.dumps([ROW]), "isBase64Encoded": False}
    topic, reply = answer(server, json.dumps(event).encode(), topic=LEGACY_IN)
    assert topic == LEGACY_OUT and reply == model.predict([ROW])
    encoded = {
        "body": base64.b64encode(json.dumps([ROW]).encode()).decode(),
        "isBase64Encoded": True,
    }
    assert answer(server, encoded, topic=LEGACY_IN) == (LEGACY_OUT, model.predict([ROW]))
    topic, reply = answer(server, b"{not json", topic=LEGACY_IN)
    assert topic == LEGACY_OUT and reply["code"] == "bad_json"


def _malformed() -> dict[str, tuple[Any, str]]:
    """name -> (payload, expected error code). Bytes are binaryMessages, objects jsonMessages."""
    row = list(ROW.values())
    cases: dict[str, tuple[Any, str]] = {
        "empty payload": (b"", "bad_json"),
        "truncated json": (b'{"id": 1, "instances": [', "bad_json"),
        "trailing garbage": (b'{"id": 1, "instances": [[1,2,3,4]]} x', "bad_json"),
        "single quotes": (b"{'id': 1}", "bad_json"),
        "non-utf8": (b'{"id": "\xff\xfe"}', "bad_encoding"),
        "latin-1 text": ('{"id": "caf\xe9"}'.encode("latin-1"), "bad_encoding"),
        "NaN token": (b'{"id": 1, "instances": [[NaN, 1, 2, 3]]}', "bad_json"),
        "Infinity token": (b'{"id": 1, "instances": [[Infinity, 1, 2, 3]]}', "bad_json"),
        "-Infinity token": (b'{"id": 1, "instances": [[-Infinity, 1, 2, 3]]}', "bad_json"),
        "huge exponent": (b'{"id": 1, "instances": [[1e999, 1, 2, 3]]}', "bad_json"),
        "NaN in jsonMessage": ({"id": 1, "instances": [[float("nan"), 1, 2, 3]]}, "bad_json"),
        "inf in jsonMessage": ({"id": 1, "instances": [[float("inf"), 1, 2, 3]]}, "bad_json"),
        "deep nesting": (b"[" * 1000 + b"]" * 1000, "bad_json"),
        "deep nesting object": (b'{"a":' * 100 + b"1" + b"}" * 100, "bad_json"),
        "deep jsonMessage": (
            {
                "id": 1,
                "instances": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            },
            "bad_json",
        ),
        "top-level number": (b"42", "bad_request"),
        "top-level string": (b'"hello"', "bad_request"),
        "top-level null": (b"null", "bad_request"),
        "top-level list": (b"[[1,2,3,4]]", "bad_request"),
        "no instances": ({"id": 1}, "bad_request"),
        "unknown field": ({"id": 1, "instances": [row], "extra": 1}, "bad_request"),
        "id is object": ({"id": {"a": 1}, "instances": [row]}, "bad_request"),
        "id is bool": ({"id": True, "instances": [row]}, "bad_request"),
        "id too long": ({"id": "x" * 1000, "instances": [row]}, "bad_request"),
        "margin is string": ({"id": 1, "instances": [row], "margin": "yes"}, "bad_request"),
        "reply_to is number": ({"id": 1, "instances": [row], "reply_to": 5}, "bad_request"),
        "reply_to empty": ({"id": 1, "instances": [row], "reply_to": ""}, "bad_request"),
        "reply_to wildcard": (
            {"id": 1, "instances": [row], "reply_to": f"{RESPONSE}/#"},
            "forbidden_reply_topic",
        ),
        "instances is object": ({"id": 1, "instances": ROW}, "bad_instances"),
        "instances is string": ({"id": 1, "instances": "1,2,3,4"}, "bad_instances"),
        "instances is null": ({"id": 1, "instances": None}, "bad_instances"),
        "instances empty": ({"id": 1, "instances": []}, "bad_instances"),
        "row is number": ({"id": 1, "instances": [1, 2, 3, 4]}, "bad_instances"),
        "row is string": ({"id": 1, "instances": ["1,2,3,4"]}, "bad_instances"),
        "row too short": ({"id": 1, "instances": [[1, 2, 3]]}, "bad_instances"),
        "row too long": ({"id": 1, "instances": [[1, 2, 3, 4, 5]]}, "bad_instances"),
        "row empty": ({"id": 1, "instances": [[]]}, "bad_instances"),
        "value is string": ({"id": 1, "instances": [[1, "2", 3, 4]]}, "bad_instances"),
        "value is bool": ({"id": 1, "instances": [[1, True, 3, 4]]}, "bad_instances"),
        "value is list": ({"id": 1, "instances": [[1, [2], 3, 4]]}, "bad_instances"),
        "value is object": ({"id": 1, "instances": [[1, {"v": 2}, 3, 4]]}, "bad_instances"),
        "value NaN string": ({"id": 1, "instances": [[1, "NaN", 3, 4]]}, "bad_instances"),
        "value huge int": ({"id": 1, "instances": [[1, 10**400, 3, 4]]}, "bad_instances"),
        "duplicate id": (b'{"id": 1, "id": 2, "instances": [[1, 2, 3, 4]]}', "bad_json"),
        "duplicate feature": (
            b'{"id": 1, "instances": [{"temp": 1, "temp": 2, "humidity": 1, "pressure": 1, '
            b'"wind speed": 1}]}',
            "bad_json",
        ),
        "unclosed string of escapes": (b'{"id": "' + b'\\"' * 500, "bad_json"),
        "id beyond 2**53 in jsonMessage": (
            {"id": float(2**53 + 2), "instances": [row]},
            "bad_request",
        ),
        "jsonMessage too large": ({"id": 1, "instances": [row] * 200}, "too_large"),
        "second row bad": ({"id": 1, "instances": [row, [1, 2]]}, "bad_instances"),
        "missing feature": ({"id": 1, "instances": [{"temp": 1}]}, "bad_features"),
        "unknown feature": ({"id": 1, "instances": [{**ROW, "rain": 1}]}, "bad_features"),
        "misspelled feature": (
            {"id": 1, "instances": [{**{k: v for k, v in ROW.items() if k != "temp"}, "Temp": 1}]},
            "bad_features",
        ),
        "named value is string": (
            {"id": 1, "instances": [{**ROW, "temp": "hot"}]},
            "bad_instances",
        ),
        "too many rows": ({"id": 1, "instances": [row] * 11}, "too_large"),
        "payload too large": (
            b'{"id": 1, "instances": [' + b"[1,2,3,4]," * 400 + b"[1,2,3,4]]}",
            "too_large",
        ),
        "legacy body not json": ({"body": "{{", "isBase64Encoded": False}, "bad_json"),
        "legacy body not list": ({"body": '{"a": 1}', "isBase64Encoded": False}, "bad_instances"),
        "legacy bad base64": ({"body": "!!", "isBase64Encoded": True}, "bad_encoding"),
        "legacy flag wrong": ({"body": "[]", "isBase64Encoded": 1}, "bad_request"),
        "legacy empty": ({"body": "[]", "isBase64Encoded": False}, "bad_instances"),
    }
    return cases


MALFORMED = _malformed()


# Codes no payload can cause: the server's state (a full queue) or its own failure; each has
# its own test (test_overload_is_an_error_reply_not_unbounded_memory, test_serving_faults.py).
_NOT_FROM_A_PAYLOAD = {"overloaded", "internal"}


def test_every_documented_error_code_is_caused_by_some_malformed_request() -> None:
    """A new error code in the product's table needs a request here that gets it."""
    covered = {code for _, code in MALFORMED.values()}
    assert covered <= set(ERROR_CODES)  # what the cases expect is documented
    assert set(ERROR_CODES) - _NOT_FROM_A_PAYLOAD - covered == set()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_gets_an_error_reply(model: Model, case: str) -> None:
    server, _ = make_server(model, limits=Limits(max_payload_bytes=2048, max_rows=10))
    payload, code = MALFORMED[case]
    topic, reply = answer(server, payload)
    assert topic == RESPONSE
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    if isinstance(payload, dict) and code not in ("bad_request",) and "id" in payload:
        assert reply["id"] == payload["id"]


def test_server_keeps_answering_after_every_malformed_request(model: Model) -> None:
    server, transport = make_server(model, limits=Limits(max_payload_bytes=2048, max_rows=10))
    stop = threading.Event()
    runner = threading.Thread(target=server.run, args=(stop,))
    runner.start()
    try:
        _wait(lambda: transport.deliver is not None)
        assert transport.deliver is not None
        for payload, _ in MALFORMED.values():
            transport.deliver(Message(REQUEST, payload))
        transport.deliver(Message(REQUEST, {"id": "after", "instances": [ROW]}))
        _wait(lambda: len(transport.published) == len(MALFORMED) + 1)
    finally:
        stop.set()
        runner.join(10)
    replies = [body for _, body in transport.published]
    assert sum("error" in r for r in replies) == len(MALFORMED)
    assert replies[-1]["id"] == "after" and replies[-1]["predictions"] == model.predict([ROW])


def test_overload_is_an_error_reply_not_unbounded_memory(model: Model) -> None:
    server, transport = make_server(model, queue_size=2)
    transport.gate.clear()  # publishing blocks: the worker stalls, the queue fills
    stop = threading.Event()
    runner = threading.Thread(target=server.run, args=(stop,))
    runner.start()
    try:
        _wait(lambda: transport.deliver is not None)
        assert transport.deliver is not None
        for i in range(10):
            transport.deliver(Message(REQUEST, json.dumps({"id": i, "instances": [ROW]}).encode()))
        counts = server.stats.counts
        assert counts["received"] == 10
        transport.gate.set()
        _wait(lambda: len(transport.published) + counts["dropped"] == 10)
    finally:
        stop.set()
        runner.join(10)
    replies = {body["id"]: body for _, body in transport.published}
    overloaded = [i for i, r in replies.items() if r.get("error", {}).get("code") == "overloaded"]
    answered = [i for i, r in replies.items() if "predictions" in r]
    assert overloaded, replies
    assert len(answered) >= 2
    assert len(replies) + server.stats.counts["dropped"] == 10


def test_stop_answers_everything_received_before_it(model: Model) -> None:
    server, transport = make_server(model, queue_size=1000)
    transport.gate.clear()
    stop = threading.Event()
    runner = threading.Thread(target=server.run, args=(stop,))
    runner.start()
    _wait(lambda: transport.deliver is not None)
    assert transport.deliver is not None
    for i in range(300):
        transport.deliver(Message(REQUEST, {"id": i, "instances": [ROW] * 5}))
    stop.set()  # as SIGTERM does, while 300 requests are waiting
    transport.gate.set()
    runner.join(30)
    assert not runner.is_alive()
    assert not transport.receiving and transport.closed
    assert sorted(body["id"] for _, body in transport.published) == list(range(300))


def test_numpy_free_predictions_are_json_floats(model: Model) -> None:
    server, _ = make_server(model)
    _, reply = answer(server, {"id": 1, "instances": [ROW]})
    assert reply["predictions"] == [float(np.float32(reply["predictions"][0]))]


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.002):
                raise AssertionError("timed out waiting")
    finally:
        deadline.cancel()
