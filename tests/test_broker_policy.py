"""The broker's rules without any socket: topic matching, access policies, recipe loading and
the JSON shapes of pub/sub messages."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeboost.broker import (
    ComponentPolicy,
    PolicyError,
    RecipeError,
    load_recipe,
    load_recipe_policy,
)
from edgeboost.broker.errors import MalformedRequest, ServiceError
from edgeboost.broker.messages import (
    as_doubles,
    auth_token,
    check_publish_message,
    parse_publish_message,
    parse_request,
    subscription_event,
)
from edgeboost.broker.policy import compile_resource
from edgeboost.broker.pubsub import RECEIVE_ALL_MESSAGES, PubSubHub, Subscription
from edgeboost.broker.recipe import policy_from_recipe
from edgeboost.broker.topics import (
    filter_matches,
    is_wildcard_filter,
    publish_topic_has_wildcard,
    topic_levels,
)

PUBLISH = "aws.greengrass#PublishToTopic"
SUBSCRIBE = "aws.greengrass#SubscribeToTopic"

# -- topics --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/+/c", "a/x/c", True),
        ("+", "a", True),
        ("+/+", "a", False),
        ("a/#", "a/b", True),
        ("a/#", "a/b/c/d", True),
        ("a/#", "a", False),  # the Nucleus's trie: '#' needs at least one level (MQTT says True)
        ("#", "anything/at/all", True),
        ("a/#/c", "a/x/c", True),  # a '#' that is not last acts like '+'
        ("a/#/c", "a/x/y/c", False),
        ("a/b", "a/b/", True),  # Java split drops trailing empty levels
        ("a//b", "a//b", True),
        ("a/+/b", "a//b", True),
        ("a+", "a+", True),  # wildcards inside a level are ordinary characters
        ("a+", "ab", False),
        ("a/b", "/", False),
    ],
)
def test_filter_matching_follows_the_nucleus(topic_filter: str, topic: str, expected: bool) -> None:
    assert filter_matches(topic_levels(topic_filter), topic_levels(topic)) is expected


class _Recorder:
    def __init__(self) -> None:
        self.streams: list[int] = []

    def send_stream_event(self, stream_id: int, model_type: str, payload: bytes) -> None:
        self.streams.append(stream_id)


_LEVEL = st.sampled_from(["a", "b", "", "+", "#", "a+"])


@given(
    filters=st.lists(st.lists(_LEVEL, max_size=4).map("/".join), max_size=12),
    topic=st.lists(st.sampled_from(["a", "b", ""]), max_size=4).map("/".join),
    dropped=st.sets(st.integers(0, 11)),
)
def test_the_hub_index_delivers_what_a_full_scan_would(
    filters: list[str], topic: str, dropped: set[int]
) -> None:
    """Exact filters are looked up and wildcard ones scanned; together, in subscription order,
    they must give the same streams as matching every live filter."""
    hub, sink = PubSubHub(), _Recorder()
    subscriptions = [
        Subscription("C", f, RECEIVE_ALL_MESSAGES, sink, n + 1) for n, f in enumerate(filters)
    ]
    for subscription in subscriptions:
        hub.add(subscription)
    hub.remove_all(s for n, s in enumerate(subscriptions) if n in dropped)
    live = [s for n, s in enumerate(subscriptions) if n not in dropped]
    expected = [s.stream_id for s in live if filter_matches(s.levels, topic_levels(topic))]
    assert hub.publish(topic, "P", b"{}") == len(expected)
    assert sink.streams == expected
    assert [info.stream_id for info in hub.view] == [s.stream_id for s in live]


def test_topic_levels_use_java_split_semantics() -> None:
    assert topic_levels("a/b/") == ("a", "b")
    assert topic_levels("/a") == ("", "a")
    assert topic_levels("") == ("",)
    assert topic_levels("//") == ()


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [("a/+", True), ("a/#", True), ("#", True), ("a/#/b", False), ("a+/b", False), ("a/b", False)],
)
def test_wildcard_filters(topic_filter: str, expected: bool) -> None:
    assert is_wildcard_filter(topic_filter) is expected


@pytest.mark.parametrize(
    ("topic", "expected"), [("a/b", False), ("a/+", True), ("a#", True), ("a/*", True)]
)
def test_publish_topic_wildcards(topic: str, expected: bool) -> None:
    assert publish_topic_has_wildcard(topic) is expected


# -- policies ------------------------------------------------------------------------------------


def _policy(operations: list[str], resources: list[str]) -> ComponentPolicy:
    access = {
        "aws.greengrass.ipc.pubsub": {"p1": {"operations": operations, "resources": resources}}
    }
    return ComponentPolicy.from_access_control("Comp", access)


@pytest.mark.parametrize(
    ("resource", "topic", "expected"),
    [
        ("t/1", "t/1", True),
        ("t/1", "t/2", False),
        ("t/*", "t/1", True),
        ("t/*", "t/1/deeper", True),  # '*' crosses levels
        ("t/*", "u/1", False),
        ("*", "anything", True),
        ("t/#", "t/1", False),  # MQTT wildcards in resources are literal
        ("t/#", "t/#", True),
        ("t/+", "t/+", True),
        ("a*c", "abbc", True),
        ("a${*}c", "a*c", True),
        ("a${*}c", "abc", False),
        ("cost${$}", "cost$", True),
        ("what${?}", "what?", True),
    ],
)
def test_resources_are_globs_with_literal_mqtt_wildcards(
    resource: str, topic: str, expected: bool
) -> None:
    assert _policy([PUBLISH], [resource]).is_authorized(PUBLISH, topic) is expected


def test_operations_must_match_unless_star() -> None:
    publish_only = _policy([PUBLISH], ["t"])
    assert not publish_only.is_authorized(SUBSCRIBE, "t")
    assert _policy(["*"], ["t"]).is_authorized(SUBSCRIBE, "t")
    assert not ComponentPolicy("Nobody").is_authorized(PUBLISH, "t")
    assert ComponentPolicy.allow_all("Everyone").is_authorized(SUBSCRIBE, "any/thing")


def test_a_missing_topic_is_granted_by_any_policy_for_the_operation() -> None:
    # The Nucleus's WildcardTrie matches a null resource, even for a policy without resources.
    assert _policy([PUBLISH], []).grants(PUBLISH)
    assert _policy(["*"], ["t"]).grants(SUBSCRIBE)
    assert not _policy([PUBLISH], ["*"]).grants(SUBSCRIBE)
    assert not ComponentPolicy("Nobody").grants(PUBLISH)


def test_denial_uses_the_nucleus_wording() -> None:
    assert _policy([PUBLISH], ["t"]).denial(SUBSCRIBE, "denied/x") == (
        "Principal Comp is not authorized to perform "
        "aws.greengrass.ipc.pubsub:aws.greengrass#SubscribeToTopic on resource denied/x"
    )


@pytest.mark.parametrize(
    ("resource", "reason"),
    [
        ("what?", "not a wildcard"),
        ("a${x}", "invalid escape"),
        ("a${", "invalid escape"),
        ("", "empty"),
    ],
)
def test_invalid_resources_are_refused(resource: str, reason: str) -> None:
    with pytest.raises(PolicyError, match=reason):
        compile_resource(resource)


def test_access_control_parsing_details() -> None:
    access = {
        "aws.greengrass.ipc.mqttproxy": {"m": {"operations": ["*"], "resources": ["*"]}},
        "AWS.Greengrass.IPC.PubSub": {"p": {"Operations": [SUBSCRIBE], "RESOURCES": ["x/*"]}},
    }
    policy = ComponentPolicy.from_access_control("C", json.dumps(access))  # a JSON string works
    assert [p.policy_id for p in policy.pubsub] == ["p"]
    assert policy.is_authorized(SUBSCRIBE, "x/y")
    assert not policy.is_authorized(PUBLISH, "x/y")
    with pytest.raises(PolicyError, match="no operations"):
        _policy([], ["t"])
    with pytest.raises(PolicyError, match="list of strings"):
        _policy([PUBLISH], "t")  # type: ignore[arg-type]


# -- recipes -------------------------------------------------------------------------------------


def _recipe(name: str = "com.example.Consumer", access: Any = None) -> dict[str, Any]:
    access = access or {
        "aws.greengrass.ipc.pubsub": {
            "com.example.Consumer:pubsub:1": {
                "policyDescription": "requests out, replies in",
                "operations": [PUBLISH],
                "resources": ["edgeboost/requests"],
            },
            "com.example.Consumer:pubsub:2": {
                "operations": [SUBSCRIBE],
                "resources": ["edgeboost/replies/*"],
            },
        }
    }
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": access}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"}}],
    }


def _defaults(defaults: Any) -> dict[str, Any]:
    return {"ComponentName": "A", "ComponentConfiguration": {"DefaultConfiguration": defaults}}


def _yaml_defaults(line: str) -> str:
    return f"ComponentName: A\nComponentConfiguration:\n  DefaultConfiguration:\n    {line}\n"


def _check_consumer(policy: ComponentPolicy) -> None:
    assert policy.name == "com.example.Consumer"
    assert policy.is_authorized(PUBLISH, "edgeboost/requests")
    assert policy.is_authorized(SUBSCRIBE, "edgeboost/replies/7")
    assert not policy.is_authorized(SUBSCRIBE, "edgeboost/requests")


def test_json_recipe(tmp_path: Path) -> None:
    path = tmp_path / "consumer.json"
    path.write_text(json.dumps(_recipe()))
    _check_consumer(load_recipe_policy(path))


def test_the_default_configuration_keeps_access_control(tmp_path: Path) -> None:
    """The Java Nucleus keeps accessControl in the component's configuration
    (services.NAME.configuration.accessControl), and GetConfiguration shows it."""
    document = _recipe()
    defaults = document["ComponentConfiguration"]["DefaultConfiguration"]
    defaults.update({"QueueSize": 64, "Bundle": {"Version": "1.0.0", "Rows": [1, 2.5, None]}})
    path = tmp_path / "consumer.json"
    path.write_text(json.dumps(document))
    recipe = load_recipe(path)
    assert recipe.name == "com.example.Consumer"
    _check_consumer(recipe.policy)
    assert recipe.configuration == defaults
    path.write_text(json.dumps({"ComponentName": "Plain", "ComponentVersion": "1.0.0"}))
    assert load_recipe(path).configuration == {}


YAML_RECIPE = """\
RecipeFormatVersion: '2020-01-25'
componentName: com.example.Consumer
ComponentVersion: 1.0.0
componentConfiguration:
  defaultConfiguration:
    accessControl:
      aws.greengrass.ipc.pubsub:
        com.example.Consumer:pubsub:1:
          operations: [aws.greengrass#PublishToTopic]
          resources: [edgeboost/requests]
        com.example.Consumer:pubsub:2:
          operations:
            - aws.greengrass#SubscribeToTopic
          resources:
            - edgeboost/replies/*
"""


def test_yaml_recipe_with_case_insensitive_keys(tmp_path: Path) -> None:
    pytest.importorskip("yaml", reason="PyYAML is optional for the broker")
    path = tmp_path / "consumer.yaml"
    path.write_text(YAML_RECIPE + "    QueueSize: 64\n")
    _check_consumer(load_recipe_policy(path))
    assert load_recipe(path).configuration["QueueSize"] == 64


def test_yaml_recipe_without_pyyaml_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    path = tmp_path / "consumer.yml"
    path.write_text(YAML_RECIPE)
    with pytest.raises(RecipeError, match="pip install pyyaml, or convert the recipe to JSON"):
        load_recipe_policy(path)


def test_recipe_without_access_control_grants_nothing(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"ComponentName": "Plain", "ComponentVersion": "1.0.0"}))
    policy = load_recipe_policy(path)
    assert policy == ComponentPolicy("Plain")
    assert not policy.is_authorized(PUBLISH, "t")


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("r.json", "{not json", "not valid JSON"),
        ("r.json", "[]", "mapping at the top level"),
        ("r.json", '{"ComponentVersion": "1.0.0"}', "no ComponentName"),
        ("r.json", json.dumps(_recipe(access={"aws.greengrass.ipc.pubsub": []})), "must map"),
        (
            "r.json",
            json.dumps(
                _recipe(
                    access={
                        "aws.greengrass.ipc.pubsub": {
                            "p": {"operations": ["*"], "resources": ["a?"]}
                        }
                    }
                )
            ),
            "not a wildcard",
        ),
        ("r.json", json.dumps(_defaults(1)), "DefaultConfiguration must be a mapping"),
        ("r.yaml", _yaml_defaults("1: a"), "keys are strings"),
        ("r.yaml", _yaml_defaults("When: 2024-01-01"), "JSON cannot carry"),  # a YAML date
    ],
)
def test_bad_recipes_name_the_file_and_the_problem(
    tmp_path: Path, name: str, text: str, reason: str
) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml", reason="PyYAML is optional for the broker")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RecipeError, match=reason) as info:
        load_recipe_policy(path)
    assert name in str(info.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe_policy(tmp_path / "absent.json")


# -- message shapes ------------------------------------------------------------------------------


def test_integers_become_doubles_like_the_nucleus() -> None:
    converted = as_doubles({"id": 7, "ok": True, "x": [1, 2.5, None, "s", {"n": -3}]})
    assert converted == {"id": 7.0, "ok": True, "x": [1.0, 2.5, None, "s", {"n": -3.0}]}
    assert type(converted["id"]) is float and converted["ok"] is True
    with pytest.raises(MalformedRequest, match="does not fit a double"):
        as_doubles({"big": 10**400})


def test_subscription_event_shapes() -> None:
    json_message = parse_publish_message(
        {"jsonMessage": {"message": {"a": 1}}}, numbers_as_doubles=False
    )
    binary_message = parse_publish_message(
        {"binaryMessage": {"message": "eA"}}, numbers_as_doubles=False
    )
    assert json_message is not None and binary_message is not None
    assert json.loads(subscription_event(json_message, "t/1")) == {
        "jsonMessage": {"message": {"a": 1}, "context": {"topic": "t/1"}}
    }
    assert json.loads(subscription_event(binary_message, "t/1")) == {
        "binaryMessage": {"message": "eA==", "context": {"topic": "t/1"}}
    }
    # Compact, as Gson writes it.
    assert subscription_event(json_message, "t/1") == (
        b'{"jsonMessage":{"message":{"a":1},"context":{"topic":"t/1"}}}'
    )


@pytest.mark.parametrize(
    ("publish_message", "reason"),
    [
        ({"jsonMessage": {"message": [1, 2]}}, "must be a JSON object"),
        ({"jsonMessage": "x"}, "must be an object"),
        ({"binaryMessage": {"message": "*not base64*"}}, "not valid base64"),
        ({"binaryMessage": {"message": 5}}, "base64 string"),
        # A shape error in one member fails deserialization even when both are set.
        ({"jsonMessage": {"message": {}}, "binaryMessage": {"message": "*"}}, "not valid base64"),
        ([], "must be an object"),
    ],
)
def test_publish_messages_the_nucleus_cannot_deserialize(publish_message: Any, reason: str) -> None:
    with pytest.raises(MalformedRequest, match=reason):
        parse_publish_message(publish_message, numbers_as_doubles=True)


@pytest.mark.parametrize(
    ("publish_message", "reason"),
    [
        (None, "publishMessage is required"),
        (
            {"jsonMessage": {"message": {}}, "binaryMessage": {"message": "eA"}},
            "More than one union member set for type: aws.greengrass#PublishMessage",
        ),
        ({"jsonMessage": {}, "binaryMessage": {}}, "More than one union member"),
        ({"jsonMessage": {}}, "jsonMessage.message is required"),
        ({"binaryMessage": {"message": None}}, "binaryMessage.message is required"),
    ],
)
def test_publish_messages_the_nucleus_refuses_after_authorization(
    publish_message: Any, reason: str
) -> None:
    parsed = parse_publish_message(publish_message, numbers_as_doubles=True)
    with pytest.raises(ServiceError, match=re.escape(reason)):
        check_publish_message(parsed)


def test_a_publish_message_with_neither_member_is_an_empty_event() -> None:
    for empty in ({}, {"jsonMessage": None, "binaryMessage": None}):
        parsed = check_publish_message(parse_publish_message(empty, numbers_as_doubles=True))
        assert subscription_event(parsed, "t") == b"{}"


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b"{bad", b'{"x": NaN}', b"\xff\xfe", b'{"x": Infinity}', b"[" * 100_000],
)
def test_requests_must_be_strict_json_objects(payload: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_request(payload)


def test_auth_token_only_from_an_object_with_a_string_token() -> None:
    assert auth_token(b'{"authToken": "tok"}') == "tok"
    for payload in (b'{"authToken": 5}', b'{"authToken": ""}', b'"tok"', b"[" * 100_000, b"{"):
        assert auth_token(payload) is None


def test_the_inference_component_recipe_template_loads() -> None:
    """The packaged inference recipe (filled from recipes/inference.yaml) gives the broker the
    permissions the server needs: requests in, replies out."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is optional for the broker")
    template = Path(__file__).resolve().parents[1] / "recipes" / "inference.yaml"
    values = {
        "name": "com.example.Inference",
        "request_topic": "edgeboost/requests",
        "response_topic": "edgeboost/replies",
        "legacy_request_topic": "local/inference",
        "legacy_response_topic": "local/result",
    }
    text = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], f"x-{m[1]}"), template.read_text())
    policy = policy_from_recipe(yaml.safe_load(text))
    assert policy.name == "com.example.Inference"
    for topic in ("edgeboost/requests", "local/inference"):
        assert policy.is_authorized(SUBSCRIBE, topic)
        assert not policy.is_authorized(PUBLISH, topic)
    for topic in ("edgeboost/replies", "edgeboost/replies/client-7", "local/result"):
        assert policy.is_authorized(PUBLISH, topic)
