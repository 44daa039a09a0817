"""The old Lambda-style handler contract: same event in, same answer out; bad input -> 400."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from edgeboost.runtime import Model
from edgeboost.runtime.lambda_handler import BUNDLE_ENV_VAR, handler

from .conftest import NAMES, OLD_MODEL_EXPECTED


@pytest.fixture()
def model(named_bundle: tuple[Path, object]) -> Model:
    return Model.load(named_bundle[0])


RECORDS = [dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True)), dict.fromkeys(NAMES, 1.0)]


def test_old_event_gets_the_old_answer(old_bundle: Path, shared_data: Path) -> None:
    body = (shared_data / "samples.json").read_text()
    answer = handler({"body": body, "isBase64Encoded": False}, None, model=Model.load(old_bundle))
    assert answer == {"statusCode": 200, "body": OLD_MODEL_EXPECTED}


def test_base64_body_and_bundle_from_environment(
    named_bundle: tuple[Path, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUNDLE_ENV_VAR, str(named_bundle[0]))
    body = base64.b64encode(json.dumps(RECORDS).encode()).decode()
    answer = handler({"body": body, "isBase64Encoded": True}, None)
    booster = named_bundle[1]
    rows = np.array([[r[n] for n in NAMES] for r in RECORDS], dtype=np.float32)
    expected = [float(v) for v in booster.inplace_predict(rows)]  # type: ignore[attr-defined]
    assert answer == {"statusCode": 200, "body": expected}


BAD_EVENTS = {
    "not an object": ["body"],
    "no body": {"isBase64Encoded": False},
    "body not JSON": {"body": "[{", "isBase64Encoded": False},
    "body NaN token": {"body": '[{"temp": NaN}]', "isBase64Encoded": False},
    "body is an object": {"body": '{"temp": 1}', "isBase64Encoded": False},
    "bad base64": {"body": "%%%", "isBase64Encoded": True},
    "base64 of non-UTF-8": {
        "body": base64.b64encode(b"\xff\xfe").decode(),
        "isBase64Encoded": True,
    },
    "flag not a bool": {"body": "[]", "isBase64Encoded": "yes"},
    "missing feature": {"body": json.dumps([{"temp": 1.0}]), "isBase64Encoded": False},
    "unknown feature": {
        "body": json.dumps([{**RECORDS[0], "rain": 1}]),
        "isBase64Encoded": False,
    },
    "string value": {"body": json.dumps([{**RECORDS[0], "temp": "hot"}]), "isBase64Encoded": False},
    "nested junk": {"body": json.dumps([[[[[1]]]]]), "isBase64Encoded": False},
    "deep nesting": {"body": "[" * 5000 + "]" * 5000, "isBase64Encoded": False},
    "wrong width": {"body": "[[1, 2, 3]]", "isBase64Encoded": False},
}


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_events_get_a_400_answer(case: str, model: Model) -> None:
    answer = handler(BAD_EVENTS[case], None, model=model)
    assert answer["statusCode"] == 400, answer
    assert answer["body"]["code"] and answer["body"]["message"]
    # and the model still answers afterwards
    good = handler({"body": json.dumps(RECORDS)}, None, model=model)
    assert good["statusCode"] == 200


def test_an_empty_list_of_records_gets_an_empty_list(model: Model) -> None:
    # As Model.predict (and XGBoost) answer zero rows; the IPC protocol refuses an empty
    # 'instances' itself (bad_instances), before the model is asked.
    assert handler({"body": "[]"}, None, model=model) == {"statusCode": 200, "body": []}


def test_missing_bundle_is_a_500_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(BUNDLE_ENV_VAR, str(tmp_path / "nowhere"))
    answer = handler({"body": "[]"}, None)
    assert answer["statusCode"] == 500
    assert "no manifest" in answer["body"]["message"]
