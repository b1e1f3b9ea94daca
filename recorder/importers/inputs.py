"""Input files: plain, gzip or zip (one CSV inside), their `.CHECKSUM` sidecars, and streams
for pyarrow's CSV reader that report how many raw bytes have been consumed."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from recorder.importers.errors import ChecksumError, ImportInputError

__all__ = ["InputFile", "RawStream", "read_errors"]

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_CHECKSUM_RE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(.+?)\s*$")
# What reading or decompressing a damaged input raises; translated into one-line errors.
read_errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, zipfile.BadZipFile,
                                                pa.ArrowException, UnicodeDecodeError)


class RawStream:
    """A decompressed byte stream for pyarrow plus the raw (compressed) bytes consumed so far."""

    def __init__(self, stream: Any, position: Any, closers: list[Any]) -> None:
        self.stream = stream
        self._position = position
        self._closers = closers

    def raw_position(self) -> int:
        with contextlib.suppress(*read_errors, ValueError):
            return int(self._position())
        return 0

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(*read_errors, ValueError):
                closer.close()


@dataclass(frozen=True)
class InputFile:
    """One input; `kind` comes from the file's first bytes, not its name."""

    path: Path
    rank: int  # position in path order: ties between files keep this order
    kind: str  # "plain" | "gzip" | "zip"
    size: int
    member: str | None = None  # the CSV inside a zip

    @classmethod
    def inspect(cls, path: Path, rank: int) -> InputFile:
        try:
            if not path.exists():
                raise ImportInputError(f"{path}: no such file")
            if not path.is_file():
                raise ImportInputError(f"{path}: not a file")
            with open(path, "rb") as fh:
                magic = fh.read(4)
            size = path.stat().st_size
            if magic.startswith(_GZIP_MAGIC):
                return cls(path, rank, "gzip", size)
            if magic == _ZIP_MAGIC:
                with zipfile.ZipFile(path) as zf:
                    members = [i.filename for i in zf.infolist() if not i.is_dir()]
                if len(members) != 1:
                    raise ImportInputError(f"{path}: a zip to import holds exactly one CSV; this "
                                           f"one holds {len(members)} files")
                return cls(path, rank, "zip", size, members[0])
            return cls(path, rank, "plain", size)
        except PermissionError as exc:
            raise ImportInputError(f"{path}: permission denied") from exc
        except read_errors as exc:
            raise ImportInputError(f"{path}: cannot read: {exc}") from exc

    @property
    def name(self) -> str:
        """The name a dump's symbol is read from: the zip's member, else the file's."""
        return Path(self.member).name if self.member else self.path.name

    def verify_checksum(self) -> bool:
        """Check `<file>.CHECKSUM` (sha256sum format: `<hex>  <name>`) when it exists; True if
        one was checked. A mismatch refuses the file."""
        sidecar = self.path.with_name(self.path.name + ".CHECKSUM")
        if not sidecar.is_file():
            return False
        try:
            text = sidecar.read_text(errors="replace").strip()
            match = _CHECKSUM_RE.match(text.splitlines()[0] if text else "")
            if match is None:
                raise ChecksumError(f"{sidecar}: not a sha256sum line ('<64 hex digits>  <name>')")
            if Path(match.group(2)).name != self.path.name:
                raise ChecksumError(f"{sidecar}: names {match.group(2)!r}, not {self.path.name!r}")
            digest = hashlib.sha256()
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        except read_errors as exc:
            raise ImportInputError(f"{sidecar}: cannot read: {exc}") from exc
        if digest.hexdigest() != match.group(1).lower():
            raise ChecksumError(f"{self.path}: sha256 {digest.hexdigest()} does not match "
                                f"{sidecar.name} ({match.group(1).lower()}); the file is damaged "
                                "or incomplete: download it again")
        return True

    # -- streams ---------------------------------------------------------------------------
    def open_stream(self) -> RawStream:
        """The decompressed content for pyarrow (native streams for plain and gzip files)."""
        try:
            if self.kind == "zip":
                zf = zipfile.ZipFile(self.path)
                assert self.member is not None
                member = zf.open(self.member)
                fp = zf.fp
                return RawStream(member, lambda: fp.tell() if fp else self.size, [zf, member])
            raw = pa.OSFile(str(self.path))
            if self.kind == "gzip":
                return RawStream(pa.CompressedInputStream(raw, "gzip"), raw.tell, [raw])
            return RawStream(raw, raw.tell, [raw])
        except read_errors as exc:
            raise ImportInputError(f"{self.path}: cannot read: {exc}") from exc

    @contextlib.contextmanager
    def _python_stream(self) -> Iterator[Any]:
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as zf:
                assert self.member is not None
                with zf.open(self.member) as fh:
                    yield fh
        elif self.kind == "gzip":
            with gzip.open(self.path, "rb") as fh:
                yield fh
        else:
            with open(self.path, "rb") as fh:
                yield fh

    def head(self, nbytes: int = 1 << 16) -> bytes:
        """The first bytes of the decompressed content (for recognising the format)."""
        try:
            with self._python_stream() as fh:
                return bytes(fh.read(nbytes))
        except read_errors as exc:
            raise ImportInputError(f"{self.path}: cannot read: {exc}") from exc

    def lines_from(self, first: int) -> Iterator[tuple[int, bytes]]:
        """(line number, line without its end) from line `first` (1-based) on; for locating a
        malformed row after pyarrow refused a block."""
        try:
            with self._python_stream() as fh:
                for number, line in enumerate(fh, start=1):
                    if number >= first:
                        yield number, line.rstrip(b"\r\n")
        except read_errors as exc:
            raise ImportInputError(f"{self.path}: cannot read: {exc}") from exc
