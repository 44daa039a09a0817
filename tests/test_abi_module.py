"""runtime/_abi.py is generated from native/edgeboost.h: it must be what the header gives now,
and the device must get its declarations from it without parsing C."""

from __future__ import annotations

import subprocess
import sys

from edgeboost.compile.abi_module import HEADER, MODULE, generate


def test_the_committed_module_is_what_the_header_generates() -> None:
    assert MODULE.read_text() == generate(HEADER.read_text("utf-8")), (
        "native/edgeboost.h changed: run `python -m edgeboost.compile.abi_module` and commit"
    )


def test_loading_a_model_imports_no_c_parser(shipped_bundle: object) -> None:
    probe = (
        "import sys; from edgeboost.runtime import Model; "
        f"m = Model.load({str(shipped_bundle)!r}); m.predict([[0.0] * m.num_feature]); "
        "print(sorted({'cffi', 'pycparser', 'ply'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
