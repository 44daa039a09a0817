"""The rows file reader that the parity driver and the C benchmark share (native/rows_file.h):
every malformed file is refused with what is wrong, never read past its end."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from edgeboost.compile.emulation import build_driver
from edgeboost.runtime.targets import host_target


def rows_file(
    path: Path,
    *,
    magic: bytes = b"EBPR",
    version: int = 1,
    n_rows: int = 2,
    n_cols: int = 4,
    values: int | None = None,
    extra: bytes = b"",
) -> Path:
    count = n_rows * n_cols if values is None else values
    header = magic + struct.pack("<IqiI", version, n_rows, n_cols, 0)
    path.write_bytes(header + struct.pack(f"<{count}f", *[0.5] * count) + extra)
    return path


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"magic": b"EBPX"}, "not a rows file (bad magic)"),
        ({"version": 2}, "unsupported format version"),
        ({"values": 7}, "shorter than its header says"),
        ({"extra": b"\0"}, "trailing bytes after the rows"),
        ({"n_rows": 2**62, "values": 0}, "shape overflows"),
        ({"n_cols": 0, "values": 0}, "bad shape"),
    ],
)
def test_a_malformed_rows_file_is_refused_with_what_is_wrong(
    shape: dict[str, object], message: str, named_bundle: tuple[Path, object], tmp_path: Path
) -> None:
    driver = build_driver(host_target(), tmp_path / "cache")
    library = next(named_bundle[0].rglob("libmodel.so"))
    rows = rows_file(tmp_path / "rows.bin", **shape)  # type: ignore[arg-type]
    result = subprocess.run(
        [str(driver), str(library), str(rows), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert f"{rows}: {message}" in result.stderr, result.stderr


def test_a_well_formed_file_is_read(named_bundle: tuple[Path, object], tmp_path: Path) -> None:
    driver = build_driver(host_target(), tmp_path / "cache")
    library = next(named_bundle[0].rglob("libmodel.so"))
    rows = rows_file(tmp_path / "rows.bin")
    result = subprocess.run(
        [str(driver), str(library), str(rows), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.bin").read_bytes()[:4] == b"EBPO"
