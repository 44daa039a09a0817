"""sha256 checks of bundle files, in the format ``sha256sum -c`` reads.

What is checked is always the bytes that are then used: a file is read once (``read_verified``)
and its hash compared, so nothing can change between the check and the use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# hashlib would load OpenSSL's libcrypto (+3.7 MiB RSS on a device) for one hash of a few
# hundred KB at start-up; CPython's own SHA-256 is as exact and fast enough.
try:
    from _sha2 import sha256  # Python >= 3.12
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from _sha256 import sha256  # Python <= 3.11
    except ImportError:  # a build without them
        from hashlib import sha256

from .exceptions import IntegrityError, ManifestError
from .files import MAX_CHECKSUMS_BYTES, MAX_LIBRARY_BYTES, path_problem, read_regular
from .manifest import MANIFEST_NAME, Manifest, TargetLibrary, read_manifest_bytes

__all__ = [
    "CHECKSUMS_NAME",
    "check_checksums_cover",
    "check_digest",
    "format_checksums",
    "read_checksums",
    "read_sealed_manifest",
    "read_verified",
    "sha256_file",
    "verify_bundle",
]

CHECKSUMS_NAME = "SHA256SUMS"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file the caller trusts to be a regular file (the build host's own output)."""
    digest = sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return str(digest.hexdigest())


def format_checksums(digests: Mapping[str, str]) -> str:
    """Lines of ``<sha256>  <relative path>``, sorted by path."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))


def read_checksums(bundle_dir: str | os.PathLike[str]) -> dict[str, str]:
    """SHA256SUMS as {name: lowercase sha256}; every line must be well formed, every name a
    plain relative path inside the bundle, and no name may appear twice."""
    path = os.path.join(bundle_dir, CHECKSUMS_NAME)
    try:
        raw = read_regular(path, limit=MAX_CHECKSUMS_BYTES, what="the bundle's checksums")
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing; every bundle seals its manifest with it") from None
    except OSError as exc:
        raise ManifestError(f"{path}: unreadable: {exc}") from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: unreadable: {exc}") from exc
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    digests: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        _add_line(path, number, line, digests)
    return digests


def _add_line(path: str, number: int, line: str, digests: dict[str, str]) -> None:
    where = f"{path}:{number}"
    # "<sha256>  <name>" (text mode) or "<sha256> *<name>" (binary mode), as sha256sum
    # writes; no regular expression: compiling one costs start-up time on the device.
    digest, separator, name = line[:64], line[64:66], line[66:]
    if len(digest) != 64 or not _HEX_DIGITS.issuperset(digest) or separator not in ("  ", " *"):
        raise ManifestError(f"{where}: expected '<sha256>  <file>', found {line[:200]!r}")
    digest = digest.lower()
    problem = path_problem(name)
    if problem is not None:
        raise ManifestError(f"{where}: file name {name!r} {problem}")
    if name in digests:
        # Two digests for one file: which one sha256sum -c trusts depends on the tool.
        raise ManifestError(
            f"{where}: {name} is listed again, with sha256 {digest} (before: {digests[name]})"
        )
    digests[name] = digest


def check_digest(
    path: str | os.PathLike[str],
    data: bytes,
    expected: str,
    *,
    recorded_in: str,
    expected_size: int | None = None,
) -> None:
    """Raise IntegrityError naming ``path`` and both hashes (and both sizes, when they
    differ) unless ``data`` hashes to ``expected``."""
    actual = sha256(data).hexdigest()
    if actual != expected:
        sizes = ""
        if expected_size is not None and expected_size != len(data):
            sizes = f" ({len(data):,} bytes; {recorded_in} records {expected_size:,})"
        raise IntegrityError(
            f"{path}: sha256 is {actual}, but {recorded_in} records {expected}{sizes}; "
            "the file was changed after the bundle was built"
        )


def read_verified(
    bundle_dir: str | os.PathLike[str],
    relative: str,
    expected: str,
    *,
    recorded_in: str,
    limit: int,
    key: str | None = None,
    expected_size: int | None = None,
) -> bytes:
    """The bytes of ``relative`` (a regular file of at most ``limit`` bytes), once their
    sha256 is checked to be ``expected``: use these bytes, never the file again.

    ``key`` is where ``recorded_in`` names the file ("targets.<triple>.file"), for messages.
    """
    path = os.path.join(bundle_dir, relative)
    what = f"{key} in {recorded_in}" if key else f"listed in {recorded_in}"
    try:
        data = read_regular(path, limit=limit, what=what)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing ({what})") from None
    except OSError as exc:
        raise IntegrityError(f"{path}: unreadable ({what}): {exc}") from exc
    check_digest(path, data, expected, recorded_in=recorded_in, expected_size=expected_size)
    return data


def check_checksums_cover(
    bundle_dir: str | os.PathLike[str],
    sums: Mapping[str, str],
    targets: Mapping[str, TargetLibrary],
    loaded: str | None,
) -> None:
    """SHA256SUMS and the manifest must tell the same story about the libraries.

    Every line names manifest.json or a library of the manifest, with the manifest's sha256;
    the library of ``loaded`` is listed; another target's library may be unlisted only when
    it is absent, as in a per-platform zip, which carries the full manifest but one library.
    Other targets' libraries are not hashed here: they are never loaded by this process, and
    hashing them would cost start-up time on the device (``verify_bundle`` does it).
    """
    named = {library.file for library in targets.values()}
    for name in sums:
        if name != MANIFEST_NAME and name not in named:
            raise ManifestError(
                f"{os.path.join(bundle_dir, CHECKSUMS_NAME)}: lists {name}, which is neither "
                f"{MANIFEST_NAME} nor a library named in {MANIFEST_NAME}"
            )
    for triple, library in targets.items():
        _check_line(bundle_dir, sums, triple, library, required=triple == loaded)


def _check_line(
    bundle: str | os.PathLike[str],
    sums: Mapping[str, str],
    triple: str,
    library: TargetLibrary,
    *,
    required: bool,
) -> None:
    path = os.path.join(bundle, library.file)
    listed = sums.get(library.file)
    if listed is None:
        # lexists: a dangling symlink is there too, and must be listed like any file.
        if required or os.path.lexists(path):
            raise ManifestError(
                f"{path}: not listed in {CHECKSUMS_NAME} (targets.{triple}.file in "
                f"{MANIFEST_NAME}); the bundle must seal every library it carries"
            )
        return
    if listed != library.sha256:
        raise IntegrityError(
            f"{path}: {CHECKSUMS_NAME} records sha256 {listed}, but {MANIFEST_NAME} records "
            f"{library.sha256} (targets.{triple}.sha256)"
        )


def read_sealed_manifest(bundle_dir: str | os.PathLike[str]) -> tuple[Manifest, dict[str, str]]:
    """The manifest, parsed from the very bytes whose sha256 SHA256SUMS records, and
    SHA256SUMS itself."""
    bundle = os.fspath(bundle_dir)
    raw = read_manifest_bytes(bundle)  # first: "no manifest" is the error for a non-bundle
    sums = read_checksums(bundle)
    if MANIFEST_NAME not in sums:
        raise ManifestError(
            f"{os.path.join(bundle, CHECKSUMS_NAME)}: does not list {MANIFEST_NAME}"
        )
    path = os.path.join(bundle, MANIFEST_NAME)
    check_digest(path, raw, sums[MANIFEST_NAME], recorded_in=CHECKSUMS_NAME)
    return Manifest.from_bytes(raw, source=path), sums


def verify_bundle(bundle_dir: str | os.PathLike[str]) -> Manifest:
    """Everything a full bundle seals, hashed: the manifest, every library the manifest
    names (all must be present), and the agreement of SHA256SUMS with the manifest. For
    packaging and audits; ``Model.load`` hashes only what it loads."""
    bundle = os.fspath(bundle_dir)
    manifest, sums = read_sealed_manifest(bundle)
    check_checksums_cover(bundle, sums, manifest.targets, loaded=None)
    for triple, library in manifest.targets.items():
        read_verified(
            bundle,
            library.file,
            library.sha256,
            recorded_in=MANIFEST_NAME,
            limit=MAX_LIBRARY_BYTES,
            key=f"targets.{triple}.file",
        )
    return manifest
