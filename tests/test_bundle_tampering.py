"""Tampered bundles: each is refused with the right error, naming the file, and none can crash,
hang or alter a process; a loaded model keeps predicting whatever happens to its files.

Anything that could crash or hang (SIGBUS on a truncated library, a FIFO, /dev/zero) runs in
a fresh interpreter with a timeout, so that it fails the test instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeboost.runtime import (
    BundleError,
    IntegrityError,
    ManifestError,
    MetadataMismatchError,
    Model,
)
from edgeboost.runtime import native as native_module
from edgeboost.runtime.integrity import verify_bundle
from edgeboost.runtime.targets import TARGETS, host_target

from .conftest import need

ROWS = [[0.5, -1.0, 2.0, 0.25], [1.5, None, -0.5, 3.0]] + [
    [i / 7, -i / 3, float(i % 5), 1.0] for i in range(64)
]


# ---------------------------------------------------------------------------------------------
# Helpers: a private copy of a bundle, and ways to change it and re-seal it consistently.


@pytest.fixture()
def bundle(named_bundle: tuple[Path, object], tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(named_bundle[0], copy)
    return copy


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())  # type: ignore[no-any-return]


def _library_entry(bundle: Path) -> dict[str, Any]:
    return _manifest(bundle)["targets"][host_target()]  # type: ignore[no-any-return]


def _library(bundle: Path) -> Path:
    return bundle / _library_entry(bundle)["file"]


def _write_sums(bundle: Path, lines: list[str]) -> None:
    (bundle / "SHA256SUMS").write_text("".join(f"{line}\n" for line in lines))


def _sums_lines(bundle: Path) -> list[str]:
    return (bundle / "SHA256SUMS").read_text().splitlines()


def _reseal_text(bundle: Path, text: str, *, libraries: dict[str, str] | None = None) -> None:
    """Write ``text`` as the manifest and SHA256SUMS to match it, as a careful tool would:
    the manifest's line, and one line per library (``libraries``: file -> sha256; by
    default the ones of the manifest as it was)."""
    if libraries is None:
        libraries = {t["file"]: t["sha256"] for t in _manifest(bundle)["targets"].values()}
    (bundle / "manifest.json").write_text(text)
    lines = {"manifest.json": _sha256(text.encode()), **libraries}
    _write_sums(bundle, [f"{digest}  {name}" for name, digest in sorted(lines.items())])


def _reseal(bundle: Path, change: Callable[[dict[str, Any]], None], *, follow: bool = True) -> None:
    """Change the manifest and re-seal it; SHA256SUMS lists the libraries of the changed
    manifest (``follow``) or, for a manifest broken beyond that, those of the original."""
    doc = _manifest(bundle)
    change(doc)
    libraries = None
    if follow:
        libraries = {t["file"]: t["sha256"] for t in doc["targets"].values()}
    _reseal_text(bundle, json.dumps(doc), libraries=libraries)


def _load_error(bundle: Path) -> BundleError:
    """What Model.load raises; anything but a BundleError (IsADirectoryError, RecursionError,
    ...) escapes and fails the test."""
    with pytest.raises(BundleError) as caught:
        Model.load(bundle)
    return caught.value


def _expect(error: Exception, kind: type[Exception], *fragments: str) -> None:
    assert type(error) is kind, f"expected {kind.__name__}, got {type(error).__name__}: {error}"
    for fragment in fragments:
        assert fragment in str(error), f"{fragment!r} missing from: {error}"


# A fresh interpreter that loads a bundle and reports what happened, and how long it took.
_LOAD_AND_REPORT = """
import sys, time
from edgeboost.runtime import Model
start = time.monotonic()
try:
    Model.load(sys.argv[1])
except Exception as exc:
    outcome, message = type(exc).__name__, str(exc)
else:
    outcome, message = "loaded", ""
print(outcome)
print(time.monotonic() - start)
print(message)
"""


def _isolated(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter: a crash is a failure (with the signal's name), a
    hang is a failure after ``timeout`` seconds, and neither takes pytest down."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"no answer within {timeout} s: it hangs")
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        pytest.fail(f"killed by {name}; stdout: {done.stdout!r}; stderr: {done.stderr[-2000:]}")
    assert done.returncode == 0, done.stderr
    return done


def _load_isolated(bundle: Path) -> tuple[str, float, str]:
    """(exception name or "loaded", seconds Model.load took, message) from a fresh process."""
    outcome, seconds, message = _isolated(_LOAD_AND_REPORT, str(bundle)).stdout.split("\n", 2)
    return outcome, float(seconds), message.strip()


# ---------------------------------------------------------------------------------------------
# 1. What is loaded is exactly what was verified.


def _loadable_segments(library: Path) -> list[tuple[int, int]]:
    """(offset, size in the file) of each PT_LOAD segment, as readelf reads them."""
    need(shutil.which("readelf") is not None, "readelf (binutils)")
    listing = subprocess.run(
        ["readelf", "--program-headers", "--wide", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = [line.split() for line in listing.splitlines() if line.strip().startswith("LOAD")]
    return [(int(f[1], 16), int(f[4], 16)) for f in fields]


def _truncate_and_reseal(bundle: Path, size: int) -> None:
    library = _library(bundle)
    data = library.read_bytes()[:size]
    library.write_bytes(data)

    def adopt(doc: dict[str, Any]) -> None:
        doc["targets"][host_target()].update(sha256=_sha256(data), size=len(data))

    _reseal(bundle, adopt)


@pytest.mark.parametrize("where", ["ELF header", "program headers", 0, 1, 2, -1])
def test_a_truncated_library_with_resealed_hashes_is_a_clean_error(
    bundle: Path, where: str | int
) -> None:
    """Cut in the ELF header, in the program headers, or in the middle of a loadable segment
    (the first three and the last), with hashes and size resealed to match the short file:
    dlopen would map it anyway, and die of SIGBUS on the first read past the end."""
    library = _library(bundle)
    if isinstance(where, str):
        size = {"ELF header": 40, "program headers": 64 + 20}[where]
    else:
        offset, length = _loadable_segments(library)[where]
        size = offset + length // 2
    _truncate_and_reseal(bundle, size)
    outcome, _, message = _load_isolated(bundle)
    assert outcome == "MetadataMismatchError", message
    assert message.startswith(f"{library}: truncated: ")
    assert message.endswith(f"but the file has {size:,} bytes")


_PREDICT_WHILE_REWRITTEN = """
import os, sys, threading
from edgeboost.runtime import IntegrityError, Model

bundle, library, rows = sys.argv[1], sys.argv[2], eval(sys.argv[3])
model = Model.load(bundle)
expected = [v.hex() for v in model.predict(rows)]
inode, size = os.stat(library).st_ino, os.stat(library).st_size
stop, changed = threading.Event(), []

def predict_all_along():  # a server's worker, predicting while the file is rewritten
    while not stop.is_set():
        if [v.hex() for v in model.predict(rows)] != expected:
            changed.append(1)

worker = threading.Thread(target=predict_all_along)
worker.start()
garbage = bytes((i * 131 + 7) % 251 for i in range(size))
for step, new_size, content in [
    ("half", size // 2, b""), ("garbage", 0, garbage), ("empty", 0, b"")
]:
    with open(library, "r+b") as f:  # in place: same inode, as a careless copy would do
        f.truncate(new_size)
        f.seek(0)
        f.write(content)
    assert os.stat(library).st_ino == inode
    assert [v.hex() for v in model.predict(rows)] == expected, step
    print(step, "ok")
stop.set()
worker.join()
assert not changed
try:
    Model.load(bundle)
except IntegrityError as exc:
    print("reload:", exc)
"""


def test_a_library_rewritten_in_place_under_a_loaded_model_changes_nothing(bundle: Path) -> None:
    library = _library(bundle)
    done = _isolated(_PREDICT_WHILE_REWRITTEN, str(bundle), str(library), repr(ROWS))
    lines = done.stdout.splitlines()
    assert lines[:3] == ["half ok", "garbage ok", "empty ok"]
    assert lines[3].startswith(f"reload: {library}: sha256 is {_sha256(b'')}")


def _mappings() -> list[str]:
    """Path names of this process's mappings."""
    lines = Path("/proc/self/maps").read_text().splitlines()
    return [line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6]


def _memfds(label: str) -> list[int]:
    """This process's open memfds whose name holds ``label``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listing itself, closed by now
            continue
        if target.startswith("/memfd:edgeboost:") and label in target:
            found.append(int(name))
    return found


def test_the_library_is_mapped_from_a_sealed_private_copy(bundle: Path) -> None:
    library = _library(bundle)
    model = Model.load(bundle)
    mappings = _mappings()
    assert str(library) not in mappings, "the bundle's own file is mapped"
    assert f"/memfd:edgeboost:{library} (deleted)" in mappings
    [fd] = _memfds(str(library))
    writable = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)
    try:
        with pytest.raises(PermissionError):
            os.write(writable, b"\0")
        with pytest.raises(PermissionError):
            os.ftruncate(writable, 0)
    finally:
        os.close(writable)
    assert model.predict(ROWS[:1])


def test_the_private_copy_is_released_with_the_model(bundle: Path) -> None:
    library = str(_library(bundle))
    for _ in range(5):
        model = Model.load(bundle)
        assert len(_memfds(library)) == 1
        del model
        gc.collect()
        assert _memfds(library) == []
        assert not any(library in mapping for mapping in _mappings())


def test_two_models_loaded_side_by_side_keep_their_own_libraries(
    bundle: Path, shipped_bundle: Path, named_bundle: tuple[Path, object]
) -> None:
    """glibc finds an already loaded library by the name it was opened with; were the memfd
    closed after dlopen, the second model would get fd N again, and the first library."""
    first = Model.load(bundle)
    second = Model.load(shipped_bundle)  # would raise MetadataMismatchError given the first
    third = Model.load(bundle)
    assert first.sha256 != second.sha256
    assert first.predict(ROWS) == third.predict(ROWS) == Model.load(named_bundle[0]).predict(ROWS)
    assert len(second.predict([[7.0] * 13])) == 1


def test_a_kernel_without_mfd_exec_gets_a_memfd_all_the_same(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before Linux 6.3, memfd_create refuses the unknown MFD_EXEC flag with EINVAL."""
    real, flags_seen = os.memfd_create, []

    def old_kernel(name: str, flags: int = os.MFD_CLOEXEC) -> int:
        flags_seen.append(flags)
        if flags & 0x0010:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(name, flags)

    monkeypatch.setattr(os, "memfd_create", old_kernel)
    model = Model.load(bundle)
    assert flags_seen == [flags_seen[0], flags_seen[0] & ~0x0010]
    assert len(_memfds(str(_library(bundle)))) == 1
    assert model.predict(ROWS[:1])


@pytest.mark.parametrize("how", ["memfd_create fails (ENOSYS)", "memfd unusable"])
def test_without_memfd_a_removed_temporary_copy_is_loaded(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    import tempfile

    expected = Model.load(bundle).predict(ROWS)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    if how == "memfd unusable":
        monkeypatch.setattr(native_module, "_sealed_memfd", lambda image, label: None)
    else:

        def no_memfd(name: str, flags: int = 0) -> int:
            raise OSError(errno.ENOSYS, "Function not implemented")

        monkeypatch.setattr(os, "memfd_create", no_memfd)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    model = Model.load(bundle)
    assert list(scratch.iterdir()) == [], "the temporary copy was left behind"
    copies = [m for m in _mappings() if m.startswith(f"{scratch}/") and m.endswith("(deleted)")]
    assert len(copies) >= 1, _mappings()
    assert str(_library(bundle)) not in _mappings()
    assert model.predict(ROWS) == expected


# ---------------------------------------------------------------------------------------------
# Files that are not regular files: refused at once, never opened (devices) or waited on.


def _replace_with(path: Path, kind: str) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    if kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "FIFO", "directory"])
def test_a_library_that_is_not_a_regular_file_is_refused_at_once(bundle: Path, kind: str) -> None:
    library = _library(bundle)
    _replace_with(library, kind)
    outcome, seconds, message = _load_isolated(bundle)
    assert outcome == "ManifestError", message
    assert seconds < 2
    expected = {"symlink to /dev/zero": "a character device", "FIFO": "a FIFO"}.get(
        kind, "a directory"
    )
    assert message.startswith(f"{library}: is {expected}, expected a regular file")
    assert f"targets.{host_target()}.file in manifest.json" in message


@pytest.mark.parametrize("name", ["manifest.json", "SHA256SUMS"])
@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "FIFO", "directory"])
def test_a_manifest_or_checksums_that_is_not_a_regular_file_is_refused_at_once(
    bundle: Path, name: str, kind: str
) -> None:
    _replace_with(bundle / name, kind)
    outcome, seconds, message = _load_isolated(bundle)
    assert outcome == "ManifestError", message
    assert seconds < 2
    assert message.startswith(f"{bundle / name}: is a ")
    assert "expected a regular file" in message


def test_a_library_beyond_the_size_limit_is_not_read(bundle: Path) -> None:
    library = _library(bundle)
    os.truncate(library, (256 << 20) + 1)  # sparse: no disk space, but 256 MiB + 1 byte long
    _expect(
        _load_error(bundle),
        ManifestError,
        f"{library}: is 268,435,457 bytes, more than the 268,435,456 allowed",
        f"targets.{host_target()}.file",
    )


def test_a_manifest_beyond_the_size_limit_is_not_read(bundle: Path) -> None:
    text = (bundle / "manifest.json").read_text()
    _reseal_text(bundle, text[:-2] + " " * (1 << 20) + text[-2:])
    _expect(
        _load_error(bundle),
        ManifestError,
        f"{bundle / 'manifest.json'}: is 1,0",
        "bytes, more than the 1,048,576 allowed (the bundle's manifest)",
    )


def test_a_missing_library_is_named(bundle: Path) -> None:
    _library(bundle).unlink()
    _expect(
        _load_error(bundle),
        IntegrityError,
        f"{_library(bundle)}: missing (targets.{host_target()}.file in manifest.json)",
    )


def test_a_manifest_whose_size_alone_is_wrong_is_refused(bundle: Path) -> None:
    size = _library(bundle).stat().st_size
    _reseal(bundle, _set_target("size", size + 1))
    _expect(
        _load_error(bundle),
        ManifestError,
        f"{bundle / 'manifest.json'}: targets.{host_target()}.size: expected {size:,} (the size "
        f"of {_library_entry(bundle)['file']}, whose sha256 matches), found {size + 1:,}",
    )


# ---------------------------------------------------------------------------------------------
# 2. SHA256SUMS: every line checked, every library sealed.


def _sums_case(edit: Callable[[list[str], str], list[str]]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        file = _library_entry(bundle)["file"]
        _write_sums(bundle, edit(_sums_lines(bundle), file))

    return apply


def _without(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if not line.endswith(f"  {name}")]


OTHER_DIGEST = _sha256(b"other")


@pytest.mark.parametrize(
    ("edit", "kind", "fragments"),
    [
        pytest.param(
            lambda lines, lib: _without(lines, lib),
            ManifestError,
            ["{library}: not listed in SHA256SUMS (targets.{target}.file in manifest.json)"],
            id="library line deleted",
        ),
        pytest.param(
            lambda lines, lib: [*_without(lines, lib), f"{OTHER_DIGEST}  {lib}"],
            IntegrityError,
            ["{library}: SHA256SUMS records sha256 " + OTHER_DIGEST, "manifest.json records {sha}"],
            id="library line changed",
        ),
        pytest.param(
            lambda lines, lib: [*lines, f"{OTHER_DIGEST}  lib/extra/libmodel.so"],
            ManifestError,
            ["{sums}: lists lib/extra/libmodel.so, which is neither manifest.json nor a library"],
            id="line for a file that does not exist",
        ),
        pytest.param(
            lambda lines, lib: [*lines, f"{OTHER_DIGEST}  {lib}"],
            ManifestError,
            ["{sums}:3: {lib} is listed again, with sha256 " + OTHER_DIGEST, "(before: {sha})"],
            id="a name with two digests",
        ),
        pytest.param(
            lambda lines, lib: [*lines, lines[0]],
            ManifestError,
            ["{sums}:3:", "is listed again"],
            id="a line twice",
        ),
        pytest.param(
            lambda lines, lib: [*lines, f"{OTHER_DIGEST[:63]}  README"],
            ManifestError,
            ["{sums}:3: expected '<sha256>  <file>', found"],
            id="short digest",
        ),
        pytest.param(
            lambda lines, lib: [*lines, "z" * 64 + "  README"],
            ManifestError,
            ["{sums}:3: expected '<sha256>  <file>'"],
            id="digest not hex",
        ),
        pytest.param(
            lambda lines, lib: [lines[0].replace("  ", " ", 1), *lines[1:]],
            ManifestError,
            ["{sums}:1: expected '<sha256>  <file>'"],
            id="one space",
        ),
        pytest.param(
            lambda lines, lib: [lines[0], "", *lines[1:]],
            ManifestError,
            ["{sums}:2: expected '<sha256>  <file>', found ''"],
            id="empty line",
        ),
        pytest.param(
            lambda lines, lib: [line + "\r" for line in lines],
            ManifestError,
            ["{sums}:1: file name", "contains a control character"],
            id="CRLF",
        ),
        pytest.param(
            lambda lines, lib: [*lines, f"{OTHER_DIGEST}  /etc/passwd"],
            ManifestError,
            ["{sums}:3: file name '/etc/passwd' is absolute"],
            id="absolute name",
        ),
        pytest.param(
            lambda lines, lib: [*lines, f"{OTHER_DIGEST}  lib/../../x"],
            ManifestError,
            ["{sums}:3: file name 'lib/../../x' has an empty, '.' or '..' component"],
            id="name with ..",
        ),
        pytest.param(
            lambda lines, lib: _without(lines, "manifest.json"),
            ManifestError,
            ["{sums}: does not list manifest.json"],
            id="manifest line deleted",
        ),
    ],
)
def test_every_line_of_sha256sums_is_checked(
    bundle: Path,
    edit: Callable[[list[str], str], list[str]],
    kind: type[Exception],
    fragments: list[str],
) -> None:
    entry = _library_entry(bundle)
    values = {
        "library": str(bundle / entry["file"]),
        "lib": entry["file"],
        "sha": entry["sha256"],
        "sums": str(bundle / "SHA256SUMS"),
        "target": host_target(),
    }
    _sums_case(edit)(bundle)
    _expect(_load_error(bundle), kind, *(f.format(**values) for f in fragments))


def test_sha256sums_in_binary_mode_is_read(bundle: Path) -> None:
    _write_sums(bundle, [line.replace("  ", " *", 1) for line in _sums_lines(bundle)])
    assert Model.load(bundle).predict(ROWS[:1])


OTHER = next(t for t in TARGETS if t != host_target())
OTHER_FILE = f"lib/{OTHER}/libmodel.so"
OTHER_BYTES = b"stands in for another target's library\n"


def _with_other_target(bundle: Path, listed: str | None, present: bytes | None) -> None:
    """Give the manifest a second target, as a per-platform zip's manifest has: its library
    ``present`` or not, and listed in SHA256SUMS with the digest ``listed`` or not at all."""

    def add(doc: dict[str, Any]) -> None:
        mine = doc["targets"][host_target()]
        doc["targets"][OTHER] = {
            **mine,
            "file": OTHER_FILE,
            "sha256": _sha256(OTHER_BYTES),
            "size": len(OTHER_BYTES),
        }

    _reseal(bundle, add)
    lines = _without(_sums_lines(bundle), OTHER_FILE)
    if listed is not None:
        lines.append(f"{listed}  {OTHER_FILE}")
    _write_sums(bundle, lines)
    if present is not None:
        (bundle / OTHER_FILE).parent.mkdir(parents=True)
        (bundle / OTHER_FILE).write_bytes(present)


@pytest.mark.parametrize("listed", [False, True])
def test_another_targets_library_may_be_absent_as_in_a_per_platform_zip(
    bundle: Path, listed: bool
) -> None:
    _with_other_target(bundle, _sha256(OTHER_BYTES) if listed else None, None)
    assert Model.load(bundle).predict(ROWS[:1])


def test_another_targets_line_must_agree_with_the_manifest(bundle: Path) -> None:
    _with_other_target(bundle, OTHER_DIGEST, None)
    _expect(
        _load_error(bundle),
        IntegrityError,
        f"{bundle / OTHER_FILE}: SHA256SUMS records sha256 {OTHER_DIGEST}, but manifest.json "
        f"records {_sha256(OTHER_BYTES)} (targets.{OTHER}.sha256)",
    )


def test_another_targets_library_present_must_be_listed(bundle: Path) -> None:
    _with_other_target(bundle, None, OTHER_BYTES)
    _expect(_load_error(bundle), ManifestError, f"{bundle / OTHER_FILE}: not listed in SHA256SUMS")


def test_another_targets_library_is_hashed_by_verify_bundle_not_at_load(bundle: Path) -> None:
    """Model.load hashes only what it loads (start-up time on the device); verify_bundle,
    which packaging runs, hashes everything."""
    _with_other_target(bundle, _sha256(OTHER_BYTES), b"tampered\n")
    assert Model.load(bundle).predict(ROWS[:1])
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle)
    _expect(
        caught.value,
        IntegrityError,
        f"{bundle / OTHER_FILE}: sha256 is {_sha256(b'tampered' + bytes([10]))}",
        f"but manifest.json records {_sha256(OTHER_BYTES)}",
    )
    (bundle / OTHER_FILE).unlink()
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle)
    _expect(caught.value, IntegrityError, f"{bundle / OTHER_FILE}: missing")


# ---------------------------------------------------------------------------------------------
# 3. Malformed manifests: a ManifestError naming the file and the key, never a raw error.


def _set_target(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["targets"][host_target()].update({key: value})


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (_set_target("file", ""), ["targets.{target}.file: expected a relative path", "is empty"]),
        (_set_target("file", "/etc/passwd"), ["targets.{target}.file", "is absolute"]),
        (_set_target("file", "../bundle/x.so"), ["targets.{target}.file", "'..' component"]),
        (_set_target("file", "lib//x.so"), ["targets.{target}.file", "an empty, '.'"]),
        (_set_target("file", "lib/\0x.so"), ["targets.{target}.file", "control character"]),
        (_set_target("sha256", "A" * 64), ["targets.{target}.sha256: expected 64 lowercase hex"]),
        (_set_target("size", -1), ["targets.{target}.size: expected an integer from 1 to"]),
        (_set_target("size", 2**40), ["targets.{target}.size: expected an integer from 1 to"]),
        (_set_target("build_seconds", 10**400), ["targets.{target}.build_seconds: expected a fin"]),
        (_set_target("flags", [1]), ["targets.{target}.flags[0]: expected str, found 1"]),
        (_set_target("parity", [1]), ["targets.{target}.parity: expected an object"]),
        (lambda doc: doc.update(targets=[]), ["targets: expected an object, found list"]),
        (
            lambda doc: doc["targets"].update({host_target(): "lib/x.so"}),
            ["targets.{target}: expected an object, found str"],
        ),
        (lambda doc: doc.update(num_feature=10**400), ["num_feature: expected an integer from"]),
        (lambda doc: doc.update(num_feature=2**31), ["num_feature: expected an integer from 1 to"]),
        (lambda doc: doc.update(base_score=[10**400]), ["base_score[0]: expected a finite number"]),
        (lambda doc: doc.update(num_class=[2**63]), ["num_class[0]: expected an integer from 0"]),
        (lambda doc: doc["model"].update(sha256="x"), ["model.sha256: expected 64 lowercase hex"]),
        (lambda doc: doc.update(tools={"gcc": 12}), ["tools: every version must be a string"]),
        (lambda doc: doc.update(abi_version=2), ["abi_version: expected 1", "found 2"]),
        (lambda doc: doc.update(abi_version=0), ["abi_version: expected an integer from 1"]),
    ],
    ids=[
        "file empty",
        "file absolute",
        "file with ..",
        "file with //",
        "file with NUL",
        "sha256 in capitals",
        "size negative",
        "size 1 TiB",
        "build_seconds 10**400",
        "flags not strings",
        "parity a list",
        "targets a list",
        "a target a string",
        "num_feature 10**400",
        "num_feature 2**31",
        "base_score 10**400",
        "num_class 2**63",
        "model sha256 not hex",
        "tools not strings",
        "abi_version 2",
        "abi_version 0",
    ],
)
def test_a_malformed_manifest_names_the_file_and_the_key(
    bundle: Path, change: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    _reseal(bundle, change, follow=False)
    values = {"target": host_target()}
    _expect(
        _load_error(bundle),
        ManifestError,
        f"{bundle / 'manifest.json'}: ",
        *(f.format(**values) for f in fragments),
    )


def test_a_manifest_file_that_names_a_directory_is_refused(bundle: Path) -> None:
    _reseal(bundle, _set_target("file", "lib"))
    _expect(
        _load_error(bundle),
        ManifestError,
        f"{bundle / 'lib'}: is a directory, expected a regular file "
        f"(targets.{host_target()}.file in manifest.json)",
    )


def _raw(replace: str, by: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert replace in text
        return text.replace(replace, by, 1)

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_raw('"num_tree": ', '"num_tree": NaN, "x": '), "NaN is not a number JSON allows"),
        (_raw('"num_tree": ', '"num_tree": -Infinity, "x": '), "-Infinity is not a number"),
        (_raw('"build_seconds": ', '"build_seconds": 1e999, "x": '), "1e999 is beyond the range"),
        (_raw('"num_tree": ', '"num_feature": 5, "num_tree": '), "key 'num_feature' appears twice"),
        (_raw('"num_tree": ', '"num_tree": ' + "9" * 5000 + ', "x": '), "not valid JSON"),
        (lambda text: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (_raw('"parity": ', '"parity": ' + "[" * 100_000 + "]" * 100_000 + ', "x": '), "nested"),
        (_raw('"name": "', '"name": "\udcff'), "not valid JSON"),  # a byte 0xff
        (lambda text: "[1, 2]", "top level must be an object"),
        (lambda text: text[: len(text) // 2], "not valid JSON"),
    ],
    ids=[
        "NaN",
        "-Infinity",
        "1e999",
        "a key twice",
        "5000 digits",
        "nested 100000 deep",
        "nested in parity",
        "not UTF-8",
        "top level a list",
        "cut in half",
    ],
)
def test_a_manifest_that_is_not_strict_json_is_a_manifest_error(
    bundle: Path, edit: Callable[[str], str], fragment: str
) -> None:
    text = edit(json.dumps(_manifest(bundle)))
    raw = text.encode("utf-8", "surrogateescape")
    (bundle / "manifest.json").write_bytes(raw)
    lines = [line for line in _sums_lines(bundle) if not line.endswith("  manifest.json")]
    _write_sums(bundle, [*lines, f"{_sha256(raw)}  manifest.json"])
    _expect(_load_error(bundle), ManifestError, f"{bundle / 'manifest.json'}: ", fragment)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document where a value can be swapped for another."""
    if isinstance(node, dict):
        children: Any = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return []
    found = []
    for key, child in children:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def test_any_value_swapped_in_the_manifest_is_a_bundle_error_or_loads(
    named_bundle: tuple[Path, object], tmp_path: Path
) -> None:
    """Whatever value replaces whatever part of a resealed manifest, Model.load loads or
    raises a BundleError: never a TypeError, KeyError, OverflowError or RecursionError."""
    bundle = tmp_path / "bundle"
    shutil.copytree(named_bundle[0], bundle)
    original = _manifest(bundle)
    libraries = {t["file"]: t["sha256"] for t in original["targets"].values()}
    paths = _paths(original)

    @given(st.sampled_from(paths), JSON_VALUES)
    @settings(max_examples=300, deadline=None, derandomize=True)
    def swap(path: tuple[Any, ...], value: Any) -> None:
        doc = json.loads(json.dumps(original))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
        _reseal_text(bundle, json.dumps(doc), libraries=libraries)
        with contextlib.suppress(BundleError):  # anything else fails the test
            Model.load(bundle)

    swap()


# ---------------------------------------------------------------------------------------------
# 4. ABI versions: the manifest's, the library's and the runtime's must be one.

_STUB = """
#include <stdint.h>
const char *edgeboost_status_message(int32_t s) { (void)s; return "stub"; }
int32_t edgeboost_abi_version(void) { return ABI; }
int32_t edgeboost_num_feature(void) { return 4; }
int32_t edgeboost_num_output(void) { return 1; }
const char *edgeboost_threshold_type(void) { return "float32"; }
const char *edgeboost_backend(void) { return "kernel"; }
const char *edgeboost_model_sha256(void) { return "0"; }
int32_t edgeboost_predict(const float *r, int64_t n, int32_t c, int32_t m, float *o) {
  (void)r; (void)n; (void)c; (void)m; (void)o; return 0;
}
"""


def _stub_library(tmp_path: Path, abi: int) -> bytes:
    need(shutil.which("cc") is not None, "a C compiler (cc)")
    source = tmp_path / "stub.c"
    source.write_text(_STUB)
    out = tmp_path / "stub.so"
    subprocess.run(
        ["cc", "-shared", "-fPIC", f"-DABI={abi}", "-o", str(out), str(source)], check=True
    )
    return out.read_bytes()


def test_a_library_of_another_abi_is_refused(bundle: Path, tmp_path: Path) -> None:
    image = _stub_library(tmp_path, abi=2)
    _library(bundle).write_bytes(image)
    _reseal(
        bundle,
        lambda doc: doc["targets"][host_target()].update(sha256=_sha256(image), size=len(image)),
    )
    _expect(
        _load_error(bundle),
        MetadataMismatchError,
        f"{_library(bundle)}: library speaks ABI version 2, this runtime speaks 1",
    )


def test_a_manifest_of_another_abi_is_refused_before_the_library_is_read(bundle: Path) -> None:
    _reseal(bundle, lambda doc: doc.update(abi_version=2))
    _library(bundle).write_bytes(b"never read: the ABI check comes first")
    _expect(
        _load_error(bundle),
        ManifestError,
        f"{bundle / 'manifest.json'}: abi_version: expected 1 (the ABI this runtime speaks), "
        "found 2",
    )
