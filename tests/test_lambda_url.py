"""Lambda Function URL requests (payload format 2.0) through the same handler: POST only, the
IPC server's decoding and error codes, and answers whose body is a JSON string."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from edgeboost.runtime import Model
from edgeboost.runtime.lambda_handler import BUNDLE_ENV_VAR, handler

from .conftest import NAMES, OLD_MODEL_EXPECTED


@pytest.fixture()
def model(named_bundle: tuple[Path, object]) -> Model:
    return Model.load(named_bundle[0])


RECORDS = [dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True)), dict.fromkeys(NAMES, 1.0)]


def url_event(
    body: str | bytes | None, *, method: str = "POST", base64_body: bool = False
) -> dict[str, object]:
    """A Function URL event as Lambda builds it (the fields the handler may read, and others)."""
    if isinstance(body, bytes) or base64_body:
        raw = body if isinstance(body, bytes) else body.encode()
        body, encoded = base64.b64encode(raw).decode(), True
    else:
        encoded = False
    event: dict[str, object] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.eu-west-1.on.aws"},
        "requestContext": {
            "http": {"method": method, "path": "/", "protocol": "HTTP/1.1", "sourceIp": "1.2.3.4"},
            "requestId": "id",
            "stage": "$default",
        },
        "isBase64Encoded": encoded,
    }
    if body is not None:
        event["body"] = body
    return event


def parsed(answer: dict[str, Any]) -> Any:
    """The JSON of a Function URL answer, checking what every answer must carry."""
    assert answer["headers"]["content-type"] == "application/json"
    assert isinstance(answer["body"], str), "a Function URL body must be a string"
    assert answer["isBase64Encoded"] is False
    return json.loads(answer["body"])


def expected_for(model: Model, records: list[dict[str, float]]) -> list[float]:
    return [float(v) for v in model.predict(records)]


def test_a_url_post_of_records_gets_a_json_string_of_predictions(model: Model) -> None:
    answer = handler(url_event(json.dumps(RECORDS)), None, model=model)
    assert answer["statusCode"] == 200
    assert parsed(answer) == expected_for(model, RECORDS)


def test_the_old_samples_through_a_function_url(old_bundle: Path, shared_data: Path) -> None:
    body = (shared_data / "samples.json").read_text()
    answer = handler(url_event(body), None, model=Model.load(old_bundle))
    assert (answer["statusCode"], parsed(answer)) == (200, OLD_MODEL_EXPECTED)


def test_a_base64_url_body_is_decoded(model: Model) -> None:
    # What a Function URL sends for a content type it takes for binary (e.g. none at all).
    answer = handler(url_event(json.dumps(RECORDS).encode()), None, model=model)
    assert (answer["statusCode"], parsed(answer)) == (200, expected_for(model, RECORDS))


def test_an_instances_request_gets_the_ipc_reply(model: Model) -> None:
    body = json.dumps({"id": "r-7", "instances": RECORDS, "margin": True})
    reply = parsed(handler(url_event(body), None, model=model))
    assert isinstance(reply, dict)
    assert reply["id"] == "r-7"
    assert reply["predictions"] == [float(v) for v in model.predict(RECORDS, margin=True)]
    assert reply["model"] == {"name": model.name, "sha256": model.sha256}
    assert reply["latency_ms"] >= 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
def test_a_method_other_than_post_gets_405(method: str, model: Model) -> None:
    answer = handler(url_event(json.dumps(RECORDS), method=method), None, model=model)
    assert answer["statusCode"] == 405
    assert answer["headers"]["allow"] == "POST"
    error = parsed(answer)
    assert isinstance(error, dict) and error["code"] == "bad_request"
    assert method in error["message"]


BAD_URL_BODIES = {
    "no body": (None, "bad_request"),
    "empty body": ("", "bad_request"),
    "not JSON": ("[{", "bad_json"),
    "NaN token": ('[{"temp": NaN}]', "bad_json"),
    "duplicate key": ('[{"temp": 1, "temp": 2}]', "bad_json"),
    "deep nesting": ("[" * 5000 + "]" * 5000, "bad_json"),
    "not UTF-8": (b"\xff\xfe[]", "bad_encoding"),
    "lone surrogate": ('["\udc80"]', "bad_encoding"),
    "an object without instances": ('{"temp": 1}', "bad_request"),
    "unknown request field": (json.dumps({"instances": RECORDS, "x": 1}), "bad_request"),
    "reply_to": (json.dumps({"instances": RECORDS, "reply_to": "a/b"}), "bad_request"),
    "empty list": ("[]", "bad_instances"),
    "wrong width": ("[[1, 2, 3]]", "bad_instances"),
    "string value": (json.dumps([{**RECORDS[0], "temp": "hot"}]), "bad_instances"),
    "missing feature": (json.dumps([{"temp": 1.0}]), "bad_features"),
    "too many rows": (json.dumps([[0, 0, 0, 0]] * 100_001), "too_large"),
    "over 6 MiB": ("[" + " " * (6 * 1024 * 1024) + "]", "too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_URL_BODIES))
def test_bad_url_bodies_get_a_400_with_the_ipc_codes(case: str, model: Model) -> None:
    body, code = BAD_URL_BODIES[case]
    answer = handler(url_event(body), None, model=model)
    error = parsed(answer)
    assert (answer["statusCode"], error["code"]) == (400, code), error
    assert error["message"]
    good = handler(url_event(json.dumps(RECORDS)), None, model=model)
    assert good["statusCode"] == 200


def test_bad_base64_and_flags_are_400(model: Model) -> None:
    event = url_event("[]")
    answer = handler({**event, "body": "%%%", "isBase64Encoded": True}, None, model=model)
    assert (answer["statusCode"], parsed(answer)["code"]) == (400, "bad_encoding")
    answer = handler({**event, "isBase64Encoded": "yes"}, None, model=model)
    assert (answer["statusCode"], parsed(answer)["code"]) == (400, "bad_request")
    # a base64 body that cannot fit the limit once decoded is refused before decoding
    huge = "A" * (8 * 1024 * 1024 + 4)
    answer = handler({**event, "body": huge, "isBase64Encoded": True}, None, model=model)
    assert (answer["statusCode"], parsed(answer)["code"]) == (400, "too_large")


def test_a_reply_over_the_limit_is_too_large_not_a_lambda_error(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeboost.runtime import lambda_handler
    from edgeboost.runtime.protocol import Limits

    monkeypatch.setattr(
        lambda_handler, "FUNCTION_URL_LIMITS", Limits(max_payload_bytes=10_000, max_reply_bytes=30)
    )
    answer = handler(url_event(json.dumps(RECORDS)), None, model=model)
    assert (answer["statusCode"], parsed(answer)["code"]) == (400, "too_large")


def test_an_unloadable_bundle_is_a_500_with_a_json_string(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(BUNDLE_ENV_VAR, str(tmp_path / "nowhere"))
    answer = handler(url_event(json.dumps(RECORDS)), None)
    error = parsed(answer)
    assert (answer["statusCode"], error["code"]) == (500, "model_unavailable")
    assert "no manifest" in error["message"]


def test_a_model_failure_is_a_500_internal_and_logged(
    model: Model, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        name, sha256 = model.name, model.sha256

        def predict(self, rows: object, *, margin: bool = False) -> object:
            raise RuntimeError("boom")

    answer = handler(url_event(json.dumps(RECORDS)), None, model=Broken())
    error = parsed(answer)
    assert (answer["statusCode"], error["code"]) == (500, "internal")
    assert "boom" in error["message"]
    assert "internal error" in caplog.text


def test_an_http_event_without_a_method_is_not_guessed(model: Model) -> None:
    # An API Gateway REST (payload format 1.0) event: requestContext, but no http.method.
    event = {**url_event(json.dumps(RECORDS)), "requestContext": {"httpMethod": "POST"}}
    answer = handler(event, None, model=model)
    assert answer["statusCode"] == 405
    assert "payload format 2.0" in parsed(answer)["message"]
