"""sha256 checks of bundle files, in the format ``sha256sum -c`` reads."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from .exceptions import IntegrityError, ManifestError

__all__ = ["CHECKSUMS_NAME", "format_checksums", "read_checksums", "sha256_file", "verify_file"]

CHECKSUMS_NAME = "SHA256SUMS"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def format_checksums(digests: Mapping[str, str]) -> str:
    """Lines of ``<sha256>  <relative path>``, sorted by path."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items()))


def read_checksums(bundle_dir: str | Path) -> dict[str, str]:
    path = Path(bundle_dir) / CHECKSUMS_NAME
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise ManifestError(f"{path}: missing; every bundle seals its manifest with it") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable: {exc}") from exc
    digests = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ManifestError(f"{path}:{number}: expected '<sha256>  <file>', found {line!r}")
        digests[name] = digest.lower()
    return digests


def verify_file(bundle_dir: str | Path, relative: str, expected: str, *, recorded_in: str) -> None:
    """Raise IntegrityError naming the file unless its sha256 is ``expected``."""
    path = Path(bundle_dir) / relative
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: missing (listed in {recorded_in})") from None
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 is {actual}, but {recorded_in} records {expected}; "
            "the file was changed after the bundle was built"
        )
