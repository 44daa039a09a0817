"""runtime/records.py: what the runtime's records promise, the way dataclasses keep it."""

from __future__ import annotations

import dataclasses

import pytest

from edgeboost.runtime.manifest import Manifest
from edgeboost.runtime.records import as_dict, field, record, replace
from edgeboost.runtime.server import ServerConfig


@record
class Point:
    x: int
    y: int = 0
    tags: dict[str, str] = field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PointDataclass:
    x: int
    y: int = 0
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


def test_init_takes_positions_keywords_and_defaults() -> None:
    assert (Point(1).x, Point(1).y, Point(1).tags) == (1, 0, {})
    assert Point(1, 2) == Point(y=2, x=1)
    assert Point(1).tags is not Point(1).tags  # a factory makes one per record


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing argument 'x'"),
        ((1, 2, {}, 4), {}, "takes 3 arguments, got 4"),
        ((1,), {"x": 2}, "unexpected or repeated 'x'"),
        ((1,), {"z": 2}, "unexpected or repeated 'z'"),
    ],
)
def test_init_refuses_what_a_dataclass_refuses(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)
    with pytest.raises(TypeError):
        PointDataclass(*args, **kwargs)  # type: ignore[arg-type]


def test_equal_by_value_and_class_hashable_and_immutable() -> None:
    assert Point(1, 2) != Point(1, 3)
    assert Point(1) != PointDataclass(1)
    assert hash(ServerConfig()) == hash(ServerConfig())
    point = Point(1)
    with pytest.raises(AttributeError, match="immutable"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.x  # type: ignore[misc]
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags={})"


def test_replace_and_as_dict_match_dataclasses() -> None:
    ours, theirs = Point(1, 2, {"a": "b"}), PointDataclass(1, 2, {"a": "b"})
    assert as_dict(replace(ours, y=5)) == dataclasses.asdict(dataclasses.replace(theirs, y=5))
    assert replace(ours) == ours and replace(ours) is not ours
    with pytest.raises(TypeError, match="no field 'z'"):
        replace(ours, z=1)


def test_a_manifest_survives_json(shipped_bundle: object) -> None:
    manifest = Manifest.read(str(shipped_bundle))
    again = Manifest.from_bytes(manifest.to_json().encode())
    assert again == manifest
    assert as_dict(again)["targets"] == as_dict(manifest)["targets"] != {}


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default after one with"):

        @record
        class Bad:
            a: int = 0
            b: int
