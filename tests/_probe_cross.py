"""Runs inside the emulated target Python (Debian bookworm python3 + python3-cffi), not pytest.

Loads a bundle with the real edgeboost.runtime, predicts, and prints one JSON line describing
where everything was imported from. Stdlib only, like a device without numpy.

    python3 _probe_cross.py BUNDLE --target TRIPLE [--samples FILE.json]
                            [--rows ROWS.f32 --out OUT.f32]

ROWS.f32 is raw little-endian float32, row-major; OUT.f32 receives the margins, then the
transformed values, as raw float32.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from array import array

import cffi

import edgeboost
from edgeboost.runtime import Model


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--target", required=True)
    parser.add_argument("--samples")
    parser.add_argument("--rows")
    parser.add_argument("--out")
    return parser.parse_args()


def _flat(values: list) -> array:
    """Predictions as float32 (they are float32 values already: no rounding happens)."""
    if values and isinstance(values[0], list):
        values = [v for row in values for v in row]
    return array("f", values)


def main() -> int:
    args = _parse()
    if sys.byteorder != "little":
        raise SystemExit("raw float32 files are little-endian; this host is not")
    model = Model.load(args.bundle, target=args.target)
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cffi": cffi.__file__,
        "edgeboost": edgeboost.__file__,
        "target": model.target,
    }
    if args.samples:
        with open(args.samples, encoding="utf-8") as file:
            report["samples"] = model.predict(json.load(file))
    if args.rows:
        rows = array("f")
        with open(args.rows, "rb") as file:
            rows.frombytes(file.read())
        margin = _flat(model.predict(rows, margin=True))
        value = _flat(model.predict(rows))
        with open(args.out, "wb") as file:
            file.write(margin.tobytes() + value.tobytes())
        report["rows"] = len(rows) // model.num_feature
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
