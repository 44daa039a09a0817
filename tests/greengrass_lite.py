"""Greengrass nucleus lite (AWS's C Nucleus) as a real IPC server for tests: the pytest layer over
edgeboost.broker.greengrass_lite, which builds and runs it (facts and timings:
../shared/greengrass-lite/README.md).

Fixtures (a test module takes them with ``lite_build = greengrass_lite.lite_build`` etc.):
``lite_build`` (the binaries), ``edgeboost_package`` (the recipes ``edgeboost package`` writes)
and ``greengrass_lite`` (one running instance per session that declares those components and
the test components TALKER, LISTENER and STRANGER). The configuration tests start their own
(tests/ipc_servers.py config_server).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeboost.broker import ComponentPolicy, load_recipe_policy
from edgeboost.broker.greengrass_lite import GreengrassLite, LiteBuild, build, what_is_missing
from edgeboost.broker.policy import PUBSUB_DESTINATION
from edgeboost.recipes import ComponentOptions, Package, package_bundle

from .conftest import NAMES, SHARED, need

TARBALL = SHARED / "greengrass-lite" / "ggl-src-2.6.0-326e992.tar.xz"

PUBLISH, SUBSCRIBE = "aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"
TALKER, LISTENER, STRANGER = "com.example.Talker", "com.example.Listener", "com.example.Stranger"
SERVER = "com.example.Sensors"
CONSUMER = f"{SERVER}.Consumer"
ROW = dict(zip(NAMES, [0.5, -1.0, 2.0, 0.25], strict=True))


def _grant(name: str, operations: list[str], resources: list[str]) -> ComponentPolicy:
    block = {f"{name}:pubsub": {"operations": operations, "resources": resources}}
    return ComponentPolicy.from_access_control(name, {PUBSUB_DESTINATION: block})


TEST_COMPONENTS = (
    _grant(TALKER, [PUBLISH, SUBSCRIBE], ["test/*"]),
    _grant(LISTENER, [SUBSCRIBE], ["*"]),
    ComponentPolicy(STRANGER),  # declared, granted nothing
)

# For the configuration tests (tests/ipc_servers.py config_server): MODEL stands for a model
# component whose Bundle a deployment replaces, TALKER for a component with limits of its own.
MODEL = "com.example.Model"
CONFIG_COMPONENTS = (*TEST_COMPONENTS, ComponentPolicy(MODEL))
TEST_CONFIGURATIONS = {  # each component's DefaultConfiguration, accessControl aside
    MODEL: {"Bundle": {"Version": "1.0.0", "Path": "models/wine/1"}, "QueueSize": 99},
    TALKER: {"QueueSize": 64, "Limits": {"MaxRows": 1000}},
}


@pytest.fixture(scope="session")
def lite_build() -> LiteBuild:
    """The daemons, built on first use (~1 min) and cached; skips locally, fails in CI when
    something they need is missing."""
    missing = what_is_missing(TARBALL)
    need(missing is None, str(missing))
    return build(TARBALL)


@pytest.fixture(scope="session")
def edgeboost_package(
    named_bundle: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory
) -> Package:
    """The recipes ``edgeboost package`` writes: the SERVER component and its CONSUMER."""
    out = tmp_path_factory.mktemp("ggl-package")
    requests = out / "requests.json"
    requests.write_text(json.dumps([ROW]))
    options = ComponentOptions(name=SERVER, version="1.0.0")
    return package_bundle(named_bundle[0], out, options, consumer_requests=requests)


@pytest.fixture(scope="session")
def greengrass_lite(
    lite_build: LiteBuild, edgeboost_package: Package, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GreengrassLite]:
    """Nucleus lite for the session, declaring edgeboost's components (access control read from
    their recipes) and TEST_COMPONENTS."""
    assert edgeboost_package.consumer_recipe is not None and edgeboost_package.runtime is not None
    recipes = (edgeboost_package.runtime.recipe, edgeboost_package.consumer_recipe)
    components = [load_recipe_policy(recipe) for recipe in recipes] + list(TEST_COMPONENTS)
    root = tmp_path_factory.mktemp("ggl")
    with GreengrassLite(lite_build.daemons, root, components, shim=lite_build.shim) as lite:
        yield lite
    # Checked by test_stopping_leaves_no_process_cgroup_or_mount; here only reported, as a
    # teardown failure would be pinned on whichever test ran last.
    if lite.leftovers():
        warnings.warn(f"nucleus lite left {lite.leftovers()} behind", stacklevel=1)
